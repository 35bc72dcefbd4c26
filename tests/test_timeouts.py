from __future__ import annotations

import pytest

from jinja_fragcache.timeouts import MAX_TIMEOUT, check_timeout


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0.0), (300, 300.0), (0.5, 0.5), (MAX_TIMEOUT, MAX_TIMEOUT)],
)
def test_valid_timeouts(value: object, expected: float | None) -> None:
    assert check_timeout(value) == expected


@pytest.mark.parametrize("value", [-1, -0.1, "300", True, float("nan"), [], object()])
def test_invalid_timeouts(value: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        check_timeout(value)


@pytest.mark.parametrize("value", [10**400, 1e16, MAX_TIMEOUT + 1, float("inf")])
def test_timeouts_no_backend_takes_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"at most .* use None"):
        check_timeout(value)
