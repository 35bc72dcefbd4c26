from __future__ import annotations

import pytest

from jinja_fragcache.timeouts import check_timeout


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0.0), (300, 300.0), (0.5, 0.5), (float("inf"), None)],
)
def test_valid_timeouts(value: object, expected: float | None) -> None:
    assert check_timeout(value) == expected


@pytest.mark.parametrize("value", [-1, -0.1, "300", True, float("nan"), [], object()])
def test_invalid_timeouts(value: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        check_timeout(value)
