"""The whole system in one thread on a hand-moved clock: virtual board, wire protocol, engine.

Owns: ``SteppedSystem``, the deterministic driver that ``lnm simulate``, the end-to-end
tests and the benchmark use: a ``VirtualBoard`` and a ``Monitor`` share a ``ManualClock``
advanced in small steps; every message crosses the REAL wire protocol both ways
(``codec.encode`` -> ``VirtualBoard.receive``; ``VirtualBoard.poll`` -> the link's
``Receiver``), supervised by the same pure parts the threaded ``BoardLink`` uses: the
``LinkSupervisor`` (heartbeats, loss detection, Hello after a reconnection) and the
``Receiver`` (codec, every frame validated as PROTOCOL.md section 12 says, health
counters, the invalid-data burst, a board refused or restarted). What the link refuses
to send, this refuses too: Stimulate (other than STOP) before the board's Capabilities
were accepted or to a refused board, ConfigureAcquisition to a refused board; a refused
board is told STOP on every output; a configuration token goes only to a board that
echoes them. Operator commands go through the API's request validation and the
engine's command handler, exactly as from a socket.

Faults on the wire: ``faults`` (a ``firmware_bridge.faults.FaultPlan``, the core of
``lnm link-proxy``) sits between the board and the engine in both directions, on the
same clock; ``fault(line)`` gives it a command (``drop StimEpoch``, ``replay StimEpoch
n=3``, ``inject ...``, ``header StimEpoch 131072``), as the proxy's control channel does.
May import: ``firmware_bridge`` (codec, link, faults, clock, virtual board),
``app.api.protocol`` and ``app.engine.core``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, cast

from app.api import protocol as p
from app.engine.core import EngineOptions, Monitor
from app.engine.seams import Journal, Outputs, Sink, Wants
from app.settings import Settings
from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import SEQ_MODULO, encode
from firmware_bridge.faults import FaultPlan
from firmware_bridge.link import LinkEvent, LinkEventKind, LinkSupervisor, Receiver
from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    BoardMessage,
    ConfigureAcquisition,
    Hello,
    HostHeartbeat,
    Output,
    Stimulate,
    StimMode,
)


class SteppedSystem:
    """A virtual board and the engine, stepped together (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        scenario: Any = None,
        seed: int | None = None,
        journal: Journal | None = None,
        outputs: Outputs | None = None,
        options: EngineOptions | None = None,
        step_s: float = 0.005,
        tick_s: float = 0.01,
        clock: ManualClock | None = None,
        sink: Sink | None = None,
        wants: Wants | None = None,
        monitor_kwargs: Mapping[str, Any] | None = None,
        board_kwargs: Mapping[str, Any] | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        """``board_kwargs``: for the ``VirtualBoard`` (e.g. ``capabilities``: a board of
        protocol 1.0 without configuration tokens); ``faults``: a fault plan on the wire."""
        from firmware_bridge.sim.board import VirtualBoard

        self.clock = clock or ManualClock()
        self.step_s = float(step_s)
        self.tick_s = float(tick_s)
        self.board = VirtualBoard(self.clock, scenario=scenario, seed=seed, **dict(board_kwargs or {}))
        self.scenario = scenario
        self.faults = faults
        self.published: list[tuple[str, Mapping[str, Any]]] = []
        self._sink_cb = sink
        self.monitor = Monitor(
            settings, self.clock, journal=journal, outputs=outputs, options=options,
            sink=self._sink, wants=wants or (lambda stream: stream in ("events", "alarms")),
            board_url=f"sim://?seed={self.board.seed}" + (f"&scenario={scenario.name}" if scenario else ""),
            **dict(monitor_kwargs or {}),
        )
        hb = float(settings["link.heartbeat_ms"]) / 1000.0
        timeout = float(settings["link.timeout_ms"]) / 1000.0
        self.started_at = self.clock.now()
        self.supervisor = LinkSupervisor(hb, timeout, self.started_at)
        self.rx = Receiver()
        self.link_events: list[LinkEvent] = []  # every link event, in order (tests read them)
        self._to_engine = bytearray()  # bytes a fault command made for the engine
        self._tx_seq = 0
        self._hb_counter = 0
        self._next_tick = self.clock.now()
        self.host_heartbeat_paused = False
        self.frames_in = 0
        self.bytes_out = 0
        self.counters = {"frames_out": 0, "lost": 0, "restored": 0, "refused_to_send": 0, "tokens_stripped": 0}
        self.monitor.link_health = self.health
        self._send(Hello(protocol_version=PROTOCOL_VERSION, host_name="lnm-simulate"))

    # ------------------------------------------------------------------ wire

    def _sink(self, stream: str, message: Mapping[str, Any], sticky: bool) -> None:
        if self._sink_cb is not None:
            self._sink_cb(stream, message, sticky)

    def _gate(self, message: Any) -> Any:
        """What may go to the board now (as ``BoardLink`` decides; None: not sent)."""
        state = self.rx.validator.board_state
        if isinstance(message, Stimulate) and message.mode is not StimMode.STOP and state != "accepted":
            return None
        if isinstance(message, ConfigureAcquisition) and state == "refused":
            return None
        if isinstance(message, Stimulate) and message.config_token is not None:
            caps = self.rx.validator.capabilities
            if caps is None or not caps.config_token:
                self.counters["tokens_stripped"] += 1
                message = replace(message, config_token=None)
        return message

    def _send(self, message: Any) -> None:
        message = self._gate(message)
        if message is None:
            self.counters["refused_to_send"] += 1
            return
        seq = self._tx_seq
        frame = encode(message, seq)
        self._tx_seq = (seq + 1) % SEQ_MODULO
        self.rx.sent(seq, message)
        self.bytes_out += len(frame)
        self.counters["frames_out"] += 1
        if self.faults is not None:
            frame = self.faults.process("host", frame, self.clock.now())
        if frame:
            self.board.receive(frame)

    def _link_events(self, events: list[LinkEvent]) -> None:
        for ev in events:
            self.link_events.append(ev)
            if ev.kind is LinkEventKind.LOST:
                self.counters["lost"] += 1
            elif ev.kind is LinkEventKind.RESTORED:
                self.counters["restored"] += 1
            self.monitor.link_event(ev.kind.value, ev.detail, ev.data)
            if ev.kind in (LinkEventKind.RESTORED, LinkEventKind.BOARD_RESTARTED):
                self._send(Hello(protocol_version=PROTOCOL_VERSION, host_name="lnm-simulate"))
            elif ev.kind is LinkEventKind.INCOMPATIBLE:
                for out in Output:  # a refused board: make sure nothing stimulates
                    self._send(Stimulate(out, StimMode.STOP))

    def health(self) -> dict[str, Any]:
        """The link's health as ``BoardLink.health`` gives it (JSON-ready)."""
        out = self.rx.snapshot()
        out.update({"url": self.monitor.board_url, "state": self.supervisor.state,
                    "connected": self.supervisor.connected, "port_open": True,
                    "uptime_s": round(self.clock.now() - self.started_at, 3), "bytes_out": self.bytes_out,
                    "frames_out": self.counters["frames_out"], "lost": self.counters["lost"],
                    "restored": self.counters["restored"], "port_errors": 0,
                    "tokens_stripped": self.counters["tokens_stripped"]})
        return out

    def to_engine(self, data: bytes) -> None:
        """Bytes for the engine as if the board had sent them (arriving at the next ``pump``)."""
        self._to_engine += data

    def fault(self, line: str) -> str:
        """A command for the fault plan (``faults`` syntax); its one-line answer. Bytes it
        makes go out now: towards the engine at the next ``pump``, towards the board at once."""
        if self.faults is None:
            self.faults = FaultPlan()
        answer, out = self.faults.command(line, self.clock.now())
        self._to_engine += out.get("board", b"")
        if out.get("host"):
            self.board.receive(out["host"])
        return answer

    # ------------------------------------------------------------------ stepping

    def step(self, dt: float | None = None) -> None:
        """Advance the clock by ``dt`` (default ``step_s``) and move every message."""
        self.clock.advance(self.step_s if dt is None else dt)
        self.pump()

    def _from_board(self, now: float) -> bytes:
        data = bytes(self._to_engine)  # sent before what the board sends now
        self._to_engine.clear()
        polled = self.board.poll()
        if self.faults is not None:
            data += self.faults.process("board", polled, now) if polled else b""
            released = self.faults.release(now)
            data += released.get("board", b"")
            if released.get("host"):
                self.board.receive(released["host"])
        else:
            data += polled
        return data

    def pump(self) -> None:
        """Move what is due at the current time (no clock change)."""
        now = self.clock.now()
        data = self._from_board(now)
        if data:
            verdicts, events = self.rx.feed(data, now)
            accepted = [cast(BoardMessage, v.message) for v in verdicts if v.accepted]
            self.frames_in += len(accepted)
            # the board is talking (even nonsense: invalid data, not a lost link); duplicates
            # and replays prove nothing about the board
            if accepted or any(v.category in ("refused", "invalid") for v in verdicts):
                self._link_events(self.supervisor.frame_received(now))
            self._link_events(events)
            self.monitor.board_messages(accepted)
        self._link_events(self.rx.tick(now))
        self._link_events(self.supervisor.check(now))
        if not self.host_heartbeat_paused and self.supervisor.heartbeat_due(now):
            self.supervisor.heartbeat_sent(now)
            self._send(HostHeartbeat(counter=self._hb_counter, alarm_active=self.monitor.alarm_sounding))
            self._hb_counter = (self._hb_counter + 1) % SEQ_MODULO
        if now >= self._next_tick:
            self._next_tick = now + self.tick_s
            self.monitor.tick()
        for msg in self.monitor.take_host_messages():
            self._send(msg)

    def run_for(self, seconds: float, on_step: Callable[[], None] | None = None) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() < end - 1e-9:
            self.step(min(self.step_s, end - self.clock.now()))
            if on_step is not None:
                on_step()

    def run_until(self, t_clock: float, on_step: Callable[[], None] | None = None) -> None:
        self.run_for(max(0.0, t_clock - self.clock.now()), on_step)

    # ------------------------------------------------------------------ operator

    def command(self, cmd: str, client: str = "operator", **args: Any) -> dict[str, Any]:
        """One API command through the API's validation and the engine's handler; the reply."""
        try:
            req_id, command, parsed = p.parse_request({"id": 0, "cmd": cmd, **args})
        except p.ApiError as err:
            return p.reply_error(0, err)
        reply = self.monitor.handle(p.Request(req_id, command.name, parsed, client=client))
        for msg in self.monitor.take_host_messages():
            self._send(msg)
        return reply

    def must(self, cmd: str, client: str = "operator", **args: Any) -> dict[str, Any]:
        """``command`` that raises ``RuntimeError`` on a refusal (scripts and tests)."""
        reply = self.command(cmd, client=client, **args)
        if not reply["ok"]:
            raise RuntimeError(f"{cmd} refused: {reply['error']['message']}")
        return reply["result"]
