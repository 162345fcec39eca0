"""Pure retry/backoff arithmetic: exponential growth, a cap, and proportional jitter.

No clock and no randomness inside (the caller passes a uniform sample in [0, 1)), so every
schedule is reproducible in a test. Used for broker reconnects and for re-sending envelopes
whose ack said retry-later or never came.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float, sample: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = first retry).

    ``base * 2**(attempt-1)``, capped at ``cap``, then scaled into
    ``[(1 - jitter) * d, d]`` by ``sample``: jitter spreads a fleet of gateways that lost the
    broker together, so they do not all reconnect in the same second.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= sample < 1.0:
        raise ValueError("sample must be in [0, 1)")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter must be in [0, 1]")
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    # Clamp the exponent first: 2**attempt overflows a float long before attempt is absurd.
    exp = min(attempt - 1, 62)
    delay = min(cap, base * float(2**exp))
    return delay * (1.0 - jitter * sample)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """A validated backoff policy; ``delay(attempt, sample)`` is :func:`backoff_delay`."""

    base: float
    cap: float
    jitter: float = 0.5

    def __post_init__(self) -> None:
        backoff_delay(1, base=self.base, cap=self.cap, jitter=self.jitter, sample=0.0)

    def delay(self, attempt: int, sample: float) -> float:
        return backoff_delay(
            attempt, base=self.base, cap=self.cap, jitter=self.jitter, sample=sample
        )
