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
- :data:`JUDGE_CLAIMING`: the same without the near cache, judging
  entries by their headers, or only confirming that nothing changed since
  it last found them all fresh.
- :data:`WRITE_RELEASING`: the last trip of a miss: store the entries and
  delete each lock that still holds this request's token.

All but the first run as functions of one library, :data:`LIBRARY`, where
the server has them; :data:`JUDGE`, :data:`READ`, :data:`WRITE` and
:data:`READ_TTL` say how to call each (:class:`Script`).
"""

from __future__ import annotations

import hashlib
import time
from typing import NamedTuple


def sha(script: str) -> str:
    """*script*'s SHA1, as ``EVALSHA`` names it."""
    return hashlib.sha1(script.encode()).hexdigest()


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

# How an entry is judged, shared by READ_CLAIMING and JUDGE_CLAIMING:
# 'fresh', 'stale' or 'cold', as jinja_fragcache.entry.judge says, and a
# fresh entry's soft expiry (math.huge for never) and its field.  Given:
# `now`; `current`, the counters read so far (key -> value, false when
# missing); `known`, other counters already read, by key; `tail`, ' <key>
# <value>' for every counter read, what the header of a valid entry of
# one request ends with, counters read and recorded in the same order
# (false for more than one request); `nested`, whether a counter a header
# records besides is read; `extra`, the key and value of each one read,
# for the reply.  The header is split on every space (as bytes.split(b'
# ') does), and a field is made a Lua string only to be compared (making
# one costs more than finding it).  Functions that take all they use: a
# library defines them once, where a script defined closures on every
# call (see _HELPERS); they read `string` when called, since a library's
# code has no such global while it loads.
_JUDGE = """
-- Whether a recorded counter has another value now; with nested, one
-- not in `current` is read (unless `known` holds it) and reported.
local function changed(key, version, current, known, nested, extra)
    local seen = current[key]
    if seen == nil and nested then
        seen = known[key]
        if seen == nil then
            seen = redis.call('GET', key) or false
        end
        current[key] = seen
        extra[#extra + 1] = key
        extra[#extra + 1] = seen
    end
    return seen ~= nil and seen ~= version
end
local function judge(value, now, tail, current, known, nested, extra)
    local find, sub = string.find, string.sub
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
    if gap and gap < stop and sub(value, gap, stop - 1) ~= tail then
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
            local version = sub(value, middle + 1, after - 1)
            if changed(key, version, current, known, nested, extra) then
                return 'cold'
            end
            gap = after
        end
    end
    local field = sub(value, 5, one - 1)
    if field == '-' then
        return 'fresh', math.huge, field
    end
    local expiry = tonumber(field)
    if expiry ~= nil and now < expiry then
        return 'fresh', expiry, field
    end
    return 'stale'
end
-- keys.lock_key: kind 'l' in place of the first ':f:'.
local function lock_of(key)
    local at = string.find(key, ':f:', 1, true)
    if at then
        return string.sub(key, 1, at) .. 'l' .. string.sub(key, at + 2)
    end
    return key .. ':lock'
end
"""

#: Where a script uses :data:`_JUDGE`'s functions: a script sent whole
#: defines them there; :data:`LIBRARY` defines them once, ahead of every
#: function.
_HELPERS = "--[[ _JUDGE ]]"


def _whole(body: str) -> str:
    """*body* as ``EVAL`` runs it: :data:`_JUDGE` where it is used."""
    return body.replace(_HELPERS, _JUDGE)


# KEYS: n entry keys, their n lock keys, then m counter keys.
# ARGV: n, claim_cold ('1' or '0'), lock expiry (ms), flags, the client's
# clock (Unix seconds), then the token: what changes on every call comes
# last.  Flags ('', 'n', 't' or 'nt'): 'n' reads nested counters, 't'
# reports each entry's PTTL (else -1); a counter's is always -1, since
# counters are only ever written without an expiry (a PTTL costs the
# server as much as a GET, and a cold page has one counter a card).  A
# missing counter is created
# with the token as its value: one unpredictable value per read (the
# client's, from the operating system's random bytes) serves every
# counter the read creates, since a counter is only ever compared with
# what entries recorded under its own key.
#
# Replies, flat: per entry its value, PTTL and claim (0: not needed, 1:
# won, 2: held by another), then per counter its value (after creation)
# and PTTL, then the key and value of every nested counter read from a
# header.
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
# Entries and counters are read by one MGET: each redis.call costs a few
# microseconds of the server's time (Redis 7.0), TIME as much.  This
# script reads entries whole, for the near cache, which keeps them; without
# it, JUDGE_CLAIMING reads less.
#
# A miss judges nothing: what judging needs (the counters by key, and
# `tail`) is made for the first entry found.  The reply is filled in its
# order, so that it stays a Lua array (written out of order, part of it
# would be a hash, made again as it grows).
_READ_CLAIMING = """
--[[ _JUDGE ]]
local n = tonumber(ARGV[1])
local claim_cold = ARGV[2] == '1'
local lock_px, flags, token = ARGV[3], ARGV[4], ARGV[6]
local nested = flags == 'n' or flags == 'nt'  -- Lua compares strings
local ttls = flags == 't' or flags == 'nt'      -- by address: cheaper than find
local m = #KEYS - 2 * n
local all
if n == 1 then  -- a lookup of one fragment: no table to make
    all = redis.call('MGET', KEYS[1], unpack(KEYS, 3))
else
    local read = {}
    for i = 1, n do
        read[i] = KEYS[i]
    end
    for j = 1, m do
        read[n + j] = KEYS[2 * n + j]
    end
    all = redis.call('MGET', unpack(read))
end
for j = n + 1, n + m do
    if not all[j] then
        redis.call('SET', KEYS[n + j], token)
        all[j] = token
    end
end
local now, tail, current, known, extra
local out = {}
for i = 1, n do
    local value = all[i]
    local judged = 'cold'
    if value then
        if not current then
            now, current, known, extra = tonumber(ARGV[5]), {}, {}, {}
            local pieces = {''}
            for j = 1, m do
                local key, counter = KEYS[2 * n + j], all[n + j]
                current[key] = counter
                pieces[2 * j], pieces[2 * j + 1] = key, counter
            end
            tail = n == 1 and table.concat(pieces, ' ')
        end
        judged = judge(value, now, tail, current, known, nested, extra)
    end
    local claim = 0
    if judged == 'stale' or (judged == 'cold' and claim_cold) then
        if redis.call('SET', KEYS[n + i], token, 'NX', 'PX', lock_px) then
            claim = 1
        else
            claim = 2
        end
    end
    out[3 * i - 2] = value
    out[3 * i - 1] = value and (ttls and redis.call('PTTL', KEYS[i]) or -1) or -2
    out[3 * i] = claim
end
local at = 3 * n
for j = n + 1, n + m do
    out[at + 1], out[at + 2] = all[j], -1
    at = at + 2
end
if extra then
    for _, item in ipairs(extra) do
        at = at + 1
        out[at] = item
    end
end
return out
"""
READ_CLAIMING = _whole(_READ_CLAIMING)

#: How many bytes of an entry ``JUDGE_CLAIMING`` reads for its header (a
#: fragment with a few tags or nested fragments fits; a longer header costs
#: one more read inside the script, never a wrong judgement).
HEADER_BYTES = 512

# The first read without the near cache, in one of two ways.
#
# KEYS: the n entry keys.  ARGV: m counter keys, then, when the client
# expects, k more: the other counters that the entries recorded (nested
# fragments'); then what the client expects the m + k counters to hold,
# joined by spaces ('' when it expects nothing); then 'm claim_cold
# lock_px clock token' in one argument.  Every argument costs the server
# about 1,400 instructions and every byte of it 11 more (Redis hashes each
# byte of a string that enters Lua): so the counters' values go as one, a
# hit parses none of the last, and an entry's lock key is made here from
# its key, as keys.lock_key makes it (RedisBackend sends this script only
# the reads whose locks are named so).  The counters are keys the script
# does not declare, as the nested ones read from headers: fine on one
# server, which is the only one this script runs on.
#
# Expected: when every counter still holds what the client expects and
# every entry exists, the reply is 0, and nothing is read or claimed.
# The client expects only what this script's last judgement of the same
# keys found (every entry fresh, the counters as they were, none of them
# with a space: the values joined then say each one), and only until the
# soonest soft expiry that judgement saw, so that a 0 says what the
# judgement below would: an invalidation changes a counter, and a
# deletion or an eviction leaves an entry missing.  Each costs the server
# less than reading a header.
#
# Otherwise, each entry is judged by its header as READ_CLAIMING judges
# it (the same lock claims, counters created alike), without reading it
# whole: GETRANGE reads its first bytes, GET the whole of it only when no
# header ends there, and the client reads the entries with an MGET sent
# right behind the script, in the same packet.  A body never enters Lua (a
# value read into Lua costs the server about 12 instructions a byte).  The
# reply: per entry its claim, per counter its value (after creation), the
# soonest soft expiry of the entries when every one of them is fresh ('':
# not), then the key and value of every other counter read (nested).
_JUDGE_CLAIMING = """
local last = #ARGV
local found
if ARGV[last - 1] ~= '' then
    found = redis.call('MGET', unpack(ARGV, 1, last - 2))
    local whole, joined = pcall(table.concat, found, ' ')  -- false: missing
    if whole and joined == ARGV[last - 1]
            and redis.call('EXISTS', unpack(KEYS)) == #KEYS then
        return 0
    end
end
local m, claim_cold, lock_px, now, token = string.match(
    ARGV[last], '^(%d+) ([01]) (%d+) (%S+) (.*)$')
local n = #KEYS
m, now = tonumber(m), tonumber(now)
if not found and m > 0 then
    found = redis.call('MGET', unpack(ARGV, 1, m))
end
local out, current, known, extra = {}, {}, {}, {}
local nested = true
local pieces = {''}
for j = 1, m do
    local key, value = ARGV[j], found[j]
    if not value then
        redis.call('SET', key, token)
        value = token
    end
    current[key] = value
    pieces[2 * j], pieces[2 * j + 1] = key, value
    out[n + j] = value
end
for j = m + 1, last - 2 do
    known[ARGV[j]] = found[j]  -- reported once a header names it
end
local tail = n == 1 and table.concat(pieces, ' ')
--[[ _JUDGE ]]
local soonest, written = math.huge, '-'  -- and its field as written
for i = 1, n do
    local value = redis.pcall('GETRANGE', KEYS[i], '0', HEADER_LAST)
    if type(value) ~= 'string' or value == '' then
        value = false  -- missing, or not a string: MGET reads no value
    elseif not string.find(value, '\\n', 5, true) then
        value = redis.call('GET', KEYS[i])  -- a longer header
    end
    local judged, expiry, field = judge(
        value, now, tail, current, known, nested, extra)
    local claim = 0
    if judged == 'fresh' then
        if soonest and expiry < soonest then
            soonest, written = expiry, field
        end
    else
        soonest = false
        if judged == 'stale' or claim_cold == '1' then
            local lock = lock_of(KEYS[i])
            if redis.call('SET', lock, token, 'NX', 'PX', lock_px) then
                claim = 1
            else
                claim = 2
            end
        end
    end
    out[i] = claim
end
out[n + m + 1] = soonest and written or ''  -- (tostring costs more)
for _, item in ipairs(extra) do
    out[#out + 1] = item
end
return out
""".replace("HEADER_LAST", f"'{HEADER_BYTES - 1}'")
JUDGE_CLAIMING = _whole(_JUDGE_CLAIMING)

# KEYS: n entry keys, then locks.  ARGV: the entries' expiry in ms ('' for
# none), the token, then the n values (n: so many).  Stores the entries and
# deletes each lock that still holds the token (one that expired and was
# claimed by another request stays theirs).
WRITE_RELEASING = """
local px, token = ARGV[1], ARGV[2]
local n = #ARGV - 2
for i = 1, n do
    if px == '' then
        redis.call('SET', KEYS[i], ARGV[2 + i])
    else
        redis.call('SET', KEYS[i], ARGV[2 + i], 'PX', px)
    end
end
for j = n + 1, #KEYS do
    if redis.call('GET', KEYS[j]) == token then
        redis.call('DEL', KEYS[j])
    end
end
return 0
"""


class Script(NamedTuple):
    """A script of :data:`LIBRARY`, as a backend calls it: by its function's
    name (``FCALL``), or by its SHA1 (``EVALSHA``, ``EVAL``) on a server
    without functions."""

    #: The script, as ``EVAL`` runs it.
    source: str
    #: Its function's name in :data:`LIBRARY`.
    name: str
    #: Its SHA1, as ``EVALSHA`` names it.
    sha: str


#: Each script run as a function, with the flags that let it run (see
#: :data:`LIBRARY`): a function's name, its script (where it uses
#: :data:`_JUDGE`, marked), its flags.
_FUNCTIONS = {
    "judge": (_JUDGE_CLAIMING, "'allow-oom'"),
    "read": (_READ_CLAIMING, "'allow-oom'"),
    "write": (WRITE_RELEASING, "'allow-oom'"),
    "read_ttl": (READ_WITH_TTL, "'no-writes'"),
}
#: The library's name, and its functions' names' start: made from the
#: scripts' SHA1, as ``EVALSHA`` names a script, so that releases that
#: differ load libraries that differ, and never replace each other's.
LIBRARY_NAME = (
    "jinja_fragcache_"
    + sha(_JUDGE + "".join(body + flags for body, flags in _FUNCTIONS.values()))[:16]
)
#: The scripts as Redis functions (Redis 7), called by ``FCALL``: a call
#: starts about 1,900 instructions cheaper than by ``EVALSHA`` (most of it
#: the 40 bytes of the SHA1, which enter Lua), and a function's ``KEYS``
#: and ``ARGV`` are locals, not globals.  A function runs only when its
#: flags allow it.  ``allow-oom`` lets the reads run, as their scripts ran,
#: on a server out of memory (a hit still confirms; the few bytes of a lock
#: or a new counter they write are let through, where the script's first
#: write failed), and the write too: a backend gives it no entries (they
#: go as plain ``SET`` commands ahead of it, which such a server refuses),
#: so it only releases the miss's locks, and the next request renders at
#: once instead of waiting for a lock nobody would release (the script
#: failed at its first ``SET``, and its locks expired).  A server keeps
#: functions until it
#: restarts (without persistence) or ``FUNCTION FLUSH``; a backend loads
#: the library again then, as it sends a script again after ``NOSCRIPT``.
LIBRARY = f"#!lua name={LIBRARY_NAME}\n{_JUDGE}" + "".join(
    f"redis.register_function{{function_name='{LIBRARY_NAME}_{name}', "
    "callback=function(KEYS, ARGV)\n"
    f"{body.replace(_HELPERS, '')}\nend, flags={{{flags}}}}}\n"
    for name, (body, flags) in _FUNCTIONS.items()
)


def _script(name: str) -> Script:
    source = _whole(_FUNCTIONS[name][0])
    return Script(source, f"{LIBRARY_NAME}_{name}", sha(source))


#: :data:`JUDGE_CLAIMING`, :data:`READ_CLAIMING`, :data:`WRITE_RELEASING`
#: and :data:`READ_WITH_TTL` as backends call them.
JUDGE = _script("judge")
READ = _script("read")
WRITE = _script("write")
READ_TTL = _script("read_ttl")


def clock(now: float | None = None) -> bytes:
    """The clock argument of :data:`READ_CLAIMING` and
    :data:`JUDGE_CLAIMING`: this process's (*now*, else the time), which
    the fragment cache judges expiry by too (the server's ``TIME`` costs
    the script as much as a read).  Bytes, as a packed command holds it."""
    return b"%.3f" % (time.time() if now is None else now)
