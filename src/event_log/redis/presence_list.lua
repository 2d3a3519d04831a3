-- The subscriptions of every live node but one. KEYS[1]: the nodes (see presence_beat.lua).
-- ARGV: the prefix of the per-node hashes, the node to leave out (the caller, who knows its
-- own). Returns their JSON. A node past its time to live is left out, claimed or not.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local found = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if node ~= ARGV[2] then
    for _, subscription in ipairs(redis.call('HVALS', ARGV[1] .. node)) do
      found[#found + 1] = subscription
    end
  end
end
return found
