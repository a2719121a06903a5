"""Bounded waits for tests that watch a real process or thread.

The one place in the test suite that polls: ``wait_until`` re-checks a condition with
short pauses until it holds or the time limit passes. ``LineReader`` waits for a line
from a child process's pipe, with a time limit. Prefer waiting on an event, a
queue, a pipe or a ``ManualClock``; use this where the only thing to watch is state in
another process (an engine's answers, a file appearing).

Importable from every test module: ``tests/`` is on ``sys.path`` (its ``conftest.py`` is
rootdir-relative, with no ``__init__.py``).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any
from collections.abc import Callable

# A loaded 2-core CI machine can hold a process off the CPU for a second or more, so the
# default limit is generous; a wait only takes as long as the condition needs.
DEFAULT_TIMEOUT_S = 10.0


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = 0.02,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Return the first truthy value of ``predicate()`` within ``timeout`` seconds, or
    the last (falsy) value once the time is up, so that callers ``assert wait_until(...)``.

    ``ignore``: exceptions that count as "not yet" (e.g. a server that is still starting).
    The predicate is always tried once more after the deadline, so a slow machine that
    never got to run it in time does not fail for that alone.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore:
            value = None
        if value or last_try:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class LineReader:
    """Reads a child process's text pipe on a thread, so that a test can wait for a line
    with a time limit (a bare ``readline`` waits for ever if the line never comes)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        try:
            for line in iter(stream.readline, ""):
                self.lines.append(line)
                self._queue.put(line)
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        self._queue.put(None)

    def expect(self, text: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        """The next line containing ``text``; AssertionError at the time limit or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout} s; got {self.lines[-10:]}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"the stream ended without a line with {text!r}; got {self.lines[-10:]}")
            if text in line:
                return line

    def text(self, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        """Everything read, once the stream has ended (the process closed it)."""
        self._thread.join(timeout)
        return "".join(self.lines)
