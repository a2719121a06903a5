"""The UI's link to the engine: every byte of socket I/O happens off the UI thread.

Owns: ``EngineLink``, which wraps ``app.api.client.EngineClient`` (its own reader and
reconnect threads) with a sender thread and two queues, so that the UI thread never
waits for the engine:

- ``send(cmd, on_done, **args)`` only puts the command in the outbox and returns;
- the sender thread writes it to the socket (``call_async``); the reply arrives on the
  client's reader thread, which only appends it to the done queue;
- the UI calls ``pump()`` from its frame clock: it runs the ``on_done`` callbacks of the
  replies that arrived (so they run on the UI thread), fails the commands whose reply is
  late (``timeout``), and returns the stream messages received since the last call.

Safety: a command that could not be sent within ``max_age_s`` of being asked for, or that
is asked for while the engine is silent (stalled), is dropped with a clear refusal rather
than written to a socket the engine may read much later (a "+ mA" touched during a stall
must not take effect half a minute later).

``health()`` says plainly whether the engine answers: ``connected``, ``connecting``
(never reached yet), ``down`` (connection lost; reconnecting by itself) or ``stalled``
(connected but silent for ``stale_s`` although the state stream runs at several Hz).

May import: the standard library and ``app.api.client``. No Kivy: the link is tested
without a display.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from app.api.client import EngineClient, EngineUnavailable

DEFAULT_STREAMS = ("state", "events", "measurements", "waveforms", "emg", "alarms", "inbox")

# Commands that legitimately take long (PDF, USB copy): their own reply deadline.
SLOW_COMMANDS = {"report.get": 60.0, "export.usb": 120.0, "case.close": 20.0, "selftest.run": 15.0}


@dataclass
class Reply:
    """The outcome of one command, as the UI sees it."""

    cmd: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    message: str = ""
    error: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pending:
    cmd: str
    args: dict[str, Any]
    on_done: Callable[[Reply], None] | None
    asked_at: float
    timeout_s: float
    sent_at: float | None = None
    done: bool = False


@dataclass
class Health:
    """Whether the engine answers, in a word and a sentence (see the module docstring)."""

    state: str  # connected | connecting | down | stalled
    message: str
    since: float  # monotonic time this state began
    silent_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "connected"


class EngineLink:
    """Non-blocking access to the engine for a UI frame loop (see the module docstring)."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        name: str = "ui",
        streams: tuple[str, ...] = DEFAULT_STREAMS,
        state_hz: float = 5.0,
        timeout_s: float = 5.0,
        max_age_s: float = 4.0,
        stale_s: float = 2.5,
        retry_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        client: EngineClient | None = None,
    ) -> None:
        self.client = client or EngineClient(socket_path, name=name, reconnect=True, retry_s=retry_s,
                                             timeout_s=2.0, queue_size=5000)
        self.streams = tuple(streams)
        self.state_hz = state_hz
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.stale_s = stale_s
        self._now = monotonic
        self._outbox: queue.Queue[_Pending | None] = queue.Queue(maxsize=200)
        self._done: collections.deque[tuple[_Pending, Reply]] = collections.deque()
        self._inflight: list[_Pending] = []
        self._inflight_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._stop = threading.Event()
        t = self._now()
        self._connected = False
        self._ever_connected = False
        self._last_rx = t
        self._health = Health("connecting", f"connecting to the engine on {self.client.path} ...", t)
        self.hello: dict[str, Any] = {}
        self.history: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=100)  # health changes
        self.sent = 0
        self.refused_stale = 0

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Connect and keep reconnecting in the background; never blocks, never raises."""
        self._stop.clear()
        if not self.client.connected:
            # not connected yet: the client only remembers the subscription and sends it on
            # every (re)connection from its own thread (no I/O here)
            self.client.subscribe(self.streams, state_hz=self.state_hz)
        self.client.start()
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._send_loop, name="lnm-ui-sender", daemon=True)
            self._sender.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._outbox.put_nowait(None)
        except queue.Full:
            pass
        self.client.close()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(timeout=2.0)

    @property
    def path(self) -> Path:
        return self.client.path

    # ------------------------------------------------------------------ commands

    def send(self, cmd: str, on_done: Callable[[Reply], None] | None = None, /, **args: Any) -> None:
        """Queue a command; ``on_done(Reply)`` later runs inside ``pump()`` (the UI thread)."""
        pend = _Pending(cmd, dict(args), on_done, self._now(), SLOW_COMMANDS.get(cmd, self.timeout_s))
        try:
            self._outbox.put_nowait(pend)
        except queue.Full:
            self._finish(pend, Reply(cmd, False, code="busy",
                                     message="This was not sent: too many commands are waiting for the engine."))

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            pend = self._outbox.get()
            if pend is None:
                continue
            now = self._now()
            age = now - pend.asked_at
            if self._connected and now - self._last_rx > self.stale_s:
                # the engine is silent: a command written now could be executed much later
                self.refused_stale += 1
                self._finish(pend, Reply(pend.cmd, False, code="not_sent", message=(
                    "This was NOT sent: the engine is not responding. "
                    "Check the engine status and try again.")))
                continue
            if age > self.max_age_s:
                self.refused_stale += 1
                self._finish(pend, Reply(pend.cmd, False, code="not_sent", message=(
                    f"This was NOT sent: the engine did not take it within {self.max_age_s:g} s. "
                    "Check the engine status and try again.")))
                continue
            pend.sent_at = self._now()
            with self._inflight_lock:
                self._inflight.append(pend)
            try:
                def on_reply(reply: dict[str, Any], p: Any = pend) -> None:
                    self._on_reply(p, reply)

                self.client.call_async(pend.cmd, on_reply, **pend.args)
                self.sent += 1
            except EngineUnavailable as exc:
                self._finish(pend, Reply(pend.cmd, False, code="engine_unavailable",
                                         message=f"This was not sent: the engine is not available ({exc})."))

    def _on_reply(self, pend: _Pending, msg: dict[str, Any]) -> None:  # client's reader thread
        if msg.get("ok"):
            reply = Reply(pend.cmd, True, result=dict(msg.get("result") or {}))
        else:
            err = dict(msg.get("error") or {})
            code = str(err.get("code", "internal"))
            message = str(err.get("message", "refused"))
            if code == "disconnected":
                message = f"The connection to the engine was lost before it answered ({message})."
            reply = Reply(pend.cmd, False, code=code, message=message, error=err)
        self._finish(pend, reply)

    def _finish(self, pend: _Pending, reply: Reply) -> None:
        with self._inflight_lock:
            if pend.done:
                return
            pend.done = True
            if pend in self._inflight:
                self._inflight.remove(pend)
        self._done.append((pend, reply))

    # ------------------------------------------------------------------ UI thread

    def pump(self, max_messages: int = 2000,
             on_error: Callable[[Exception, str], None] | None = None) -> list[dict[str, Any]]:
        """Run finished commands' callbacks, time out late ones, return new stream messages.

        A callback that raises is passed to ``on_error(exc, cmd)`` (the others still run);
        without ``on_error`` the exception propagates."""
        now = self._now()
        with self._inflight_lock:
            late = [p for p in self._inflight if p.sent_at is not None and now - p.sent_at > p.timeout_s]
        for pend in late:
            self._finish(pend, Reply(pend.cmd, False, code="timeout", message=(
                f"The engine did not answer within {pend.timeout_s:g} s; "
                "it may be overloaded or stopped")))
        while self._done:
            pend, reply = self._done.popleft()
            if pend.on_done is None:
                continue
            try:
                pend.on_done(reply)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc, pend.cmd)
        msgs = self.client.poll(max_messages)
        for msg in msgs:
            if msg.get("type") == "connection":
                self._connected = bool(msg.get("connected"))
                if self._connected:
                    self._ever_connected = True
                    self.hello = dict(msg.get("hello") or {})
                    self._set_health("connected", "engine connected", now)
                else:
                    self._set_health("down" if self._ever_connected else "connecting",
                                     str(msg.get("message") or "the engine is not available"), now)
            self._last_rx = now
        if self._connected:
            silent = now - self._last_rx
            if silent > self.stale_s:
                self._set_health("stalled", f"the engine is not responding (no data for {silent:.0f} s)", now)
                self._health.message = f"the engine is not responding (no data for {silent:.0f} s)"
                self._health.silent_s = silent
            elif self._health.state == "stalled":
                self._set_health("connected", "engine answering again", now)
        return msgs

    def _set_health(self, state: str, message: str, now: float) -> None:
        if self._health.state != state:
            self._health = Health(state, message, now)
            self.history.append((now, state, message))
        else:
            self._health.message = message

    def health(self) -> Health:
        return self._health

    def waiting(self) -> int:
        """Commands asked for and not answered yet."""
        with self._inflight_lock:
            return self._outbox.qsize() + len(self._inflight)
