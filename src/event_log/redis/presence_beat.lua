-- A node's presence heartbeat, with the changes to its subscriptions since the last one, and
-- the claim of dead nodes' subscriptions. KEYS[1]: the nodes (a sorted set, scored by the time,
-- in Redis's clock, until which each is alive). ARGV: the prefix of the per-node hashes, this
-- node, the time to live (ms), `1` to empty this node's hash first (it is rewritten whole),
-- `1` to claim dead nodes (`0`: the node's last beat, as it shuts down), then the changes:
-- `s FIELD JSON` (set) or `d FIELD` (delete).
-- Returns {1 if this node was not in the set (new, or claimed as dead meanwhile), the claimed
-- subscriptions' JSON}. A dead node is removed from the set by exactly one caller (ZREM), who
-- alone gets its subscriptions.
local nodes = KEYS[1]
local prefix, node, ttl, reset, claim = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local added = redis.call('ZADD', nodes, now + ttl, node)
local own = prefix .. node
if reset == '1' then
  redis.call('DEL', own)
end
local i = 6
while i <= #ARGV do
  if ARGV[i] == 's' then
    redis.call('HSET', own, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  else
    redis.call('HDEL', own, ARGV[i + 1])
    i = i + 2
  end
end
-- A safety net: the hash of a node nobody claims (every node gone) does not stay forever.
redis.call('PEXPIRE', own, ttl * 4)
local claimed = {}
if claim ~= '1' then
  return {added, claimed}
end
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now, 'LIMIT', 0, 16)
for _, other in ipairs(dead) do
  if other ~= node and redis.call('ZREM', nodes, other) == 1 then
    local key = prefix .. other
    for _, subscription in ipairs(redis.call('HVALS', key)) do
      claimed[#claimed + 1] = subscription
    end
    redis.call('DEL', key)
  end
end
return {added, claimed}
