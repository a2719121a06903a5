"""What the touchscreen does with its own unexpected errors (pure: no Kivy, no I/O).

Owns: ``Fault`` (one unexpected exception in the UI: where, what, the program location
and the traceback) and ``FaultLog``, which keeps the faults of this run, says which of
them are worth sending to the engine (the same fault repeated every frame is sent once,
and never more than ``max_per_minute`` faults a minute), and words them:

- ``screen_text``: the technical message shown on the touchscreen (the program keeps
  running; the nurse is told that monitoring and alarms are not affected, because they
  run in the engine, and that the failure was recorded);
- ``journal_text``: the text sent to the engine to be journaled with the case
  (``note.add`` with the prefix ``JOURNAL_PREFIX``; the engine refuses it when no case is
  open, then the fault is only in the UI's log).

The Kivy side (the ``ExceptionManager`` handler, the guarded calls in the app's pump)
lives in ``app.ui.main``.
May import: the standard library only.
"""

from __future__ import annotations

import collections
import os
import time
import traceback
from dataclasses import dataclass
from collections.abc import Callable

JOURNAL_PREFIX = "UI FAULT (touchscreen program error, monitoring not affected):"
MAX_JOURNAL_CHARS = 2000  # note.add's limit


@dataclass
class Fault:
    """One unexpected exception raised in the touchscreen program."""

    t: float  # monotonic time of the (first) occurrence
    where: str  # what the program was doing: "touch or timer", "screen monitor: update", ...
    kind: str  # exception class name
    message: str
    location: str  # "file.py:123 in function" of the innermost frame outside the libraries
    trace: str  # the formatted traceback
    count: int = 1

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.where, self.kind, self.location)


def _location(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown place"
    ours = [f for f in frames if "-packages" not in f.filename and not f.filename.startswith("<")] or frames
    f = ours[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def fault_from(exc: BaseException, where: str, now: float) -> Fault:
    """A ``Fault`` record of ``exc`` (with its traceback)."""
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = str(exc).strip() or "(no message)"
    return Fault(now, where, type(exc).__name__, message, _location(exc), trace)


class FaultLog:
    """The faults of this run; which to report to the engine (see the module docstring)."""

    def __init__(self, max_per_minute: int = 6, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_per_minute = max_per_minute
        self._now = monotonic
        self.faults: list[Fault] = []
        self.total = 0  # occurrences, repeats included
        self.recent: collections.deque[Fault] = collections.deque(maxlen=200)  # occurrence by occurrence
        self._by_signature: dict[tuple[str, str, str], Fault] = {}
        self._reported: collections.deque[float] = collections.deque()

    def __len__(self) -> int:
        return len(self.faults)

    def add(self, exc: BaseException, where: str) -> tuple[Fault, bool]:
        """Record ``exc``; returns the fault and whether it should be sent to the engine
        (a new kind of fault, within the rate limit)."""
        now = self._now()
        fault = fault_from(exc, where, now)
        self.total += 1
        seen = self._by_signature.get(fault.signature)
        if seen is not None:
            seen.count += 1
            self.recent.append(seen)
            return seen, False
        self.recent.append(fault)
        self._by_signature[fault.signature] = fault
        self.faults.append(fault)
        while self._reported and now - self._reported[0] > 60.0:
            self._reported.popleft()
        if len(self._reported) >= self.max_per_minute:
            return fault, False
        self._reported.append(now)
        return fault, True


def screen_text(fault: Fault) -> str:
    """The technical message shown on the touchscreen."""
    return (f"Touchscreen program error ({fault.kind} at {fault.location}): {fault.message}. "
            "The screen keeps working; monitoring and alarms are not affected. Recorded for service.")


def journal_text(fault: Fault) -> str:
    """The text journaled through the engine (``note.add``), at most 2000 characters."""
    head = f"{JOURNAL_PREFIX} {fault.kind} while {fault.where}, at {fault.location}: {fault.message}"
    last_lines = fault.trace.strip().splitlines()[-6:]
    text = head + " | " + " / ".join(line.strip() for line in last_lines)
    return text if len(text) <= MAX_JOURNAL_CHARS else text[:MAX_JOURNAL_CHARS - 3] + "..."
