"""The Lua scripts of the Redis transport, on Dramatiq's key layout (see dramatiq's
``brokers/redis/dispatch.lua``) plus three keys of jobkit's own per queue:

- ``NS:Q`` (list of ids) and ``NS:Q.msgs`` (id -> message): the queue, as Dramatiq has it;
- ``NS:__acks__.WORKER.Q`` (set) and ``NS:__heartbeats__`` (zset): fetched-not-acked ids of
  each worker, and when each worker last showed a sign of life, as Dramatiq has them;
- ``NS:Q.DQ`` / ``NS:Q.DQ.msgs``: delayed messages, as Dramatiq has them (a plain Dramatiq
  worker can take them too), and ``NS:Q.DQ.due`` (zset id -> eta ms), jobkit's index of them;
- ``NS:Q.XQ`` (zset id -> when) / ``NS:Q.XQ.msgs``: dead letters, as Dramatiq has them, with
  ``NS:Q.XQ.why`` (id -> JSON {reason, deliveries}), jobkit's reasons;
- ``NS:Q.counts`` (id -> deliveries): jobkit's delivery count of each live message;
- ``NS:Q.bell`` (a stream of at most about 16 entries): jobkit's doorbell, rung (XADD) when a
  push makes the queue non-empty; an idle worker blocks on it (XREAD) instead of polling.

Each script is one atomic step: a message is always on exactly one of queue, some worker's ack
set, the delay index or the dead-letter set.
"""

# ARGV: namespace, now ms, worker, heartbeat ms, maintain (0/1), max, queue...
# Returns a flat list: queue, id, data, deliveries, ... Dead workers' (no heartbeat for
# `heartbeat` ms) unacked messages go back to the head of their queue first, then due delayed
# messages are moved onto their queue, then up to `max` messages are taken, oldest first; the
# doorbell rings if some of the messages moved in are left.
FETCH = """
local ns, now, worker = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local hb, maintain, max = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local heartbeats = ns .. ":__heartbeats__"
redis.call("zadd", heartbeats, now, worker)
local out = {}
local taken = 0
for qi = 7, #ARGV do
  local q = ARGV[qi]
  local qkey = ns .. ":" .. q
  local msgs = qkey .. ".msgs"
  local acks = ns .. ":__acks__." .. worker .. "." .. q
  local moved = 0
  if maintain == "1" then
    local dead = redis.call("zrangebyscore", heartbeats, 0, now - hb)
    for _, w in ipairs(dead) do
      local wacks = ns .. ":__acks__." .. w .. "." .. q
      local ids = redis.call("smembers", wacks)
      for _, id in ipairs(ids) do
        if redis.call("hexists", msgs, id) == 1 then
          redis.call("lpush", qkey, id)
          moved = moved + 1
        end
      end
      redis.call("del", wacks)
      if next(redis.call("keys", ns .. ":__acks__." .. w .. ".*")) == nil then
        redis.call("zrem", heartbeats, w)
      end
    end
  end
  local due = qkey .. ".DQ.due"
  local ready = redis.call("zrangebyscore", due, 0, now, "LIMIT", 0, 100)
  for _, id in ipairs(ready) do
    redis.call("zrem", due, id)
    local data = redis.call("hget", qkey .. ".DQ.msgs", id)
    if data then
      redis.call("hdel", qkey .. ".DQ.msgs", id)
      redis.call("lrem", qkey .. ".DQ", 1, id)
      redis.call("hset", msgs, id, data)
      redis.call("rpush", qkey, id)
      moved = moved + 1
    end
  end
  while taken < max do
    local id = redis.call("lpop", qkey)
    if not id then break end
    local data = redis.call("hget", msgs, id)
    if data then
      redis.call("sadd", acks, id)
      local n = redis.call("hincrby", qkey .. ".counts", id, 1)
      table.insert(out, q)
      table.insert(out, id)
      table.insert(out, data)
      table.insert(out, n)
      taken = taken + 1
    end
  end
  if moved > 0 and redis.call("llen", qkey) > 0 then
    -- requeued or due messages this worker leaves: wake the workers waiting on the doorbell
    redis.call("xadd", qkey .. ".bell", "MAXLEN", "~", 16, "*", "r", "1")
  end
end
return out
"""

RING = """
-- The doorbell of queue key `qkey`, rung when a push left `n` ids on it (1: it was empty, so a
-- worker may be waiting; a longer queue has no waiter that did not see it non-empty).
local function ring(qkey, n)
  if n == 1 then
    redis.call("xadd", qkey .. ".bell", "MAXLEN", "~", 16, "*", "r", "1")
  end
end
"""

# ARGV: namespace, then (queue, id, data, eta ms or 0) quadruples. One command for a batch
# (Dramatiq's own enqueue is one script call per message too), all or nothing.
ENQUEUE = (
    RING
    + """
local ns = ARGV[1]
for i = 2, #ARGV, 4 do
  local qkey = ns .. ":" .. ARGV[i]
  local id, data, eta = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if eta == 0 then
    redis.call("hset", qkey .. ".msgs", id, data)
    ring(qkey, redis.call("rpush", qkey, id))
  else
    redis.call("hset", qkey .. ".DQ.msgs", id, data)
    redis.call("rpush", qkey .. ".DQ", id)
    redis.call("zadd", qkey .. ".DQ.due", eta, id)
  end
end
return 1
"""
)

# ARGV: namespace, then (worker, queue, id) triples. Stale receipts (not in that worker's ack
# set any more: requeued after it was taken for dead) change nothing.
ACK = """
local ns = ARGV[1]
local done = 0
for i = 2, #ARGV, 3 do
  local worker, q, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local qkey = ns .. ":" .. q
  if redis.call("srem", ns .. ":__acks__." .. worker .. "." .. q, id) > 0 then
    redis.call("hdel", qkey .. ".msgs", id)
    redis.call("hdel", qkey .. ".counts", id)
    done = done + 1
  end
end
return done
"""

# ARGV: namespace, worker, queue, id, eta ms (0: now), uncount (0/1), data for the delay queue.
RELEASE = (
    RING
    + """
local ns, worker, q, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local eta, uncount, data = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local qkey = ns .. ":" .. q
if redis.call("srem", ns .. ":__acks__." .. worker .. "." .. q, id) == 0 then return 0 end
if uncount == "1" then redis.call("hincrby", qkey .. ".counts", id, -1) end
if eta == 0 then
  ring(qkey, redis.call("lpush", qkey, id))
else
  redis.call("hdel", qkey .. ".msgs", id)
  redis.call("hset", qkey .. ".DQ.msgs", id, data)
  redis.call("rpush", qkey .. ".DQ", id)
  redis.call("zadd", qkey .. ".DQ.due", eta, id)
end
return 1
"""
)

# ARGV: namespace, worker, queue, id, now ms, why (JSON).
DEAD_LETTER = """
local ns, worker, q, id, now, why = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local qkey = ns .. ":" .. q
if redis.call("srem", ns .. ":__acks__." .. worker .. "." .. q, id) == 0 then return 0 end
local data = redis.call("hget", qkey .. ".msgs", id)
if data then
  -- a fraction of a ms from a counter keeps dead letters of one ms in their order
  local seq = redis.call("incr", ns .. ":__jobkit_xq_seq__") % 1000
  redis.call("zadd", qkey .. ".XQ", now + seq / 1000, id)
  redis.call("hset", qkey .. ".XQ.msgs", id, data)
  redis.call("hset", qkey .. ".XQ.why", id, why)
  redis.call("hdel", qkey .. ".msgs", id)
end
redis.call("hdel", qkey .. ".counts", id)
return 1
"""

# ARGV: namespace, queue, id, data. A dead letter back onto its queue (attempts reset in data).
REPLAY = (
    RING
    + """
local ns, q, id, data = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local qkey = ns .. ":" .. q
if redis.call("zrem", qkey .. ".XQ", id) == 0 then return 0 end
redis.call("hdel", qkey .. ".XQ.msgs", id)
redis.call("hdel", qkey .. ".XQ.why", id)
redis.call("hset", qkey .. ".msgs", id, data)
ring(qkey, redis.call("rpush", qkey, id))
return 1
"""
)

# ARGV: namespace, queue. Deletes every dead letter; returns how many.
PURGE = """
local qkey = ARGV[1] .. ":" .. ARGV[2]
local n = redis.call("zcard", qkey .. ".XQ")
redis.call("del", qkey .. ".XQ", qkey .. ".XQ.msgs", qkey .. ".XQ.why")
return n
"""
