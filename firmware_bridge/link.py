"""The supervised board link: heartbeats both ways, loss detection, reconnection, and
validation of everything the board sends.

Owns: ``LinkSupervisor`` (pure supervision logic: no I/O, threads or clock of its own,
shared by the threaded link and by single-threaded stepped simulations), ``Receiver``
(the pure receive path: codec, ``FrameValidator``, health counters, the invalid-data
burst), ``LinkEvent``, and ``BoardLink``, the thin threaded shell around a port, the
receiver and the supervisor.
May import: the standard library, ``firmware_bridge.messages``, ``.codec``, ``.validate``,
``.transport`` and ``.clock``.

``BoardLink`` threads:

- the *reader* moves bytes from the port into the ``Decoder`` and hands out the decoded
  messages; it also reopens the port, with backoff, after a port error (a device
  unplugged raises ``OSError`` on read: that never kills the link);
- the *supervisor* sends ``HostHeartbeat`` every ``heartbeat_s`` and declares the link
  lost after ``timeout_s`` without a valid board frame (restored on the next one).

Delivery: ``on_message(message)`` and ``on_event(LinkEvent)`` are called from the link's
threads (messages from the reader, in order); keep them short and never call
``request()`` from them. Without a callback, messages go to ``link.messages`` and events
to ``link.events`` (``queue.Queue``; the message queue is bounded and drops its oldest
entry when full, counted as ``inbox_dropped``). Bad frames are counted and dropped,
never raised.

After a reconnection (event ``restored`` or ``port_opened``) the link says Hello again
by itself (``capabilities`` is refreshed); configuring acquisition again is the caller's
business, since only it knows what it wants.

Trust nothing (PROTOCOL.md section 12): every decoded frame goes through the
``FrameValidator`` before ``on_message`` sees it. Duplicates, replays and invalid frames
are dropped and counted by reason (``health()``); ``invalid_burst_count`` of them within
``invalid_burst_window_s`` raise the event ``invalid_data`` ("board sends invalid data:
..."), and as long again without one, ``data_valid``. A board whose protocol version or
capabilities this host does not support is refused (event ``incompatible``, naming what
it claimed and what is supported): nothing it sends but answers reaches ``on_message``,
and ``send`` refuses Stimulate (other than STOP) and ConfigureAcquisition with
``BoardRefused``. Stimulate other than STOP also waits for accepted Capabilities
(``BoardNotReady``). A board that restarts on the same port (frame numbering from 0) is
reported (``board_restarted``) and greeted with Hello again.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any
from collections.abc import Callable

from firmware_bridge.clock import Clock, MonotonicClock
from firmware_bridge.codec import SEQ_MODULO, Decoder, encode
from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    Ack,
    Capabilities,
    ConfigureAcquisition,
    Hello,
    HostHeartbeat,
    Nack,
    Output,
    StimMode,
    Stimulate,
)
from firmware_bridge.transport import Port, PortError, clock_for_url, open_port
from firmware_bridge.validate import HOST_SUPPORT, FrameValidator, HostSupport, Verdict

log = logging.getLogger("lnm.link")


# ----------------------------------------------------------------------------- events


class LinkEventKind(enum.StrEnum):
    """What a ``LinkEvent`` reports (the value is the word the engine sees)."""

    CONNECTED = "connected"  # first valid frame from the board
    LOST = "lost"  # no valid board frame for timeout_s, or the port failed
    RESTORED = "restored"  # a valid frame again after LOST
    PORT_OPENED = "port_opened"
    PORT_ERROR = "port_error"  # the port could not be opened, or failed; detail names the URL
    INVALID_DATA = "invalid_data"  # a burst of invalid frames: "board sends invalid data: <reason>"
    DATA_VALID = "data_valid"  # no invalid frame for the burst window after INVALID_DATA
    INCOMPATIBLE = "incompatible"  # the board was refused: what it claimed, what is supported
    BOARD_ACCEPTED = "board_accepted"  # a board refused before answered with supported capabilities
    BOARD_RESTARTED = "board_restarted"  # the board restarted on the same port (numbering from 0)


@dataclass(frozen=True)
class LinkEvent:
    """One thing that happened to the link, at clock time ``t``. ``detail`` is a sentence
    for a person; ``data`` the same as JSON-ready values (reason, counts, claims)."""

    kind: LinkEventKind
    t: float  # clock seconds
    detail: str = ""
    data: dict[str, Any] | None = field(default=None, hash=False, compare=False)


# ----------------------------------------------------------------------------- pure supervision


class LinkSupervisor:
    """Heartbeat schedule and link-loss detection. Pure: the caller passes ``now``.

    States: *waiting* (nothing heard yet), *up*, *lost*. ``check(now)`` reports LOST once
    the board has been silent for ``timeout_s`` (also when it never spoke at all since
    ``reset``); the next ``frame_received`` reports CONNECTED (first time) or RESTORED.
    Not thread-safe: the caller serialises access.
    """

    def __init__(self, heartbeat_s: float = 0.1, timeout_s: float = 0.5, now: float = 0.0) -> None:
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat period must be > 0 s (got {heartbeat_s})")
        if not timeout_s > heartbeat_s:
            raise ValueError(f"link timeout ({timeout_s} s) must exceed the heartbeat period ({heartbeat_s} s)")
        self.heartbeat_s = float(heartbeat_s)
        self.timeout_s = float(timeout_s)
        self._ever_connected = False
        self._state = "waiting"
        self._lost_at: float | None = None
        self.reset(now)

    def reset(self, now: float) -> None:
        """A new connection attempt: silence is counted from ``now``; the state becomes
        *waiting* unless the link was already lost (a loss is not forgotten)."""
        self._since = now
        self._last_rx: float | None = None
        self._next_hb = now
        if self._state != "lost":
            self._state = "waiting"

    @property
    def state(self) -> str:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "up"

    def silence_s(self, now: float) -> float:
        """Seconds since the last valid board frame (or since ``reset``)."""
        return now - (self._last_rx if self._last_rx is not None else self._since)

    def frame_received(self, now: float) -> list[LinkEvent]:
        self._last_rx = now
        if self._state == "up":
            return []
        was = self._state
        self._state = "up"
        if was == "lost" or self._ever_connected:
            lost_for = f" after {now - self._lost_at:.3f} s" if self._lost_at is not None else ""
            return [LinkEvent(LinkEventKind.RESTORED, now, f"board frames again{lost_for}")]
        self._ever_connected = True
        return [LinkEvent(LinkEventKind.CONNECTED, now, "first frame from the board")]

    def heartbeat_due(self, now: float) -> bool:
        return now >= self._next_hb

    def heartbeat_sent(self, now: float) -> None:
        nxt = self._next_hb + self.heartbeat_s
        # keep a steady cadence; after a stall, restart it from now instead of bursting
        self._next_hb = nxt if nxt > now else now + self.heartbeat_s

    def next_due(self) -> float:
        """Clock time of the next thing to do: the next heartbeat, or the loss deadline."""
        due = self._next_hb
        if self._state != "lost":
            ref = self._last_rx if self._last_rx is not None else self._since
            due = min(due, ref + self.timeout_s)
        return due

    def check(self, now: float) -> list[LinkEvent]:
        if self._state == "lost":
            return []
        silence = self.silence_s(now)
        if silence < self.timeout_s:
            return []
        self._state = "lost"
        self._lost_at = now
        if self._last_rx is None and not self._ever_connected:
            detail = f"no frame from the board within {self.timeout_s * 1000:.0f} ms"
        else:
            detail = f"no frame from the board for {silence * 1000:.0f} ms"
        return [LinkEvent(LinkEventKind.LOST, now, detail)]

    def port_lost(self, now: float, reason: str) -> list[LinkEvent]:
        """The port failed: the link is lost at once (no need to wait for the timeout)."""
        if self._state == "lost":
            return []
        self._state = "lost"
        self._lost_at = now
        return [LinkEvent(LinkEventKind.LOST, now, f"port failed: {reason}")]


# ----------------------------------------------------------------------------- errors


class LinkError(Exception):
    """Base of the link's errors."""


class LinkDown(LinkError):
    """The port is not open (the board is unplugged or the link is reconnecting)."""


class RequestTimeout(LinkError, TimeoutError):
    """The board did not answer a request in time."""


class ProtocolError(LinkError):
    """The board speaks another protocol version or refused the handshake."""


class BoardRefused(LinkDown):
    """The board was refused (unsupported protocol version or capabilities): nothing but
    Stimulate STOP is sent to it."""


class BoardNotReady(LinkDown):
    """Stimulation waits for the board's Capabilities (answer to Hello) to be accepted."""


# ----------------------------------------------------------------------------- pure receive path


class InvalidBurst:
    """``count`` invalid frames within ``window_s`` seconds raise INVALID_DATA once; a
    whole window without one clears it (DATA_VALID). Pure: the caller passes ``now``."""

    def __init__(self, count: int = 3, window_s: float = 10.0) -> None:
        if count < 1 or not window_s > 0:
            raise ValueError(f"invalid-data burst needs count >= 1 and window > 0 s (got {count}, {window_s})")
        self.count = int(count)
        self.window_s = float(window_s)
        self._times: deque[float] = deque()
        self._last: float | None = None
        self.active = False

    def note(self, now: float, text: str, reason: str) -> list[LinkEvent]:
        self._last = now
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if self.active or len(self._times) < self.count:
            return []
        self.active = True
        n = len(self._times)
        return [LinkEvent(LinkEventKind.INVALID_DATA, now,
                          f"board sends invalid data: {text} ({n} invalid frames within {self.window_s:g} s)",
                          {"reason": reason, "text": text, "count": n, "window_s": self.window_s})]

    def check(self, now: float) -> list[LinkEvent]:
        if not self.active or self._last is None or now - self._last < self.window_s:
            return []
        self.active = False
        self._times.clear()
        return [LinkEvent(LinkEventKind.DATA_VALID, now,
                          f"board data valid again (no invalid frame for {self.window_s:g} s)", {})]


_NOTICE_KINDS = {
    "board_restarted": LinkEventKind.BOARD_RESTARTED,
    "incompatible": LinkEventKind.INCOMPATIBLE,
    "board_accepted": LinkEventKind.BOARD_ACCEPTED,
}


class Receiver:
    """The receive path without threads: bytes -> ``Decoder`` -> ``FrameValidator`` ->
    verdicts, with the link's health counters and the invalid-data burst.

    ``feed(data, now)`` returns ``(verdicts, events)``: a verdict per decoded frame in
    order (pass on only ``accepted`` ones), and the events to report. ``sent(seq, msg)``
    for every host frame, ``reset()`` on a new connection, ``tick(now)`` now and then (it
    ends an invalid-data burst). Not thread-safe: the caller serialises access.
    """

    RECENT = 8  # rejections kept for the health snapshot

    def __init__(self, support: HostSupport = HOST_SUPPORT, *, invalid_burst_count: int = 3,
                 invalid_burst_window_s: float = 10.0) -> None:
        self.decoder = Decoder()
        self.validator = FrameValidator(support)
        self.burst = InvalidBurst(invalid_burst_count, invalid_burst_window_s)
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.RECENT)

    def reset(self) -> None:
        self.decoder.reset()
        self.validator.reset()

    def sent(self, seq: int, message: object) -> None:
        self.validator.sent(seq, message)

    def feed(self, data: bytes, now: float) -> tuple[list[Verdict], list[LinkEvent]]:
        frames = self.decoder.feed(data)
        events: list[LinkEvent] = []
        for rej in self.decoder.take_rejections():  # intact frames the codec refused
            self.validator.count_rejected(rej.reason)
            text = f"{rej.reason.replace('_', ' ')} frame" + (f" ({rej.detail})" if rej.detail else "")
            events += self._invalid(now, rej.reason, text)
        verdicts: list[Verdict] = []
        check = self.validator.check
        for frame in frames:
            try:
                checked = check(frame, now)
            except Exception as exc:  # noqa: BLE001 - a defect in a rule must not kill the reader
                log.exception("board link: frame validation failed")
                self.validator.count_rejected("malformed")
                checked = [Verdict(frame.seq, frame.message, False, "invalid", "malformed",
                                   f"cannot be checked ({type(exc).__name__})")]
            verdicts += checked
            for v in checked:
                if not v.accepted and v.category != "refused":
                    events += self._invalid(now, v.reason or v.category, v.text)
        for notice in self.validator.take_notices():
            events.append(LinkEvent(_NOTICE_KINDS[notice.kind], now, notice.detail, dict(notice.data)))
        return verdicts, events

    def _invalid(self, now: float, reason: str, text: str) -> list[LinkEvent]:
        self.recent.append({"t": round(now, 3), "reason": reason, "text": text})
        return self.burst.note(now, text, reason)

    def tick(self, now: float) -> list[LinkEvent]:
        return self.burst.check(now)

    def snapshot(self) -> dict[str, Any]:
        """The receive side's counters, JSON-ready (see ``BoardLink.health``)."""
        c = self.decoder.counters
        st = self.validator.stats
        v = self.validator
        caps = v.capabilities
        return {
            "frames_ok": st["accepted"],
            "frames_decoded": c.frames,
            "crc_errors": c.bad_crc + c.bad_header_crc,
            "resyncs": c.resyncs,
            "oversize": c.too_long,
            "truncated": c.truncated,
            "bytes_in": c.bytes_in,
            "bytes_discarded": c.bytes_discarded,
            "invalid": st["invalid"],
            "invalid_by_reason": dict(st["invalid_by_reason"]),
            "duplicates": st["duplicate"],
            "replayed": st["replayed"],
            "refused_frames": st["refused"],
            "gaps": {k: st[k] for k in ("frames_missed", "epochs_missed", "emg_samples_missed", "heartbeats_missed")},
            "board_restarts": st["board_restarts"],
            "stray_frames": st["stray_frames"],
            "invalid_burst": self.burst.active,
            "recent_rejections": list(self.recent),
            "board": {
                "state": v.board_state,
                "refusal": v.refusal or None,
                "board_id": caps.board_id if caps else None,
                "firmware": caps.firmware_version if caps else None,
                "protocol_version": caps.protocol_version if caps else None,
                "config_token": bool(caps.config_token) if caps else None,
                "simulated": bool(caps.simulated) if caps else None,
            },
        }


# ----------------------------------------------------------------------------- threaded link


class _Waiter:
    __slots__ = ("event", "answer", "error", "is_hello")

    def __init__(self, is_hello: bool) -> None:
        self.event = threading.Event()
        self.answer: Ack | Nack | Capabilities | None = None
        self.error: LinkError | None = None
        self.is_hello = is_hello


class BoardLink:
    """The supervised link to one board, opened by URL or by a port factory."""

    def __init__(
        self,
        url: str | None = None,
        *,
        port_factory: Callable[[], Port] | None = None,
        clock: Clock | None = None,
        heartbeat_s: float = 0.1,
        timeout_s: float = 0.5,
        on_message: Callable[[object], None] | None = None,
        on_event: Callable[[LinkEvent], None] | None = None,
        read_timeout_s: float = 0.02,
        tick_s: float = 0.05,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        hello_on_connect: bool = True,
        host_name: str = "lnm",
        inbox_size: int = 10000,
        support: HostSupport = HOST_SUPPORT,
        invalid_burst_count: int = 3,
        invalid_burst_window_s: float = 10.0,
    ) -> None:
        """``clock``: the link's time line (default: real time; for ``sim://...?speed=X``
        a ``ScaledClock(X)`` shared with the virtual board). ``support``: what this host
        accepts of a board; ``invalid_burst_*``: how many invalid frames within how many
        seconds make the ``invalid_data`` event (PROTOCOL.md section 12)."""
        if (url is None) == (port_factory is None):
            raise ValueError("give the board link either a URL or a port factory")
        self.url = url if url is not None else getattr(port_factory, "url", repr(port_factory))
        if clock is None:
            clock = clock_for_url(url) if url is not None else MonotonicClock()
        self.clock: Clock = clock
        if port_factory is None:
            port_factory = lambda: open_port(self.url, timeout_s=read_timeout_s, clock=self.clock)  # noqa: E731
        self._factory = port_factory
        self._on_message = on_message
        self._on_event = on_event
        self.messages: queue.Queue = queue.Queue(maxsize=inbox_size)
        self.events: queue.Queue = queue.Queue()
        self._tick_s = tick_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._hello_on_connect = hello_on_connect
        self.host_name = host_name

        self._sup = LinkSupervisor(heartbeat_s, timeout_s, self.clock.now())
        self._sup_lock = threading.Lock()
        self._tx_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._hello_waiters: deque[_Waiter] = deque()
        self._rx = Receiver(support, invalid_burst_count=invalid_burst_count,
                            invalid_burst_window_s=invalid_burst_window_s)
        self._rx_lock = threading.Lock()  # the receive path and its counters (health() reads them)
        self._decoder: Decoder = self._rx.decoder
        self._started_at: float | None = None
        self._up_since: float | None = None
        self._port: Port | None = None
        self._tx_seq = 0
        self._hb_counter = 0
        self._alarm_active = False
        self._hb_paused = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reader_ident: int | None = None
        self._rehello_at: float | None = None
        self._rehello_backoff = timeout_s
        self.capabilities: Capabilities | None = None
        self.last_error: str | None = None
        self._c = {
            "tx_frames": 0,
            "tx_bytes": 0,
            "heartbeats_sent": 0,
            "port_opens": 0,
            "port_errors": 0,
            "lost": 0,
            "restored": 0,
            "request_timeouts": 0,
            "callback_errors": 0,
            "inbox_dropped": 0,
            "tokens_stripped": 0,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> BoardLink:
        """Open the port (errors become a ``port_error`` event; retried with backoff) and
        start the reader and supervisor threads."""
        if self._threads:
            raise LinkError("board link already started")
        self._started_at = self.clock.now()
        self._try_open()
        self._threads = [
            threading.Thread(target=self._reader_loop, name="board-link-reader", daemon=True),
            threading.Thread(target=self._supervisor_loop, name="board-link-supervisor", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        port, self._port = self._port, None
        if port is not None:
            _close_quietly(port)
        self._fail_pending(LinkDown(f"board link {self.url!r} closed"))

    def __enter__(self) -> BoardLink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True while valid board frames arrive (the supervisor's *up* state)."""
        with self._sup_lock:
            return self._sup.connected

    @property
    def port_open(self) -> bool:
        return self._port is not None

    def threads(self) -> list[threading.Thread]:
        """The link's reader and supervisor threads (empty before ``start``), for the
        engine's thread supervision."""
        return list(self._threads)

    @property
    def counters(self) -> dict[str, Any]:
        """Receive counters of the decoder (frames, bad_crc, resyncs, seq_gaps, ...), the
        validator's (frames_ok, invalid, duplicate, replayed, ...) and the link's own
        (tx_frames, heartbeats_sent, port_errors, lost, ...). See also ``health()``."""
        with self._rx_lock:
            out = self._decoder.counters.as_dict()
            st = self._rx.validator.stats
            out.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in st.items() if k not in out
                        and k != "accepted"})
            out["frames_ok"] = st["accepted"]
        out.update(self._c)
        return out

    def health(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the link's health: frames ok, CRC errors, resyncs,
        oversize and truncated headers, invalid frames by reason, duplicates, replays,
        gaps (frames, stimulus epochs, EMG samples, heartbeats), bytes, uptime, the board
        (accepted or refused, and why) and the last rejections. Cheap and thread-safe."""
        now = self.clock.now()
        with self._rx_lock:
            out = self._rx.snapshot()
        with self._sup_lock:
            state = self._sup.state
        c = self._c
        out.update({
            "url": self.url,
            "state": state,
            "connected": state == "up",
            "port_open": self._port is not None,
            "uptime_s": round(now - self._started_at, 3) if self._started_at is not None else 0.0,
            "connected_s": round(now - self._up_since, 3) if self._up_since is not None and state == "up" else 0.0,
            "bytes_out": c["tx_bytes"],
            "frames_out": c["tx_frames"],
            "lost": c["lost"],
            "restored": c["restored"],
            "port_errors": c["port_errors"],
            "request_timeouts": c["request_timeouts"],
            "callback_errors": c["callback_errors"],
            "inbox_dropped": c["inbox_dropped"],
            "tokens_stripped": c["tokens_stripped"],
        })
        return out

    @property
    def board_state(self) -> str:
        """``unknown`` (no accepted Capabilities on this connection yet), ``accepted`` or
        ``refused``."""
        with self._rx_lock:
            return self._rx.validator.board_state

    @property
    def supports_config_token(self) -> bool:
        """True when the board speaks protocol 1.1 (echoes Stimulate.config_token)."""
        caps = self.capabilities
        return bool(caps is not None and caps.config_token and self.board_state == "accepted")

    def send(self, message: object) -> int:
        """Send one message; returns its sequence number. Raises ``LinkDown`` when the port
        is not open, ``ValueError``/``TypeError`` for a message that cannot be encoded."""
        return self._send(message, None)

    def request(self, message: object, timeout_s: float = 1.0) -> Ack | Nack | Capabilities:
        """Send ``message`` and wait for its answer: the Ack or Nack naming its sequence
        number (Capabilities for a Hello). Raises ``RequestTimeout`` when none comes within
        ``timeout_s`` (on the link's clock, or in real time, whichever passes first) and
        ``LinkDown`` when the port is not open or fails meanwhile."""
        if threading.get_ident() == self._reader_ident:
            raise LinkError("request() called from the link's reader thread (an on_message callback)")
        if isinstance(message, HostHeartbeat):
            raise ValueError("HostHeartbeat is never answered; use send()")
        waiter = _Waiter(is_hello=isinstance(message, Hello))
        seq = self._send(message, waiter)
        deadline = self.clock.now() + timeout_s
        real_left = timeout_s
        step = min(self._tick_s, timeout_s) if timeout_s > 0 else 0
        try:
            while not waiter.event.wait(step):
                real_left -= step
                if self.clock.now() >= deadline or real_left <= 0:
                    self._c["request_timeouts"] += 1
                    raise RequestTimeout(
                        f"no answer from the board ({self.url}) to {type(message).__name__} "
                        f"(seq {seq}) within {timeout_s * 1000:.0f} ms"
                    )
        finally:
            with self._pending_lock:
                self._pending.pop(seq, None)
                if waiter in self._hello_waiters:
                    self._hello_waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.answer  # type: ignore[return-value]

    def handshake(self, timeout_s: float = 1.0) -> Capabilities:
        """Hello -> Capabilities; checks the protocol version. Raises ``ProtocolError``."""
        answer = self.request(Hello(protocol_version=PROTOCOL_VERSION, host_name=self.host_name), timeout_s)
        if isinstance(answer, Nack):
            raise ProtocolError(
                f"the board ({self.url}) refused Hello: {answer.reason.name} {answer.detail}".rstrip()
            )
        if not isinstance(answer, Capabilities):
            raise ProtocolError(f"the board ({self.url}) answered Hello with {type(answer).__name__}")
        if answer.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"the board ({self.url}, firmware {answer.firmware_version}) speaks protocol "
                f"version {answer.protocol_version}; this host speaks {PROTOCOL_VERSION}"
            )
        with self._rx_lock:
            state, refusal = self._rx.validator.board_state, self._rx.validator.refusal
        if state == "refused":
            raise ProtocolError(f"the board ({self.url}) is not supported: {refusal}")
        self.capabilities = answer
        return answer

    def wait_connected(self, timeout_s: float = 2.0) -> bool:
        """Wait (real time) until the board has been heard; True if it was."""
        end = threading.Event()
        left = timeout_s
        while left > 0:
            if self.connected:
                return True
            end.wait(min(self._tick_s, left))
            left -= self._tick_s
        return self.connected

    def set_alarm_active(self, active: bool) -> None:
        """Carried by the next heartbeats (informational for the board)."""
        self._alarm_active = bool(active)

    def pause_heartbeat(self) -> None:
        """Stop sending HostHeartbeat (to test the board's safety contract)."""
        self._hb_paused = True

    def resume_heartbeat(self) -> None:
        self._hb_paused = False

    def supervise_once(self) -> None:
        """One supervision step at ``clock.now()``: loss check, heartbeat, re-Hello.
        The supervisor thread calls it every ``tick_s``; tests on a ManualClock may too."""
        now = self.clock.now()
        with self._rx_lock:
            burst = self._rx.tick(now)
        self._emit(burst)
        with self._sup_lock:
            events = self._sup.check(now)
            hb_due = self._port is not None and not self._hb_paused and self._sup.heartbeat_due(now)
            if hb_due:
                self._sup.heartbeat_sent(now)
            lost = self._sup.state == "lost"
        self._emit(events)
        if hb_due:
            counter = self._hb_counter
            self._hb_counter = (counter + 1) % SEQ_MODULO
            try:
                self._send(HostHeartbeat(counter=counter, alarm_active=self._alarm_active), None)
                self._c["heartbeats_sent"] += 1
            except LinkDown:
                pass
        # while the board is silent on an open port, say Hello again now and then (a
        # rebooted board answers; a frozen one does not) with backoff
        if lost and self._port is not None and self._hello_on_connect:
            if self._rehello_at is None:
                self._rehello_at = now + self._rehello_backoff
            elif now >= self._rehello_at:
                self._rehello_backoff = min(self._rehello_backoff * 2, self._reconnect_max_s)
                self._rehello_at = now + self._rehello_backoff
                self._send_hello_quietly()
        elif not lost:
            self._rehello_at = None
            self._rehello_backoff = self._sup.timeout_s

    # ------------------------------------------------------------------ internals

    def _gate(self, message: object) -> object:
        """What may go to the board now (PROTOCOL.md section 12): raises ``BoardRefused``
        / ``BoardNotReady``; strips a configuration token a 1.0 board would not parse."""
        if isinstance(message, Stimulate) and message.mode is not StimMode.STOP:
            v = self._rx.validator
            if v.board_state == "refused":
                raise BoardRefused(f"not stimulating: the board ({self.url}) is not supported: {v.refusal}")
            if v.board_state != "accepted":
                raise BoardNotReady(f"not stimulating yet: the board ({self.url}) has not answered Hello "
                                    "with supported capabilities")
        elif isinstance(message, ConfigureAcquisition) and self._rx.validator.board_state == "refused":
            raise BoardRefused(f"not configuring acquisition: the board ({self.url}) is not supported: "
                               f"{self._rx.validator.refusal}")
        if isinstance(message, Stimulate) and message.config_token is not None:
            caps = self._rx.validator.capabilities
            if caps is None or not caps.config_token:
                self._c["tokens_stripped"] += 1
                message = replace(message, config_token=None)
        return message

    def _send(self, message: object, waiter: _Waiter | None) -> int:
        with self._tx_lock:
            port = self._port
            if port is None:
                why = f" ({self.last_error})" if self.last_error else ""
                raise LinkDown(f"board port {self.url!r} is not open{why}")
            with self._rx_lock:
                message = self._gate(message)
            seq = self._tx_seq
            frame = encode(message, seq)
            self._tx_seq = (seq + 1) % SEQ_MODULO
            with self._rx_lock:
                self._rx.sent(seq, message)
            if waiter is not None:
                with self._pending_lock:
                    self._pending[seq] = waiter
                    if waiter.is_hello:
                        self._hello_waiters.append(waiter)
            try:
                port.write(frame)
            except OSError as exc:
                failed = exc
            else:
                self._c["tx_frames"] += 1
                self._c["tx_bytes"] += len(frame)
                return seq
        self._port_failed(port, failed)
        raise LinkDown(f"board port {self.url!r}: write failed ({failed})") from failed

    def _send_hello_quietly(self) -> None:
        try:
            self._send(Hello(protocol_version=PROTOCOL_VERSION, host_name=self.host_name), None)
        except (LinkDown, ValueError):
            pass

    def _try_open(self) -> bool:
        try:
            port = self._factory()
        except (OSError, ValueError) as exc:
            msg = str(exc) if self.url in str(exc) else f"cannot open board port {self.url!r}: {exc}"
            if msg != self.last_error:
                self._emit([LinkEvent(LinkEventKind.PORT_ERROR, self.clock.now(), msg)])
            self.last_error = msg
            self._c["port_errors"] += 1
            return False
        with self._tx_lock:
            self._port = port
            self._tx_seq = 0  # each direction counts from 0 when the port opens (PROTOCOL.md §4)
            with self._rx_lock:
                self._rx.reset()
        self.capabilities = None  # another board may be on the port now: it must say again
        self.last_error = None
        self._c["port_opens"] += 1
        now = self.clock.now()
        with self._sup_lock:
            self._sup.reset(now)
        self._emit([LinkEvent(LinkEventKind.PORT_OPENED, now, self.url)])
        if self._hello_on_connect:
            self._send_hello_quietly()
        return True

    def _port_failed(self, port: Port, exc: BaseException) -> None:
        with self._tx_lock:
            if self._port is not port:
                return  # already handled
            self._port = None
        _close_quietly(port)
        msg = str(exc) if self.url in str(exc) else f"board port {self.url!r}: {exc}"
        self.last_error = msg
        self._c["port_errors"] += 1
        now = self.clock.now()
        with self._sup_lock:
            events = self._sup.port_lost(now, msg)
        self._emit([LinkEvent(LinkEventKind.PORT_ERROR, now, msg), *events])
        self._fail_pending(LinkDown(msg))

    def _fail_pending(self, error: LinkError) -> None:
        with self._pending_lock:
            waiters = list(self._pending.values())
            self._pending.clear()
            self._hello_waiters.clear()
        for w in waiters:
            w.error = error
            w.event.set()

    def _reader_loop(self) -> None:
        self._reader_ident = threading.get_ident()
        backoff = self._reconnect_min_s
        while not self._stop.is_set():
            port = self._port
            if port is None:
                if self._try_open():
                    backoff = self._reconnect_min_s
                else:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._reconnect_max_s)
                continue
            try:
                data = port.read(65536)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # OSError: unplugged / closed; the others: pyserial racing a close
                if not self._stop.is_set():
                    self._port_failed(port, exc if isinstance(exc, OSError) else PortError(repr(exc)))
                continue
            if data:
                self._receive(data)

    def _receive(self, data: bytes) -> None:
        now = self.clock.now()
        with self._rx_lock:
            verdicts, rx_events = self._rx.feed(data, now)
        # the board is talking (even nonsense: that is invalid data, not a lost link);
        # duplicates and replays prove nothing about the board
        alive = any(v.accepted or v.category in ("refused", "invalid") for v in verdicts)
        events: list[LinkEvent] = []
        if alive:
            with self._sup_lock:
                events = self._sup.frame_received(now)
        self._emit(events)
        self._emit(rx_events)  # before any answer wakes a caller: they see the board's state
        kinds = {e.kind for e in rx_events}
        if LinkEventKind.INCOMPATIBLE in kinds:
            self._stop_all_quietly()
        for v in verdicts:
            message = v.message
            if isinstance(message, (Ack, Nack)) and v.accepted:
                self._answer(message)
            elif isinstance(message, Capabilities) and (v.accepted or v.category == "refused"):
                self.capabilities = message if v.accepted else None  # a refused board's are not used
                self._answer_hello(message)
            if v.accepted:
                self._deliver(message)
            else:
                log.debug("board frame dropped: %s", v.text)
        if self._hello_on_connect and (
            LinkEventKind.BOARD_RESTARTED in kinds or any(e.kind is LinkEventKind.RESTORED for e in events)
        ):
            self._send_hello_quietly()

    def _answer(self, message: Ack | Nack) -> None:
        with self._pending_lock:
            waiter = self._pending.pop(message.seq, None)
            if waiter is not None and waiter in self._hello_waiters:
                self._hello_waiters.remove(waiter)
        if waiter is not None:
            waiter.answer = message
            waiter.event.set()

    def _answer_hello(self, message: Capabilities) -> None:
        with self._pending_lock:
            waiters = list(self._hello_waiters)
            self._hello_waiters.clear()
            for w in waiters:
                for s, pw in list(self._pending.items()):
                    if pw is w:
                        del self._pending[s]
        for w in waiters:
            w.answer = message
            w.event.set()

    def _stop_all_quietly(self) -> None:
        """A refused board: make sure nothing stimulates (STOP is always allowed)."""
        for out in Output:
            try:
                self._send(Stimulate(out, StimMode.STOP), None)
            except (LinkDown, ValueError):
                pass

    def _deliver(self, message: object) -> None:
        if self._on_message is not None:
            try:
                self._on_message(message)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop the link
                self._c["callback_errors"] += 1
                log.exception("board link: on_message callback failed")
            return
        while True:
            try:
                self.messages.put_nowait(message)
                return
            except queue.Full:
                try:
                    self.messages.get_nowait()
                    self._c["inbox_dropped"] += 1
                except queue.Empty:
                    pass

    def _emit(self, events: list[LinkEvent]) -> None:
        for event in events:
            if event.kind is LinkEventKind.LOST:
                self._c["lost"] += 1
                self._up_since = None
                log.warning("board link lost: %s", event.detail)
            elif event.kind in (LinkEventKind.RESTORED, LinkEventKind.CONNECTED):
                if event.kind is LinkEventKind.RESTORED:
                    self._c["restored"] += 1
                self._up_since = event.t
                log.info("board link %s: %s", event.kind.value, event.detail)
            elif event.kind in (LinkEventKind.INVALID_DATA, LinkEventKind.INCOMPATIBLE):
                log.warning("board link %s: %s", event.kind.value, event.detail)
            elif event.kind in (LinkEventKind.DATA_VALID, LinkEventKind.BOARD_ACCEPTED,
                                LinkEventKind.BOARD_RESTARTED):
                log.info("board link %s: %s", event.kind.value, event.detail)
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:  # noqa: BLE001 - a consumer's bug must not stop the link
                    self._c["callback_errors"] += 1
                    log.exception("board link: on_event callback failed")
            else:
                self.events.put(event)

    def _supervisor_loop(self) -> None:
        # sleep until the next heartbeat or loss deadline (converted to real seconds for a
        # scaled clock), but never longer than tick_s (a ManualClock may jump at any time)
        speed = float(getattr(self.clock, "speed", 1.0))
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                self.supervise_once()
                with self._sup_lock:
                    ahead = self._sup.next_due() - self.clock.now()
                wait = min(self._tick_s, max(0.001, ahead / speed))
            except Exception:  # noqa: BLE001 - supervision must survive anything
                log.exception("board link: supervision step failed")
                wait = self._tick_s


def _close_quietly(port: Port) -> None:
    try:
        port.close()
    except (OSError, ValueError, TypeError, AttributeError):
        pass


__all__ = [
    "BoardLink",
    "LinkSupervisor",
    "Receiver",
    "InvalidBurst",
    "BoardRefused",
    "BoardNotReady",
    "LinkEvent",
    "LinkEventKind",
    "LinkError",
    "LinkDown",
    "RequestTimeout",
    "ProtocolError",
]
