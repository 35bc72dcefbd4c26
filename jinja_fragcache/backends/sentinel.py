"""Redis behind Sentinel: :meth:`RedisBackend.from_sentinel`.

(Being written: see issue 10.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .redis import RedisBackend


def sentinel_backend(
    cls: type[RedisBackend],
    sentinels: Sequence[tuple[str, int]],
    service_name: str,
    **kwargs: Any,
) -> RedisBackend:
    raise NotImplementedError("RedisBackend.from_sentinel is not built yet")
