"""Thread supervision: every engine thread shows it is alive, and one that is not is named.

Owns: ``Supervisor`` (the registry of the engine's threads), ``Heartbeat`` (what a thread
touches at every turn of its loop), the thread states and the restart budget. Pure: no
threads, sockets or clocks of its own; ``now`` is injected, and the engine's shell
(``app.engine.service``) decides what to do about a thread in trouble.
May import: the standard library only.

A watched thread is judged by one or both of:

- its *heartbeat*: the thread calls ``beat()`` at every turn of its loop; silent for more
  than ``stall_s`` while busy, it is *stalled*. A worker that waits for work is *idle*
  (``Heartbeat.idle()``) and cannot stall until it starts a job (``Heartbeat.busy()``);
- a *liveness probe* (``alive()``, e.g. ``Thread.is_alive``): false means *dead*.

States: ``running``, ``idle``, ``stalled``, ``dead``, ``failed`` (the engine is stopping
safely because of it; final). ``healthy()`` is true while every thread is running or
idle: only then may the systemd watchdog be fed. Each thread has a ``policy``, which the
shell carries out: ``restart`` (within a budget of ``max_restarts`` per ``window_s``;
beyond it, fail safe), ``fail_safe`` (stop stimulation, engine-fault alarm, exit 70), or
``hold`` (the engine loop: the board's heartbeat stops until it runs again).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"
IDLE = "idle"
STALLED = "stalled"
DEAD = "dead"
FAILED = "failed"
HEALTHY_STATES = (RUNNING, IDLE)


class Policy(enum.StrEnum):
    """What the engine does about a thread that stalls or dies."""

    RESTART = "restart"
    FAIL_SAFE = "fail_safe"
    HOLD = "hold"


class Heartbeat:
    """Touched by the watched thread itself; reading and writing one float, no lock.

    ``beat()`` costs an attribute write and a clock read: cheap enough for a loop that
    turns a hundred times a second."""

    __slots__ = ("last", "busy_now", "_now")

    def __init__(self, now: Callable[[], float], busy: bool = True) -> None:
        self._now = now
        self.last = now()
        self.busy_now = busy

    def beat(self) -> None:
        """The thread is alive and turning."""
        self.last = self._now()

    def busy(self) -> None:
        """A worker starts a job: from now on it must finish (or beat) within ``stall_s``."""
        self.last = self._now()
        self.busy_now = True

    def idle(self) -> None:
        """A worker waits for work: it cannot stall while idle."""
        self.last = self._now()
        self.busy_now = False


@dataclass
class Watch:
    """One supervised thread."""

    name: str
    what: str  # in words, for people
    policy: Policy
    stall_s: float | None
    heartbeat: Heartbeat | None
    alive: Callable[[], bool] | None
    state: str = RUNNING
    since: float = 0.0
    reason: str = ""
    restarts: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    restarts_total: int = 0


@dataclass(frozen=True)
class Change:
    """A thread changed state (``check`` returns these)."""

    name: str
    old: str
    new: str
    reason: str


class Supervisor:
    """The registry of the engine's threads (see the module docstring). Thread-safe."""

    def __init__(self, now: Callable[[], float], *, max_restarts: int = 3, window_s: float = 600.0) -> None:
        self._now = now
        self.max_restarts = int(max_restarts)
        self.window_s = float(window_s)
        self._watches: dict[str, Watch] = {}
        self._lock = threading.Lock()
        self.checked_at: float | None = None

    # ------------------------------------------------------------------ registering

    def watch(self, name: str, what: str, policy: Policy, *, stall_s: float | None = None,
              alive: Callable[[], bool] | None = None, heartbeat: bool = True, busy: bool = True) -> Heartbeat | None:
        """Supervise a thread; returns the heartbeat it must touch (None without one)."""
        if heartbeat and (stall_s is None or not stall_s > 0):
            raise ValueError(f"thread {name}: a heartbeat needs a stall time > 0 s (got {stall_s})")
        if not heartbeat and alive is None:
            raise ValueError(f"thread {name}: give a heartbeat, a liveness probe, or both")
        hb = Heartbeat(self._now, busy=busy) if heartbeat else None
        with self._lock:
            if name in self._watches:
                raise ValueError(f"thread {name} is already supervised")
            self._watches[name] = Watch(name, what, Policy(policy), stall_s if heartbeat else None, hb, alive,
                                        RUNNING if busy else IDLE, self._now())
        return hb

    def rewatch(self, name: str, *, alive: Callable[[], bool] | None = None, busy: bool = True) -> Heartbeat | None:
        """After a restart: a fresh heartbeat (and probe, if given) for the new thread; the
        restart history is kept."""
        with self._lock:
            w = self._watches[name]
            if w.heartbeat is not None:
                w.heartbeat = Heartbeat(self._now, busy=busy)
            if alive is not None:
                w.alive = alive
            w.state, w.since, w.reason = (RUNNING if busy else IDLE), self._now(), ""
            return w.heartbeat

    def names(self) -> list[str]:
        """The supervised threads, in the order they were registered."""
        with self._lock:
            return list(self._watches)

    def get(self, name: str) -> Watch:
        """One thread's record (a live object: read it, do not change it)."""
        with self._lock:
            return self._watches[name]

    # ------------------------------------------------------------------ judging

    def _judge(self, w: Watch, now: float) -> tuple[str, str]:
        if w.state == FAILED:
            return FAILED, w.reason
        if w.alive is not None:
            try:
                alive = bool(w.alive())
            except Exception as exc:  # noqa: BLE001 - a probe that fails says nothing good
                return DEAD, f"its liveness cannot be read ({type(exc).__name__}: {exc})"
            if not alive:
                return DEAD, "the thread has ended"
        hb = w.heartbeat
        if hb is None:
            return RUNNING, ""
        if not hb.busy_now:
            return IDLE, ""
        silent = now - hb.last
        if w.stall_s is not None and silent > w.stall_s:
            return STALLED, f"no sign of life for {silent:.1f} s (at most {w.stall_s:g} s expected)"
        return RUNNING, ""

    def check(self) -> list[Change]:
        """Judge every thread now; returns the changes of state since the last check."""
        now = self._now()
        changes: list[Change] = []
        with self._lock:
            for w in self._watches.values():
                state, reason = self._judge(w, now)
                if state != w.state:
                    changes.append(Change(w.name, w.state, state, reason))
                    w.state, w.since = state, now
                if state in (STALLED, DEAD):
                    w.reason = reason  # the silence grows: keep the words current
                elif state in HEALTHY_STATES:
                    w.reason = ""
            self.checked_at = now
        return changes

    def healthy(self) -> bool:
        """Every thread running or idle (as of the last ``check``)."""
        with self._lock:
            return all(w.state in HEALTHY_STATES for w in self._watches.values())

    def problems(self) -> list[Watch]:
        """The threads that are stalled, dead or failed (as of the last ``check``)."""
        with self._lock:
            return [w for w in self._watches.values() if w.state not in HEALTHY_STATES]

    # ------------------------------------------------------------------ acting

    def may_restart(self, name: str) -> bool:
        """Within the restart budget: fewer than ``max_restarts`` in the last ``window_s``."""
        now = self._now()
        with self._lock:
            w = self._watches[name]
            return sum(1 for t in w.restarts if now - t < self.window_s) < self.max_restarts

    def restarted(self, name: str) -> int:
        """Count a restart attempt of ``name``; returns its total so far."""
        with self._lock:
            w = self._watches[name]
            w.restarts.append(self._now())
            w.restarts_total += 1
            return w.restarts_total

    def failed(self, name: str, reason: str) -> bool:
        """Mark ``name`` as the reason the engine fails safe; False if it was already."""
        with self._lock:
            w = self._watches[name]
            if w.state == FAILED:
                return False
            w.state, w.since, w.reason = FAILED, self._now(), reason
            return True

    # ------------------------------------------------------------------ showing

    def snapshot(self) -> list[dict[str, Any]]:
        """Every thread as plain data (``lnm status``, the state's ``threads``)."""
        now = self._now()
        out = []
        with self._lock:
            for w in self._watches.values():
                hb = w.heartbeat
                silent = None if hb is None or not hb.busy_now else round(max(0.0, now - hb.last), 2)
                out.append({"name": w.name, "what": w.what, "state": w.state, "silent_s": silent,
                            "stall_s": w.stall_s, "policy": w.policy.value, "restarts": w.restarts_total,
                            "reason": w.reason})
        return out
