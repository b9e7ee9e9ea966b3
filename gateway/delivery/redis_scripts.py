"""The Redis store's Lua scripts (`gateway.delivery.redis_store` has the key layout).

Every queue mutation is one script, hence atomic across processes. The queue's scripts
get the key prefix as ARGV[1] and build their keys from it; times come in as arguments
(never Redis TIME), so the injected clock drives expiry.
"""

from __future__ import annotations

_PUSH = """
local function push(base, id, th, payload, now)
  redis.call('HSET', base .. 'j:' .. id, 't', th, 'p', payload, 'e', now)
  redis.call('DEL', base .. 'a:' .. id)
  if redis.call('RPUSH', base .. 't:' .. th, id) == 1 then
    redis.call('ZADD', base .. 'ready', 'NX', now, th)
  end
  redis.call('INCR', base .. 'n')
end
"""

# ARGV: base, now, dedupe expiry, dedupe px, then (id, thread, payload, has_key, key)*
ENQUEUE = (
    _PUSH
    + """
local base, now, expires, px = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 5, #ARGV, 5 do
  local ok = 1
  if ARGV[i + 3] == '1' then
    local dk = base .. 'd:' .. ARGV[i + 4]
    local seen = redis.call('GET', dk)
    if seen and tonumber(seen) > tonumber(now) then
      ok = 0
    else
      redis.call('SET', dk, expires, 'PX', px)
    end
  end
  if ok == 1 then push(base, ARGV[i], ARGV[i + 1], ARGV[i + 2], now) end
  out[#out + 1] = ok
end
return out
"""
)

# ARGV: base, now, owner, limit, lease end
CLAIM = """
local base, now, owner, limit, lease_end = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rk = base .. 'ready'
local out = {}
for _, th in ipairs(redis.call('ZRANGEBYSCORE', rk, '-inf', now, 'LIMIT', 0, limit)) do
  local id = redis.call('LINDEX', base .. 't:' .. th, 0)
  if id then
    local jk = base .. 'j:' .. id
    redis.call('ZADD', rk, lease_end, th)
    redis.call('HSET', jk, 'o', owner)
    local j = redis.call('HMGET', jk, 'p', 'e')
    out[#out + 1] = {id, th, j[1] or '', j[2] or now, redis.call('LLEN', base .. 'a:' .. id)}
  else
    redis.call('ZREM', rk, th)
  end
end
return out
"""

# ARGV: base, id, thread, owner, now, mode (complete|retry|dead), not_before|reason, attempt
# Returns 0: not the lease holder; 1: done; 2: done and the thread has a next job.
FINISH = """
local base, id, th, owner, now, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local jk, ak, tk, rk = base .. 'j:' .. id, base .. 'a:' .. id, base .. 't:' .. th, base .. 'ready'
if redis.call('HGET', jk, 'o') ~= owner or redis.call('LINDEX', tk, 0) ~= id then
  return 0
end
if mode == 'retry' then
  redis.call('RPUSH', ak, ARGV[8])
  redis.call('HDEL', jk, 'o')
  redis.call('ZADD', rk, ARGV[7], th)
  return 1
end
if mode == 'dead' then
  redis.call('RPUSH', ak, ARGV[8])
  local records = redis.call('LRANGE', ak, 0, -1)
  local seq = redis.call('INCR', base .. 'xs')
  redis.call('HSET', base .. 'x:' .. id, 't', th, 'p', redis.call('HGET', jk, 'p'),
             'r', ARGV[7], 'a', '[' .. table.concat(records, ',') .. ']', 'f', now)
  redis.call('ZADD', base .. 'xi', seq, id)
end
redis.call('LPOP', tk)
redis.call('DEL', jk, ak)
redis.call('DECR', base .. 'n')
if redis.call('LLEN', tk) > 0 then
  redis.call('ZADD', rk, now, th)
  return 2
end
redis.call('ZREM', rk, th)
return 1
"""

# ARGV: base, id, now
REPLAY = (
    _PUSH
    + """
local base, id = ARGV[1], ARGV[2]
local xk = base .. 'x:' .. id
local d = redis.call('HMGET', xk, 't', 'p')
if not d[1] then return 0 end
redis.call('DEL', xk)
redis.call('ZREM', base .. 'xi', id)
push(base, id, d[1], d[2], ARGV[3])
return 1
"""
)

# ARGV: base, id
DROP = """
if redis.call('DEL', ARGV[1] .. 'x:' .. ARGV[2]) == 0 then return 0 end
redis.call('ZREM', ARGV[1] .. 'xi', ARGV[2])
return 1
"""

# Set "<expiry>\n<value>" unless a live value exists. ARGV: key, record, now, px ('' = none)
ADD = """
local v = redis.call('GET', ARGV[1])
if v then
  local exp = string.sub(v, 1, string.find(v, '\\n', 1, true) - 1)
  if exp == '-' or tonumber(exp) > tonumber(ARGV[3]) then return 0 end
end
if ARGV[4] == '' then redis.call('SET', ARGV[1], ARGV[2])
else redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[4]) end
return 1
"""

# Delete if the value after the expiry header equals ARGV[2].
DEL_IF = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, string.find(v, '\\n', 1, true) + 1) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
