"""The Lua scripts jobkit's Redis transport runs (each one step, atomic on the server).

``POP`` replaces kombu's BRPOP: it pops from the first non-empty list and, in the same step,
writes the message into kombu's ``unacked`` hash and ``unacked_index`` sorted set exactly as
``QoS.append`` would (``[payload, exchange, routing_key]``, the raw payload bytes spliced in
untouched; score = the time the caller passes). So a message is at every instant in exactly one
of: a queue list, the delayed set, the unacked hash+index; a worker killed at any point cannot
lose it, only leave it for ``restore_visible``.

``MOVE_DUE`` moves due delayed messages onto their lists and rings the queue's doorbell
(`jobkit_celery._names.bell_name`) that an idle worker blocks on. A single message is sent
with a plain LPUSH, and the doorbell rung only when that made the list non-empty
(`_redis_transport._ring_after_push`): a worker blocks on the doorbell only after ``POP``
found every list empty, so the push that made a list non-empty is the one it waits for, and
the pushes after it would wake nobody (a ring costs an XADD on every enqueue otherwise).
"""

from __future__ import annotations

BELL_MAXLEN = 64
"""Approximate length the doorbell streams are capped at (their entries carry nothing)."""

# KEYS: n list keys (queues x priority steps, in BRPOP order), the queues' doorbells,
#       then kombu's unacked hash and unacked index.
# ARGV: n, the time to score the unacked index entry with.
# Returns {1, list key, item, delivery tag} (popped and recorded unacked),
#      or {2, list key, item}: the list's next item is not a kombu message; it is left on the
#         list (the caller moves it to the DLQ in one transaction, so it is never only in memory),
#      or {0, last id of each doorbell (or '0-0')} when every list is empty.
POP = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    local ok, msg = pcall(cjson.decode, item)
    local tag, info
    if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
      tag = msg.properties.delivery_tag
      info = msg.properties.delivery_info
    end
    if type(tag) == 'string' and type(info) == 'table'
        and type(info.exchange) == 'string' and type(info.routing_key) == 'string' then
      redis.call('RPOP', KEYS[i])
      redis.call('HSET', KEYS[#KEYS - 1], tag,
        '[' .. item .. ',' .. cjson.encode(info.exchange) .. ','
          .. cjson.encode(info.routing_key) .. ']')
      redis.call('ZADD', KEYS[#KEYS], ARGV[2], tag)
      return {1, KEYS[i], item, tag}
    end
    return {2, KEYS[i], item}
  end
end
local ids = {0}
for j = n + 1, #KEYS - 2 do
  local last = redis.call('XREVRANGE', KEYS[j], '+', '-', 'COUNT', 1)
  if last[1] then
    ids[#ids + 1] = last[1][1]
  else
    ids[#ids + 1] = '0-0'
  end
end
return ids
"""

# KEYS: the delayed set, the queue's doorbell. ARGV: now, limit, doorbell cap.
MOVE_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(items) do
  local nl = string.find(member, '\\n', 1, true)
  if nl then
    redis.call('LPUSH', string.sub(member, 1, nl - 1), string.sub(member, nl + 1))
  end
  redis.call('ZREM', KEYS[1], member)
end
if #items > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'r', '1')
end
return #items
"""
