"""The one meaning of a timeout, Django's.

``None`` never expires, ``0`` does not cache at all, a positive number is
seconds up to :data:`MAX_TIMEOUT`.  A negative, non-numeric, boolean or
larger value is an error, found before any backend sees it: a timeout one
backend refuses must not turn into a backend error that disables caching
for every other fragment.
"""

from __future__ import annotations

import math

Timeout = float | None

#: The longest timeout: one year.  Every backend takes it with the stale
#: grace on top (memcached reads more than 30 days as a Unix time, which must
#: stay below 2**31); for longer, use ``None``, which never expires.
MAX_TIMEOUT = 365 * 24 * 3600


def check_timeout(value: object) -> Timeout:
    """Return *value* as seconds (or ``None``), or raise ``ValueError``.

    :raises ValueError: the message names the bad value; callers add where
        it came from (template and line).
    """
    if type(value) is int and 0 <= value <= MAX_TIMEOUT:  # a constant, mostly
        return float(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"timeout must be a number of seconds or None, got {value!r}")
    if isinstance(value, float) and math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {value!r}")
    if value > MAX_TIMEOUT:
        text = repr(value)
        shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"
        raise ValueError(
            f"timeout must be at most {MAX_TIMEOUT} seconds (a year), got {shown}; "
            "use None for a fragment that never expires"
        )
    return float(value)
