#!lua name=nxc
-- Server-side functions of the nxc sync service (Redis 7 functions).
-- Loaded by nxc when it starts a deployment's service; the wire protocol that
-- uses them is written down in docs/sync.md.
--
-- Everything is built on one structure, a *log*: an append-only list of values
-- (key L), the server time of each append in microseconds (key T), and the
-- clients waiting for a position that is not there yet (sorted set W, member =
-- the client's wake-up queue, score = the 1-based position it waits for).
-- States (signal/barrier), topics (publish/subscribe) and discovery tags are
-- logs under different key prefixes.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- nxc_append KEYS: L T W  ARGV: value
-- Append value; return its position n (1 for the first). Every client waiting
-- for a position <= n gets the value at its position pushed on its queue.
local function append(keys, args)
  local n = redis.call('RPUSH', keys[1], args[1])
  redis.call('RPUSH', keys[2], now_us())
  local due = redis.call('ZRANGEBYSCORE', keys[3], '-inf', n, 'WITHSCORES')
  for i = 1, #due, 2 do
    local queue, want = due[i], tonumber(due[i + 1])
    local value = args[1]
    if want ~= n then value = redis.call('LINDEX', keys[1], want - 1) end
    redis.call('RPUSH', queue, value)
    redis.call('EXPIRE', queue, 3600)
  end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', keys[3], '-inf', n) end
  return n
end

-- nxc_wait KEYS: L W Q  ARGV: k max
-- If the log holds at least k values: return {n, value_k, ...} with at most max
-- values (n = the log's length). Otherwise register Q as waiting for position k
-- and return {n}: the value at position k will be pushed on Q (read it with
-- BLPOP Q timeout).
local function wait(keys, args)
  local k, max = tonumber(args[1]), tonumber(args[2])
  if k == nil or k < 1 or max == nil or max < 0 then
    return redis.error_reply('ERR nxc_wait: k must be >= 1 and max >= 0')
  end
  local n = redis.call('LLEN', keys[1])
  if n >= k then
    local out = { n }
    if max > 0 then
      local values = redis.call('LRANGE', keys[1], k - 1, k + max - 2)
      for _, v in ipairs(values) do out[#out + 1] = v end
    end
    return out
  end
  redis.call('ZADD', keys[2], k, keys[3])
  return { n }
end

redis.register_function('nxc_append', append)
redis.register_function('nxc_wait', wait)
