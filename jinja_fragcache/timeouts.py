"""The one meaning of a timeout, Django's.

``None`` never expires, ``0`` does not cache at all, a positive number is
seconds.  A negative, non-numeric or boolean value is an error.
"""

from __future__ import annotations

import math

Timeout = float | None


def check_timeout(value: object) -> Timeout:
    """Return *value* as seconds (or ``None``), or raise ``ValueError``.

    :raises ValueError: the message names the bad value; callers add where
        it came from (template and line).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"timeout must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {value!r}")
    if math.isinf(value):
        return None
    return float(value)
