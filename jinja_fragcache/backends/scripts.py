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
# ARGV: n, claim_cold ('1' or '0'), lock expiry (ms), flags, the last
# byte of an entry to read for its header ('' to read whole entries), the
# client's clock (Unix seconds), then the token: what changes on every
# call comes last, so that a client may keep the rest of the command
# packed.  Flags ('', 'n', 't' or 'nt'): 'n' reads nested counters, 't'
# reports each value's PTTL (else -1).  A missing counter is created
# with the token as its value: one unpredictable value per read (the
# client's, from the operating system's random bytes) serves every
# counter the read creates, since a counter is only ever compared with
# what entries recorded under its own key.
#
# Replies, flat.  Whole entries: per entry its value, PTTL and claim (0:
# not needed, 1: won, 2: held by another), then per counter its value
# (after creation) and PTTL.  By headers: per entry its claim, then per
# counter its value (after creation).  Then the key and value of every
# nested counter read from a header.
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
# By headers, an entry's body never enters Lua (a value read into Lua
# costs the server about 12 instructions a byte): GETRANGE reads its
# first bytes, GET the whole of it only when no header ends there, and
# the client reads the entries with an MGET sent right behind the script,
# in the same packet.  Whole entries and counters are read by one MGET:
# each redis.call costs a few microseconds of the server's time (Redis
# 7.0), TIME as much.  A field of a header is made a Lua string only to
# be compared (making one costs more than finding it).
READ_CLAIMING = """
local n = tonumber(ARGV[1])
local claim_cold = ARGV[2] == '1'
local lock_px, flags, last = ARGV[3], ARGV[4], ARGV[5]
local now, token = tonumber(ARGV[6]), ARGV[7]
local nested = flags == 'n' or flags == 'nt'  -- Lua compares strings
local ttls = flags == 't' or flags == 'nt'      -- by address: cheaper than find
local heads = last ~= ''
local find, sub = string.find, string.sub
local m = #KEYS - 2 * n
local out, current, extra, found = {}, {}, {}, {}
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
-- ' <key> <value>' for every counter: what the header of a valid entry of
-- one request ends with, counters read and recorded in the same order.
local pieces = {''}
local at = heads and n or 3 * n
for j = 1, m do
    local key, value = KEYS[2 * n + j], found[j]
    if not value then
        redis.call('SET', key, token)
        value = token
    end
    current[key] = value
    pieces[2 * j], pieces[2 * j + 1] = key, value
    at = at + 1
    out[at] = value
    if not heads then
        at = at + 1
        out[at] = (found[j] and ttls) and redis.call('PTTL', key) or -1
    end
end
local expected = n == 1 and table.concat(pieces, ' ')
-- Whether a recorded counter has another value now; with 'n', one that
-- is not in KEYS is read (and reported).
local function changed(key, version)
    local seen = current[key]
    if seen == nil and nested then
        seen = redis.call('GET', key) or false
        current[key] = seen
        extra[#extra + 1] = key
        extra[#extra + 1] = seen
    end
    return seen ~= nil and seen ~= version
end
-- 'fresh', 'stale' or 'cold', as jinja_fragcache.entry.judge says: the
-- header is split on every space (as bytes.split(b' ') does), without a
-- string made for a field that is not compared.
local function judge(value)
    local stop = value and sub(value, 1, 4) == 'FC2 ' and find(value, '\\n', 5, true)
    if not stop then
        return 'cold'
    end
    local one = find(value, ' ', 5, true)
    local two = one and one < stop and find(value, ' ', one + 1, true)
    if not two or two > stop then
        return 'cold'  -- fewer than three fields
    end
    local gap = find(value, ' ', two + 1, true)
    if gap and gap < stop and sub(value, gap, stop - 1) ~= expected then
        while gap and gap < stop do
            local middle = find(value, ' ', gap + 1, true)
            if not middle or middle > stop then
                return 'cold'  -- a key without its version
            end
            local after = find(value, ' ', middle + 1, true)
            if not after or after > stop then
                after = stop
            end
            local key = sub(value, gap + 1, middle - 1)
            if changed(key, sub(value, middle + 1, after - 1)) then
                return 'cold'
            end
            gap = after
        end
    end
    local field = sub(value, 5, one - 1)
    local expiry = tonumber(field)
    if field == '-' or (expiry ~= nil and now < expiry) then
        return 'fresh'
    end
    return 'stale'
end
for i = 1, n do
    local value
    if heads then
        value = redis.pcall('GETRANGE', KEYS[i], '0', last)
        if type(value) ~= 'string' or value == '' then
            value = false  -- missing, or not a string: MGET reads no value
        elseif not find(value, '\\n', 5, true) then
            value = redis.call('GET', KEYS[i])  -- a longer header
        end
    else
        value = out[3 * i - 2]
    end
    local judged = judge(value)
    local claim = 0
    if judged == 'stale' or (judged == 'cold' and claim_cold) then
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


#: How many bytes of an entry ``READ_CLAIMING`` reads for its header when
#: it judges by headers (a fragment with a few tags or nested fragments fits; a
#: longer header costs one more read inside the script, never a wrong
#: judgement).
HEADER_BYTES = 512


def clock() -> bytes:
    """The clock argument of :data:`READ_CLAIMING`: this process's, which
    the fragment cache judges expiry by too (the server's ``TIME`` costs
    the script as much as a read).  Bytes, as a packed command holds it."""
    return b"%.3f" % time.time()


def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
