"""A circuit breaker per backend: after N failures in a row, skip it for a cooldown, then probe."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self.clock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open state, one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def record_failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failure_threshold:
            self.opened_at = self._now()
        self.probing = False

    def release(self) -> None:
        """A request ended with neither verdict (cancelled): let the next one probe."""
        self.probing = False

    def seconds_until_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._now() - self.opened_at))
