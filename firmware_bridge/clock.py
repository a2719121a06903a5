"""Injected time for everything that waits, times out or simulates.

Owns: the ``Clock`` interface and its three implementations.
May import: the standard library only.

Every timeout, alarm timer, pause countdown and the virtual board read time through a
``Clock`` so that tests advance time instead of sleeping and a two-hour case simulates
in seconds.

- ``MonotonicClock``: real time (``time.monotonic``); the appliance uses it.
- ``ManualClock``: time moves only when ``advance``/``set`` is called; tests and
  as-fast-as-possible simulation use it.
- ``ScaledClock``: real time multiplied by a speed factor (a demo at 10x).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic time line; the origin is arbitrary."""

    def now(self) -> float: ...


class MonotonicClock:
    """Real monotonic time in seconds."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to. Thread-safe: moves take a lock; reading the time is
    one attribute read (a float is replaced whole, never seen half-written), which the engine
    and the virtual board do hundreds of times per simulated second."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance by {seconds} s)")
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        with self._lock:
            if t < self._t:
                raise ValueError(f"cannot move a clock backwards (from {self._t} s to {t} s)")
            self._t = float(t)


class ScaledClock:
    """Real time running ``speed`` times faster, starting at ``start``."""

    def __init__(self, speed: float = 1.0, start: float = 0.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (got {speed})")
        self.speed = float(speed)
        self._origin = time.monotonic()
        self._start = float(start)

    def now(self) -> float:
        return self._start + (time.monotonic() - self._origin) * self.speed
