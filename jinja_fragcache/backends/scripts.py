"""The Lua scripts :class:`~.redis.RedisBackend` runs on the server.

Each one does in a single round trip what would otherwise take several;
none of them trusts what it reads beyond comparing strings (an entry's
header is split on spaces, as :mod:`jinja_fragcache.entry` writes it).

- :data:`INCR_EXISTING`: ``INCRBY`` that creates nothing.
- :data:`READ_WITH_TTL`: each key's value and ``PTTL``, for the near cache.
- :data:`READ_CLAIMING`: the first trip of a lookup (see
  :class:`~.base.ClaimingRead`): the entries and their counters, the
  missing counters created, and the re-render lock of every entry that
  needs a render claimed.
- :data:`WRITE_RELEASING`: the last trip of a miss: store the entries and
  delete each lock that still holds this request's token.
"""

from __future__ import annotations

import hashlib
import time

# INCRBY that creates nothing: a counter must never reappear at a
# predictable value (see docs/design.md, "Versions and invalidation").
INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], ARGV[1])
    return redis.call('GET', KEYS[1])
end
return false
"""
# (The new value is read back as a string: a Lua number is a double, and a
# counter beyond 2**53, as random versions are, would come back rounded.)

# Each key's value and PTTL in one command: a value kept by the near cache
# must not outlive its server-side expiry, and Redis reports an expiry only
# when it reclaims the key, which can be late (see jinja_fragcache.near).
READ_WITH_TTL = """
local out = {}
for i, key in ipairs(KEYS) do
    out[2 * i - 1] = redis.call('GET', key)
    out[2 * i] = redis.call('PTTL', key)
end
return out
"""

# KEYS: n entry keys, their n lock keys, then m counter keys.
# ARGV: n, claim_cold ('1' or '0'), token, lock expiry (ms), flags ('n':
# read nested counters; 't': report each value's PTTL, else -1), the
# client's clock (Unix seconds), then one new value per counter, used only
# if it is missing.
#
# Replies, flat: per entry its value, PTTL and claim (0: not needed, 1: won,
# 2: held by another); per counter its value (after creation) and PTTL;
# then the key and value of every nested counter read from a header.
#
# An entry needs a render when it is missing, when a counter it recorded
# has another value now (invalid: claimed only with claim_cold, as a cold
# entry is), or when its soft expiry has passed by the client's clock
# (stale: always claimed, so that one request refreshes it while the
# others serve it; the client judges by that clock too).  With 'n',
# counters that headers name besides those in KEYS are read as well (a
# standalone server); without it (a cluster, whose script may touch only
# keys of its own slot) they are not judged here: the client judges every
# entry again, with every counter, and claims what the script did not.
#
# Every entry and counter is read by one MGET: each redis.call costs a few
# microseconds of the server's time (Redis 7.0), TIME as much.
READ_CLAIMING = """
local n = tonumber(ARGV[1])
local claim_cold = ARGV[2] == '1'
local token, lock_px = ARGV[3], ARGV[4]
local nested = string.find(ARGV[5], 'n', 1, true) ~= nil
local ttls = string.find(ARGV[5], 't', 1, true) ~= nil
local now = tonumber(ARGV[6])
local m = #KEYS - 2 * n
local out, current, extra = {}, {}, {}
local function pttl(key)
    if ttls then
        return redis.call('PTTL', key)
    end
    return -1
end
local read = {}
for i = 1, n do
    read[i] = KEYS[i]
end
for j = 1, m do
    read[n + j] = KEYS[2 * n + j]
end
local found = redis.call('MGET', unpack(read))
for j = 1, m do
    local key = KEYS[2 * n + j]
    local value = found[n + j]
    local ttl = -1  -- a counter created here never expires
    if value then
        ttl = pttl(key)
    else
        value = ARGV[6 + j]
        redis.call('SET', key, value)
    end
    current[key] = value
    out[3 * n + 2 * j - 1] = value
    out[3 * n + 2 * j] = ttl
end
for i = 1, n do
    local value = found[i]
    local valid, fresh = false, false
    if value and string.sub(value, 1, 4) == 'FC2 ' then
        local stop = string.find(value, '\\n', 5, true)
        if stop then
            local fields = {}
            for field in string.gmatch(string.sub(value, 5, stop - 1), '[^ ]+') do
                fields[#fields + 1] = field
            end
            valid = #fields >= 3 and #fields % 2 == 1
            for f = 4, #fields - 1, 2 do
                local key, version = fields[f], fields[f + 1]
                local seen = current[key]
                if seen == nil and nested then
                    seen = redis.call('GET', key) or false
                    current[key] = seen
                    extra[#extra + 1] = key
                    extra[#extra + 1] = seen
                end
                if seen ~= nil and seen ~= version then
                    valid = false
                end
            end
            local expiry = tonumber(fields[1])
            fresh = fields[1] == '-' or (expiry ~= nil and now < expiry)
        end
    end
    local claim = 0
    if (valid and not fresh) or (not valid and claim_cold) then
        if redis.call('SET', KEYS[n + i], token, 'NX', 'PX', lock_px) then
            claim = 1
        else
            claim = 2
        end
    end
    out[3 * i - 2] = value
    out[3 * i - 1] = value and pttl(KEYS[i]) or -2  -- missing: no PTTL to ask
    out[3 * i] = claim
end
for _, item in ipairs(extra) do
    out[#out + 1] = item
end
return out
"""

# KEYS: n entry keys, then locks.  ARGV: n, the entries' expiry in ms
# ('' for none), the token, then the n values.  Stores the entries and
# deletes each lock that still holds the token (one that expired and was
# claimed by another request stays theirs).
WRITE_RELEASING = """
local n, px, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
for i = 1, n do
    if px == '' then
        redis.call('SET', KEYS[i], ARGV[3 + i])
    else
        redis.call('SET', KEYS[i], ARGV[3 + i], 'PX', px)
    end
end
for j = n + 1, #KEYS do
    if redis.call('GET', KEYS[j]) == token then
        redis.call('DEL', KEYS[j])
    end
end
return 0
"""


def clock() -> str:
    """The clock argument of :data:`READ_CLAIMING`: this process's, which
    the fragment cache judges expiry by too (the server's ``TIME`` costs
    the script as much as a read)."""
    return f"{time.time():.3f}"


def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
