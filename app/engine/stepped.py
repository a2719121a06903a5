"""The whole system in one thread on a hand-moved clock: virtual board, wire protocol, engine.

Owns: ``SteppedSystem``, the deterministic driver that ``lnm simulate``, the end-to-end
tests and the benchmark use: a ``VirtualBoard`` and a ``Monitor`` share a ``ManualClock``
advanced in small steps; every message crosses the REAL wire protocol both ways
(``codec.encode`` -> ``VirtualBoard.receive``; ``VirtualBoard.poll`` -> ``codec.Decoder``),
supervised by the same pure ``LinkSupervisor`` the threaded link uses (heartbeats, loss
detection, Hello after a reconnection). Operator commands go through the API's request
validation and the engine's command handler, exactly as from a socket.
May import: ``firmware_bridge`` (codec, link supervisor, clock, virtual board),
``app.api.protocol`` and ``app.engine.core``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.api import protocol as p
from app.engine.core import EngineOptions, Monitor
from app.engine.seams import Journal, Outputs, Sink, Wants
from app.settings import Settings
from firmware_bridge.clock import ManualClock
from firmware_bridge.codec import SEQ_MODULO, Decoder, encode
from firmware_bridge.link import LinkEventKind, LinkSupervisor
from firmware_bridge.messages import PROTOCOL_VERSION, Hello, HostHeartbeat


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
    ) -> None:
        from firmware_bridge.sim.board import VirtualBoard

        self.clock = clock or ManualClock()
        self.step_s = float(step_s)
        self.tick_s = float(tick_s)
        self.board = VirtualBoard(self.clock, scenario=scenario, seed=seed)
        self.scenario = scenario
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
        self.supervisor = LinkSupervisor(hb, timeout, self.clock.now())
        self.decoder = Decoder()
        self._tx_seq = 0
        self._hb_counter = 0
        self._next_tick = self.clock.now()
        self.host_heartbeat_paused = False
        self.frames_in = 0
        self.bytes_out = 0
        self._send(Hello(protocol_version=PROTOCOL_VERSION, host_name="lnm-simulate"))

    # ------------------------------------------------------------------ wire

    def _sink(self, stream: str, message: Mapping[str, Any], sticky: bool) -> None:
        if self._sink_cb is not None:
            self._sink_cb(stream, message, sticky)

    def _send(self, message: Any) -> None:
        frame = encode(message, self._tx_seq)
        self._tx_seq = (self._tx_seq + 1) % SEQ_MODULO
        self.bytes_out += len(frame)
        self.board.receive(frame)

    def _link_events(self, events: list[Any]) -> None:
        for ev in events:
            self.monitor.link_event(ev.kind.value, ev.detail)
            if ev.kind is LinkEventKind.RESTORED:
                self._send(Hello(protocol_version=PROTOCOL_VERSION, host_name="lnm-simulate"))

    # ------------------------------------------------------------------ stepping

    def step(self, dt: float | None = None) -> None:
        """Advance the clock by ``dt`` (default ``step_s``) and move every message."""
        self.clock.advance(self.step_s if dt is None else dt)
        self.pump()

    def pump(self) -> None:
        """Move what is due at the current time (no clock change)."""
        now = self.clock.now()
        data = self.board.poll()
        if data:
            frames = self.decoder.feed(data)
            if frames:
                self.frames_in += len(frames)
                self._link_events(self.supervisor.frame_received(now))
                for frame in frames:
                    self.monitor.board_message(frame.message)
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
