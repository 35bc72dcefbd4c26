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
# ARGV: n, claim_cold ('1' or '0'), lock expiry (ms), flags, with 'h' how
# many bytes of an entry to read for its header (else ''), the client's
# clock (Unix seconds), then the token (last: what changes on every call
# goes at the end, so a client may keep the rest of the command packed).
# Flags: 'n' reads nested counters, 't' reports each value's PTTL (else
# -1), 'h' judges entries by their headers alone and replies without
# them.  A missing counter is created with the token as its value: one
# unpredictable value per read (the client's, from the operating system's
# random bytes) serves every counter it creates, since a counter is only
# ever compared with what entries recorded under its own key.
#
# Replies, flat.  Without 'h': per entry its value, PTTL and claim (0: not
# needed, 1: won, 2: held by another); per counter its value (after
# creation) and PTTL.  With 'h': per entry its claim; per counter its value
# (after creation).  Then the key and value of every nested counter read
# from a header.
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
# With 'h' an entry's body never enters Lua (a value read into Lua costs
# the server about 12 instructions a byte): GETRANGE reads its first bytes,
# GET the whole of it only when the header is longer than that, and the
# client reads the entries with an MGET sent right behind the script, in
# the same packet.  Without it every entry and counter is read by one MGET:
# each redis.call costs a few microseconds of the server's time (Redis
# 7.0), TIME as much.
READ_CLAIMING = """
local n = tonumber(ARGV[1])
local claim_cold = ARGV[2] == '1'
local lock_px, flags = ARGV[3], ARGV[4]
local nested = string.find(flags, 'n', 1, true) ~= nil
local ttls = string.find(flags, 't', 1, true) ~= nil
local heads = string.find(flags, 'h', 1, true) ~= nil
local now, token = tonumber(ARGV[6]), ARGV[7]
local m = #KEYS - 2 * n
local out, current, extra = {}, {}, {}
local found = {}
if heads then
    if m > 0 then
        found = redis.call('MGET', unpack(KEYS, 2 * n + 1, 2 * n + m))
    end
else
    local read = {}
    for i = 1, n do
        read[i] = KEYS[i]
    end
    for j = 1, m do
        read[n + j] = KEYS[2 * n + j]
    end
    local all = redis.call('MGET', unpack(read))
    for i = 1, n do
        out[3 * i - 2] = all[i]
    end
    for j = 1, m do
        found[j] = all[n + j]
    end
end
local at = heads and n or 3 * n
for j = 1, m do
    local key, value = KEYS[2 * n + j], found[j]
    if not value then
        redis.call('SET', key, token)
        value = token
    end
    current[key] = value
    at = at + 1
    out[at] = value
    if not heads then
        at = at + 1
        out[at] = (found[j] and ttls) and redis.call('PTTL', key) or -1
    end
end
local head = heads and tonumber(ARGV[5])
for i = 1, n do
    local value
    if heads then
        value = redis.pcall('GETRANGE', KEYS[i], 0, head - 1)
        if type(value) ~= 'string' or value == '' then
            value = false  -- missing, or not a string: MGET reads no value
        elseif #value == head and not string.find(value, '\\n', 5, true) then
            value = redis.call('GET', KEYS[i])
        end
    else
        value = out[3 * i - 2]
    end
    local valid, fresh = false, false
    if value and string.sub(value, 1, 4) == 'FC2 ' then
        local stop = string.find(value, '\\n', 5, true)
        if stop then
            -- split on every space, as the client's bytes.split(b' ') does
            local fields, from = {}, 5
            while true do
                local space = string.find(value, ' ', from, true)
                if not space or space > stop then
                    fields[#fields + 1] = string.sub(value, from, stop - 1)
                    break
                end
                fields[#fields + 1] = string.sub(value, from, space - 1)
                from = space + 1
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
    if heads then
        out[i] = claim
    else
        out[3 * i - 1] = value and (ttls and redis.call('PTTL', KEYS[i]) or -1) or -2
        out[3 * i] = claim
    end
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


#: How many bytes of an entry ``READ_CLAIMING`` reads for its header with
#: the 'h' flag (a fragment with a few tags or nested fragments fits; a
#: longer header costs one more read inside the script, never a wrong
#: judgement).
HEADER_BYTES = 512


def clock() -> str:
    """The clock argument of :data:`READ_CLAIMING`: this process's, which
    the fragment cache judges expiry by too (the server's ``TIME`` costs
    the script as much as a read)."""
    return f"{time.time():.3f}"


def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
