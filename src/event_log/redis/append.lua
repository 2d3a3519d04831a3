-- Appends events to the log; see the module documentation of redis/mod.rs for the layout.
-- KEYS: log, meta, ids, idq, idn, idl. ARGV: max length, an epoch for an empty log, then per
-- event its publisher id (or empty), `u` if that id must not be taken or `r` if it may repeat,
-- and its JSON. Returns per event its entry id, or an empty string if its id is taken.
--
-- A publisher id stays taken while any copy of it is retained: `ids` names its earliest
-- retained entry, `idn` links each copy's entry to the next copy's, `idl` names its latest
-- copy, and `idq` lists every copy (`<entry> <id>`) in log order, so that the trim below moves
-- an id on to its next retained copy instead of forgetting it.
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
    if id ~= '' then
      if taken then
        local latest = redis.call('HGET', KEYS[6], id) or redis.call('HGET', KEYS[3], id)
        redis.call('HSET', KEYS[5], latest, last)
      else
        redis.call('HSET', KEYS[3], id, last)
      end
      redis.call('HSET', KEYS[6], id, last)
      redis.call('RPUSH', KEYS[4], last .. ' ' .. id)
    end
    out[#out + 1] = last
  end
end
redis.call('HSET', KEYS[2], 'last', last)
if redis.call('LLEN', KEYS[4]) > 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local oldest = first and first[1] or last
  while true do
    local head = redis.call('LINDEX', KEYS[4], 0)
    if not head then break end
    local entry, id = string.match(head, '^(%d+%-%d+) (.*)$')
    if not entry then
      -- Written by a hub before repeated copies were listed: the id alone, at its entry.
      id = head
      entry = redis.call('HGET', KEYS[3], id)
    end
    if entry and not before(entry, oldest) then break end
    redis.call('LPOP', KEYS[4])
    if entry then
      if redis.call('HGET', KEYS[3], id) == entry then
        local following = redis.call('HGET', KEYS[5], entry)
        if following then
          redis.call('HSET', KEYS[3], id, following)
        else
          redis.call('HDEL', KEYS[3], id)
          redis.call('HDEL', KEYS[6], id)
        end
      end
      redis.call('HDEL', KEYS[5], entry)
    end
  end
end
return out
