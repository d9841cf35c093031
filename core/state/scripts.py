"""The Lua scripts that make each shared-state update atomic inside Redis.

Every script reads the time from the server (``TIME``), so replicas with skewed clocks still
agree. Numbers go back as strings: Redis truncates a Lua number in a reply to an integer.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADMIT",
    "ADMIT_CALL",
    "BREAKER_ALLOW",
    "BREAKER_RECORD",
    "BREAKER_STATE",
    "FINISH_CALL",
    "REFUND",
    "RENEW",
    "TAKE",
    "UNADMIT",
]

_NOW: Final = """
redis.replicate_commands()
local _t = redis.call('TIME')
local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
"""

_BUCKET_NOW: Final = """
-- A token bucket's tokens and timestamp at ``now``: a missing bucket is full, and tokens
-- accrue at ``rate`` per second up to ``burst``. TAKE and ADMIT_CALL both take from buckets.
local function bucket_now(key, rate, burst)
  local v = redis.call('HMGET', key, 'tk', 'ts')
  local tokens = tonumber(v[1])
  local ts = tonumber(v[2])
  if tokens == nil or ts == nil then
    return burst, now
  end
  if now > ts then
    return math.min(burst, tokens + (now - ts) * rate), now
  end
  return tokens, ts
end
"""

TAKE: Final = (
    _NOW
    + _BUCKET_NOW
    + """
-- Token buckets, all or nothing: KEYS[i] is a bucket, ARGV[2i-1] its rate, ARGV[2i] its burst.
-- Returns {0, "0"} when every bucket gave a token, else {i, seconds until bucket i has one}.
local held = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens, ts = bucket_now(KEYS[i], rate, burst)
  if tokens < 1 then
    return {i, tostring((1 - tokens) / rate)}
  end
  held[i] = {tokens - 1, ts, rate, burst}
end
for i = 1, #KEYS do
  local h = held[i]
  redis.call('HSET', KEYS[i], 'tk', tostring(h[1]), 'ts', tostring(h[2]))
  -- A bucket that has refilled completely is the same as a new one: let it go.
  redis.call('PEXPIRE', KEYS[i], math.ceil(h[4] / h[3] * 1000) + 1000)
end
return {0, "0"}
"""
)

REFUND: Final = (
    _NOW
    + """
-- Give one token back to each bucket (a later check refused the call).
for i = 1, #KEYS do
  local burst = tonumber(ARGV[2 * i])
  local tokens = tonumber(redis.call('HGET', KEYS[i], 'tk'))
  if tokens ~= nil then
    redis.call('HSET', KEYS[i], 'tk', tostring(math.min(burst, tokens + 1)))
  end
end
return 0
"""
)

ADMIT: Final = (
    _NOW
    + """
-- KEYS[1]: the tenant's daily counter (hash day, n); KEYS[2]: its leases (zset id -> expiry).
-- ARGV: per_day (-1: none), max_concurrent (-1: none), lease id, lease ttl seconds.
-- Returns {0, "0", n} admitted, {1, seconds to UTC midnight, n} day used up,
-- {2, "1", running} all slots taken.
local per_day = tonumber(ARGV[1])
local maxc = tonumber(ARGV[2])
local ttl = tonumber(ARGV[4])
local today = math.floor(now / 86400)
local n = 0
if per_day >= 0 then
  local d = redis.call('HMGET', KEYS[1], 'day', 'n')
  if tonumber(d[1]) == today then n = tonumber(d[2]) or 0 end
  if n >= per_day then
    return {1, tostring((today + 1) * 86400 - now), n}
  end
end
if maxc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local running = redis.call('ZCARD', KEYS[2])
  if running >= maxc then
    return {2, "1", running}
  end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000) + 1000)
end
if per_day >= 0 then
  redis.call('HSET', KEYS[1], 'day', today, 'n', n + 1)
  redis.call('EXPIREAT', KEYS[1], (today + 1) * 86400 + 3600)
end
return {0, "0", n + 1}
"""
)

UNADMIT: Final = (
    _NOW
    + """
-- An admitted call did not run: uncount it for today (ARGV[2] == "1") and free its lease.
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == "1" then
  local today = math.floor(now / 86400)
  local d = redis.call('HMGET', KEYS[1], 'day', 'n')
  if tonumber(d[1]) == today and (tonumber(d[2]) or 0) > 0 then
    redis.call('HINCRBY', KEYS[1], 'n', -1)
  end
end
return 0
"""
)

RENEW: Final = (
    _NOW
    + """
-- Push back the expiry of leases this replica still holds: KEYS[i] zset, ARGV[i] lease id;
-- ARGV[#KEYS + 1] the ttl. A lease that already expired is not brought back.
local ttl = tonumber(ARGV[#KEYS + 1])
local kept = 0
for i = 1, #KEYS do
  kept = kept + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ttl, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000) + 1000)
end
return kept
"""
)

BREAKER_ALLOW: Final = (
    _NOW
    + """
-- KEYS[1]: hash opened (time), probe (expiry of the outstanding half-open probe).
-- ARGV: cooldown seconds, probe ttl seconds.
-- Returns {1, "0"} closed, {2, "0"} you are the single probe, {0, wait} refused.
local cooldown = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'opened', 'probe')
local opened = tonumber(h[1])
if opened == nil then return {1, "0"} end
if now - opened < cooldown then return {0, tostring(cooldown - (now - opened))} end
local probe = tonumber(h[2])
if probe ~= nil and probe > now then return {0, "0"} end
redis.call('HSET', KEYS[1], 'probe', tostring(now + tonumber(ARGV[2])))
return {2, "0"}
"""
)

_BREAKER_VERDICT: Final = """
-- A breaker's verdict on one call, shared by BREAKER_RECORD and FINISH_CALL.
-- hkey: the breaker hash; zkey: its failure times (zset); what: "ok" | "fail" | "release";
-- window seconds (-1: consecutive failures); member: this call's zset member.
local function breaker_verdict(hkey, zkey, what, threshold, window, member)
  if what == 'release' then
    redis.call('HDEL', hkey, 'probe')
    return 'released'
  end
  local h = redis.call('HMGET', hkey, 'opened', 'probe')
  local opened = tonumber(h[1])
  local probe_out = tonumber(h[2]) ~= nil
  if what == 'ok' then
    if window < 0 or opened ~= nil then
      redis.call('DEL', zkey)
      redis.call('HDEL', hkey, 'n')
    end
    if opened ~= nil or probe_out then redis.call('HDEL', hkey, 'opened', 'probe') end
    return 'closed'
  end
  if opened ~= nil and not probe_out then return 'straggler' end
  local count
  if probe_out then
    count = threshold
  elseif window < 0 then
    count = redis.call('HINCRBY', hkey, 'n', 1)
  else
    redis.call('ZADD', zkey, now, member)
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now - window)
    redis.call('PEXPIRE', zkey, math.ceil(window * 1000) + 1000)
    count = redis.call('ZCARD', zkey)
  end
  if count >= threshold then
    redis.call('HSET', hkey, 'opened', tostring(now))
    redis.call('HDEL', hkey, 'probe', 'n')
    redis.call('DEL', zkey)
    return 'open'
  end
  return 'counted'
end
"""

BREAKER_RECORD: Final = (
    _NOW
    + _BREAKER_VERDICT
    + """
-- KEYS[1]: the breaker hash; KEYS[2]: its failure times (zset).
-- ARGV: "ok" | "fail" | "release", threshold, window seconds (-1: consecutive), member.
return breaker_verdict(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
"""
)

BREAKER_STATE: Final = (
    _NOW
    + """
-- KEYS[i]: breaker hashes; ARGV[1]: cooldown. Returns each state and the wait.
local cooldown = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local opened = tonumber(redis.call('HGET', KEYS[i], 'opened'))
  if opened == nil then
    out[i] = 'closed'
  elseif now - opened >= cooldown then
    out[i] = 'half_open'
  else
    out[i] = 'open'
  end
end
return out
"""
)

ADMIT_CALL: Final = (
    _NOW
    + _BUCKET_NOW
    + """
-- One call's whole admission in one round trip, all or nothing: token buckets, then the
-- tenant's daily count and concurrency lease, then the skill's breaker. Nothing is written
-- unless every check passes, so a refusal needs no undo.
-- KEYS: nb bucket keys, then day, leases, breaker.
-- ARGV: nb, rate/burst pairs, per_day, maxc, lease, ttl, breaker_on, cooldown, probe_ttl.
local nb = tonumber(ARGV[1])
local a = 2 + 2 * nb
local per_day = tonumber(ARGV[a])
local maxc = tonumber(ARGV[a + 1])
local lease = ARGV[a + 2]
local ttl = tonumber(ARGV[a + 3])
local breaker_on = ARGV[a + 4] == "1"
local cooldown = tonumber(ARGV[a + 5])
local probe_ttl = tonumber(ARGV[a + 6])
local day_key, lease_key, breaker_key = KEYS[nb + 1], KEYS[nb + 2], KEYS[nb + 3]
local held = {}
for i = 1, nb do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tokens, ts = bucket_now(KEYS[i], rate, burst)
  if tokens < 1 then return {1, i, tostring((1 - tokens) / rate), 0} end
  held[i] = {tokens - 1, ts, rate, burst}
end
local today = math.floor(now / 86400)
local n = 0
if per_day >= 0 then
  local d = redis.call('HMGET', day_key, 'day', 'n')
  if tonumber(d[1]) == today then n = tonumber(d[2]) or 0 end
  if n >= per_day then return {2, 1, tostring((today + 1) * 86400 - now), n} end
end
if maxc >= 0 then
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  local running = redis.call('ZCARD', lease_key)
  if running >= maxc then return {2, 2, "1", running} end
end
local probe = false
if breaker_on then
  local h = redis.call('HMGET', breaker_key, 'opened', 'probe')
  local opened = tonumber(h[1])
  if opened ~= nil then
    if now - opened < cooldown then return {3, 0, tostring(cooldown - (now - opened)), 0} end
    local p = tonumber(h[2])
    if p ~= nil and p > now then return {3, 0, "0", 0} end
    probe = true
  end
end
for i = 1, nb do
  local h = held[i]
  redis.call('HSET', KEYS[i], 'tk', tostring(h[1]), 'ts', tostring(h[2]))
  redis.call('PEXPIRE', KEYS[i], math.ceil(h[4] / h[3] * 1000) + 1000)
end
if maxc >= 0 then
  redis.call('ZADD', lease_key, now + ttl, lease)
  redis.call('PEXPIRE', lease_key, math.ceil(ttl * 1000) + 1000)
end
if per_day >= 0 then
  redis.call('HSET', day_key, 'day', today, 'n', n + 1)
  redis.call('EXPIREAT', day_key, (today + 1) * 86400 + 3600)
end
if probe then
  redis.call('HSET', breaker_key, 'probe', tostring(now + probe_ttl))
  return {0, 2, "0", n + 1}
end
return {0, 1, "0", n + 1}
"""
)

FINISH_CALL: Final = (
    _NOW
    + _BREAKER_VERDICT
    + """
-- One call's end in one round trip: free its lease (ARGV[1], "" for none) and give the
-- breaker its verdict (ARGV[2]: "ok", "fail", "release" the probe, or "none"), as
-- BREAKER_RECORD does.
-- KEYS: leases, breaker, failures. ARGV: lease, what, threshold, window, member.
if ARGV[1] ~= "" then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] == "none" then return 'none' end
return breaker_verdict(KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
"""
)
