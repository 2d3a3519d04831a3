local function before(a, b)
  local am, as = string.match(a, '^(%d+)%-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)%-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local last = redis.call('HGET', KEYS[2], 'last') or ''
local out = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local taken = id ~= '' and redis.call('HEXISTS', KEYS[3], id) == 1
  if taken and ARGV[i + 1] ~= 'r' then
    out[#out + 1] = ''
  else
    last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'e', epoch, 'p', last, 'i', id, 'd', ARGV[i + 2])
    if id ~= '' and not taken then
      redis.call('HSET', KEYS[3], id, last)
      redis.call('RPUSH', KEYS[4], id)
    end
    out[#out + 1] = last
  end
end
redis.call('HSET', KEYS[2], 'last', last)
if redis.call('LLEN', KEYS[4]) > 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local oldest = first and first[1] or last
  while true do
    local id = redis.call('LINDEX', KEYS[4], 0)
    if not id then break end
    local entry = redis.call('HGET', KEYS[3], id)
    if entry and not before(entry, oldest) then break end
    redis.call('LPOP', KEYS[4])
    if entry then redis.call('HDEL', KEYS[3], id) end
  end
end
return out
