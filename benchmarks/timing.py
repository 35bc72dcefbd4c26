"""Interleaved timing: medians of batch means, in microseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def batch_us(fn: Callable[[], object], number: int) -> float:
    """Mean microseconds per call over one batch of *number* calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number / 1000


def calibrate(fn: Callable[[], object], seconds: float, max_number: int) -> int:
    """Warm *fn* up for about *seconds* / 2; return how many calls of it
    take about *seconds*."""
    calls, start = 0, time.perf_counter()
    while calls < max_number and time.perf_counter() - start < seconds / 2:
        fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return max(1, min(max_number, round(seconds / per_call)))


def compare(
    cases: Mapping[str, Callable[[], object]],
    *,
    batch_seconds: float,
    rounds: int,
    max_number: int = 1_000_000,
) -> dict[str, float]:
    """The median over *rounds* batches of each case's mean µs per call."""
    samples = sample(
        cases, batch_seconds=batch_seconds, rounds=rounds, max_number=max_number
    )
    return {name: statistics.median(values) for name, values in samples.items()}


def sample(
    cases: Mapping[str, Callable[[], object]],
    *,
    batch_seconds: float,
    rounds: int,
    max_number: int = 1_000_000,
) -> dict[str, list[float]]:
    """Each case's mean µs per call in each of *rounds* batches, in order.

    Each case's batch size is calibrated to last about *batch_seconds*, so a
    slow case costs no more wall time than a fast one.  The cases take turns
    batch by batch, starting one further each round, so a slow spell of the
    machine falls on all of them alike.
    """
    numbers = {
        name: calibrate(fn, batch_seconds, max_number) for name, fn in cases.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for round_ in range(rounds):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            samples[name].append(batch_us(cases[name], numbers[name]))
    return samples
