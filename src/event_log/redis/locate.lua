local entry = redis.call('HGET', KEYS[2], ARGV[1])
if entry then return entry end
if string.match(ARGV[1], '^%d+%-%d+$') then
  local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
  if #found > 0 then return ARGV[1] end
end
return false
