"""Retry timing as a pure function (no sleeping, no clock): easy to test, shared by every retry.

Exponential backoff with a cap and "equal jitter": half the delay is fixed, half random, so
a fleet of agents that lost the same gateway does not reconnect in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return float(ceiling / 2 + rand() * ceiling / 2)
