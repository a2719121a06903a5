"""The virtual board: firmware emulation of the wire protocol with a believable patient.

Owns: the patient physiology (``physiology``), the continuous EMG (``emg``), the board
firmware emulation (``board``), scenarios (``scenario``), the in-process ``sim://`` port
(``open_sim``, ``SimPort``), the ``lnm board-sim`` command (``cli``) and a quick speed
measurement (``python -m firmware_bridge.sim.speed``).
May import: the standard library, numpy, scipy, ``firmware_bridge.messages``,
``firmware_bridge.clock`` and ``firmware_bridge.codec``; never ``app``.

``open_sim(url, clock=None)`` opens a port on an in-process ``VirtualBoard``. URLs::

    sim://                                   default patient (seed 0), real time
    sim://?scenario=standard_bilateral&seed=1&speed=10
    sim://traction_recovery?speed=50         (the scenario may also be the URL's host)

Query keys: ``scenario`` (a name in ``config/scenarios`` or a path), ``seed`` (overrides
the scenario's), ``speed`` (time factor of the board's ``ScaledClock``; ignored when a
``clock`` is injected: then that clock is the board's time), ``board_id``, and ``pump``
(``1`` default: a small thread polls the board every ``pump_ms`` (default 2 ms) so its
heartbeats, stimulation and safety timers run even when the host stops reading;
``0``: no thread, the board advances only when the port is read or written, e.g. for a
single-threaded stepped simulation on a ``ManualClock``). The port's ``board`` attribute
is the ``VirtualBoard`` itself (truth, beeper history); while the pump runs, apply
controls with ``port.control(command, **args)`` (it takes the port's lock) or over the
wire with ``SimControl``.

The port behaves like a serial device: ``read(max_bytes)`` returns what the board has
sent (waiting at most ``timeout_s`` for the first byte, ``b""`` if nothing came),
``write(data)`` delivers bytes to the board, ``close()``; after ``close`` both raise
``OSError``. Output the host does not read piles up to ``max_buffer`` bytes, then the
oldest is dropped (as a device's buffer overflows; counted in ``overflow_bytes``).
"""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

from firmware_bridge.clock import Clock, ScaledClock

__all__ = ["open_sim", "SimPort"]

_QUERY_KEYS = ("scenario", "seed", "speed", "board_id", "pump", "pump_ms")


class SimPort:
    """A byte port on an in-process virtual board (see the module docstring)."""

    def __init__(self, url: str, board, *, pump: bool = True, pump_s: float = 0.002,
                 timeout_s: float = 0.02, max_buffer: int = 8 << 20) -> None:
        self.url = url
        self.board = board
        self.timeout_s = timeout_s
        self.max_buffer = max_buffer
        self.overflow_bytes = 0
        self._pump_s = pump_s
        self._buf = bytearray()
        self._lock = threading.Lock()  # the board is not thread-safe: one caller at a time
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if pump:
            self._thread = threading.Thread(target=self._pump, name="virtual-board-pump", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ Port interface

    def read(self, max_bytes: int = 65536) -> bytes:
        self._check_open()
        deadline = time.monotonic() + self.timeout_s
        while True:
            with self._cond:
                if self._buf:
                    out = bytes(self._buf[:max_bytes])
                    del self._buf[:max_bytes]
                    return out
            self._poll_once()
            with self._cond:
                if self._buf:
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    self._check_open()
                    return b""
                self._cond.wait(min(left, max(self._pump_s, 0.001)))

    def write(self, data: bytes) -> None:
        self._check_open()
        with self._lock:
            self.board.receive(bytes(data))
            out = self.board.poll()  # answers go out at once (PROTOCOL.md: within 20 ms)
        self._push(out)

    def control(self, command: str, **args) -> None:
        """``board.control`` under the port's lock (safe while the pump thread runs)."""
        self._check_open()
        with self._lock:
            self.board.control(command, **args)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SimPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._error is not None:
            raise OSError(f"virtual board {self.url} failed: {self._error!r}")
        if self._closed:
            raise OSError(f"virtual board port {self.url} is closed")

    def _poll_once(self) -> None:
        with self._lock:
            out = self.board.poll()
        self._push(out)

    def _push(self, out: bytes) -> None:
        if not out:
            return
        with self._cond:
            self._buf += out
            excess = len(self._buf) - self.max_buffer
            if excess > 0:
                del self._buf[:excess]
                self.overflow_bytes += excess
            self._cond.notify_all()

    def _pump(self) -> None:
        while not self._closed:
            try:
                self._poll_once()
            except Exception as exc:  # noqa: BLE001 - reported to the reader as a port failure
                self._error = exc
                with self._cond:
                    self._cond.notify_all()
                return
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(self._pump_s)


def open_sim(url: str = "sim://", clock: Clock | None = None, *, pump: bool | None = None,
             timeout_s: float = 0.02) -> SimPort:
    """Open an in-process virtual board. Raises ``ValueError`` naming the bad part of ``url``."""
    from firmware_bridge.sim.board import VirtualBoard
    from firmware_bridge.sim.scenario import load_scenario

    parts = urlsplit(url)
    if parts.scheme != "sim":
        raise ValueError(f"{url!r} is not a sim:// URL")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(f"{url!r}: unknown parameter {unknown[0]!r}; accepted: {', '.join(_QUERY_KEYS)}")
    q = {k: v[-1] for k, v in query.items()}
    name = q.get("scenario") or (parts.netloc + parts.path).strip("/") or None
    scenario = load_scenario(name) if name else None
    seed = _number(url, q, "seed", int, 0, 2**63 - 1)
    speed = _number(url, q, "speed", float, 1e-3, 1e6)
    pump_ms = _number(url, q, "pump_ms", float, 0.1, 1000.0)
    if "pump" in q and q["pump"] not in ("0", "1"):
        raise ValueError(f"{url!r}: pump must be 0 or 1 (got {q['pump']!r})")
    if pump is None:
        pump = q.get("pump", "1") == "1"
    if clock is None:
        clock = ScaledClock(speed if speed is not None else 1.0)
    board = VirtualBoard(clock, seed=seed, scenario=scenario, board_id=q.get("board_id") or None)
    return SimPort(url, board, pump=pump, pump_s=(pump_ms or 2.0) / 1000.0, timeout_s=timeout_s)


def _number(url: str, q: dict, key: str, kind, lo: float, hi: float):
    if key not in q:
        return None
    try:
        v = kind(q[key])
    except ValueError:
        raise ValueError(f"{url!r}: {key}={q[key]!r} is not a number") from None
    if not lo <= v <= hi:
        raise ValueError(f"{url!r}: {key}={q[key]} out of range {lo:g}-{hi:g}")
    return v
