"""The board as the engine sees it: the one place that handles board messages and link events.

Owns: ``BoardDesk``: every Board API message routed (epochs to the stimulus pipeline,
EMG blocks to the free-running stream, impedances to the tube check, heartbeats and
status to the time base), the board's capabilities and the acquisition configured from
the settings after every (re)connection, the board's faults (lead off, board fault
alarms, the host-silent stop and the outputs commanded again), refusals (``Nack``), the
link's state (connected, lost, restored; the link-lost alarm), what the link reports of
the board (invalid data, a board refused or accepted, a board restarted), data-flow
supervision, what stimulation is known to be doing, the link's health in the state and
the journal, every command on its way to the board (``outgoing``: configuration tokens,
what the flow supervisor is told to expect), and the checks that a command needs the
link or a virtual board; ``fault_names``.
May import: ``app.alarms``, ``app.api.protocol`` (errors), ``app.engine`` rooms
(context, ledger, timebase, stimulator, alarm_desk, stimulus, emg_stream, tube,
jsonsafe), ``firmware_bridge.messages`` and ``firmware_bridge.flow``.

Nothing fails silently at the board seam:

- **Data flow** (``firmware_bridge.flow.FlowSupervisor``, pure, on the engine clock): told
  what the acquisition and each Stimulate promise (``outgoing``), fed every epoch, EMG
  block and status as it arrives, reset when the link comes (back) or the board
  restarts, suspended while the link is down or the board refused, and checked at every
  tick. Each finding is one technical alarm keyed by what is missing (``epochs:APS``,
  ``emg``, ...): ``monitoring_data_missing`` (high) for stimulus epochs and EMG while
  continuous vagal monitoring runs, else ``board_data_missing`` (medium); journaled
  (``link`` entries ``data_missing`` and ``data_missing_ended``) and announced both ways.
- **Stimulation state** (``stim_state``): ``on``/``off`` as commanded only while the board
  is known: link up, board accepted, the output's epochs and the status arriving as
  promised; otherwise ``unknown`` with the reason in words, never the last command.
- **The link's reports** (``link_event``): ``invalid_data`` raises ``board_invalid_data``
  with the link's words ("board sends invalid data: <reason>"), ``data_valid`` ends it;
  ``incompatible`` raises ``board_not_supported`` naming what the board claimed and what
  is supported (stimulation is refused: ``require_link``), ``board_accepted`` ends it;
  ``board_restarted`` is journaled and restarts the flow supervision.
- **Health** (``link_health``, a callable the shell sets: ``BoardLink.health`` or the
  stepped system's): a compact ``link`` section of the state (``link_json``), and a
  ``link`` entry ``health`` in the journal when a case opens, every ``HEALTH_JOURNAL_S``
  while it is open, and when it closes (``case_closing``); the report's link line is
  made from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from app.alarms import AlarmKind
from app.api import protocol as p
from app.engine.alarm_desk import AlarmDesk
from app.engine.board_faults import KNOWN_FAULT_BITS, fault_names
from app.engine.context import EngineContext
from app.engine.emg_stream import EmgStream
from app.engine.jsonsafe import plain
from app.engine.ledger import Ledger
from app.engine.stimulator import Stimulator
from app.engine.stimulus import StimulusPipeline
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from firmware_bridge.flow import FlowFinding, FlowSupervisor
from firmware_bridge.messages import (
    OUTPUT_WORDS,
    BoardHeartbeat,
    BoardMessage,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Fault,
    HostMessage,
    ImpedanceResult,
    Nack,
    Output,
    StimEpoch,
    Stimulate,
    StimMode,
)

log = logging.getLogger("lnm.engine")

# faults that are a board fault alarm (the others are handled on their own)
_BOARD_FAULT_BITS = int(Fault.OVER_CURRENT | Fault.WATCHDOG | Fault.INTERNAL)
# settings the board acquires with (``configure``)
ACQUISITION_SETTINGS = ("acq.sample_rate_hz", "acq.stream_block_ms", "analysis.window_ms")
HEALTH_JOURNAL_S = 60.0  # the link's health is journaled this often while a case is open
# what of the link's health the journal keeps (``BoardLink.health``; the report sums them per case)
HEALTH_KEYS = ("state", "frames_ok", "frames_decoded", "crc_errors", "resyncs", "oversize", "truncated", "bytes_in",
               "bytes_discarded", "invalid", "invalid_by_reason", "duplicates", "replayed", "refused_frames", "gaps",
               "board_restarts", "stray_frames", "lost", "restored", "port_errors", "bytes_out", "frames_out",
               "uptime_s", "tokens_stripped", "board")


class BoardDesk:
    """Board messages and link events (see the module docstring)."""

    def __init__(self, ctx: EngineContext, time: TimeBase, ledger: Ledger, alarms: AlarmDesk, stim: Stimulator,
                 pipeline: StimulusPipeline, emg: EmgStream, tube: TubeDesk) -> None:
        self.ctx = ctx
        self.time = time
        self.ledger = ledger
        self.alarms = alarms
        self.stim = stim
        self.pipeline = pipeline
        self.emg = emg
        self.tube = tube
        self.capabilities: Capabilities | None = None
        self.link_up = False
        self.link_ever_up = False
        self.faults = 0
        self.stimulating: tuple[Output, ...] = ()
        self.acq_configured = False
        self.board_state = "unknown"  # unknown | accepted | refused (as the link judged the board)
        self.refusal = ""  # why the board was refused
        self.invalid_data = ""  # the link's words while a burst of invalid frames lasts
        self.flow = FlowSupervisor()
        self.data_missing: dict[str, tuple[AlarmKind, FlowFinding]] = {}  # finding key -> its alarm
        self.link_health: Callable[[], Mapping[str, Any]] | None = None  # set by the shell
        self._health_case: str | None = None
        self._health_at = 0.0

    # -- messages

    def message(self, msg: BoardMessage) -> None:
        """One message from the board (any Board API type)."""
        if isinstance(msg, StimEpoch):
            self.flow.epoch(self.ctx.clock.now(), msg.output, msg.board_time_us)
            self.pipeline.epoch(msg)
        elif isinstance(msg, EmgBlock):
            self.flow.emg(self.ctx.clock.now(), msg.board_time_us)
            self.emg.block(msg)
        elif isinstance(msg, BoardHeartbeat):
            self.time.learn_offset(msg.board_time_us)
        elif isinstance(msg, BoardStatus):
            self.flow.status(self.ctx.clock.now(), msg.board_time_us)
            self.time.learn_offset(msg.board_time_us)
            self._status(msg)
        elif isinstance(msg, ImpedanceResult):
            self.tube.measured(msg)
        elif isinstance(msg, Capabilities):
            self._capabilities(msg)
        elif isinstance(msg, Nack):
            self._nack(msg)

    def _capabilities(self, caps: Capabilities) -> None:
        first = self.capabilities is None or caps != self.capabilities
        self.capabilities = caps
        self.board_state = "accepted"  # the link passes on only the Capabilities it accepted
        self.stim.tokens_supported = bool(caps.config_token)
        self.time.forget_offset()  # a (re)started board session: learn its clock again
        if first:
            self.ledger.write("link", {"event": "capabilities", "detail": {
                "firmware_version": caps.firmware_version, "board_id": caps.board_id,
                "protocol_version": caps.protocol_version, "simulated": caps.simulated,
                "max_current_uA": caps.max_current_uA, "sample_rates_hz": list(caps.sample_rates_hz),
                "config_token": caps.config_token}})
            self.ledger.event("technical", "board", f"board {caps.board_id} firmware {caps.firmware_version}"
                              + (" (virtual board)" if caps.simulated else ""),
                              detail={"board_id": caps.board_id, "firmware": caps.firmware_version,
                                      "simulated": caps.simulated})
        self.configure()

    def configure(self) -> None:
        """Acquisition as the settings say, and the outputs that should be on (after (re)connection)."""
        st = self.ctx.settings
        rate = int(st["acq.sample_rate_hz"])
        caps = self.capabilities
        if caps is not None and caps.sample_rates_hz and rate not in caps.sample_rates_hz:
            chosen = min(caps.sample_rates_hz, key=lambda r: abs(r - rate))
            self.ledger.event("technical", "sample_rate", f"board does not sample at {rate} Hz; using {chosen} Hz",
                              priority="info", detail={"wanted_hz": rate, "used_hz": chosen})
            rate = chosen
        block = max(1, int(round(rate * st["acq.stream_block_ms"] / 1000.0)))
        dec = max(1, int(self.ctx.options.stream_decimation))
        block = max(dec, block - block % dec)
        self.ctx.send(ConfigureAcquisition(
            sample_rate_hz=rate, channel_mask=0b11, gain=1, stream_enabled=True, stream_block_samples=block,
            stream_decimation=dec, epoch_pre_ms=10, epoch_post_ms=int(round(st["analysis.window_ms"]))))
        self.acq_configured = True
        if self.ctx.case is not None:
            self.ctx.to_board.extend(self.stim.commands_on())

    def _nack(self, nack: Nack) -> None:
        text = f"the board refused a command: {nack.reason.name}" + (f" ({nack.detail})" if nack.detail else "")
        self.ledger.write("link", {"event": "nack", "detail": {"seq": nack.seq, "reason": nack.reason.name,
                                                               "detail": nack.detail}})
        self.ledger.event("technical", "board_refused", text, priority="info",
                          detail={"seq": nack.seq, "reason": nack.reason.name, "detail": nack.detail})

    def _status(self, status: BoardStatus) -> None:
        faults = int(status.faults)
        old = self.faults
        self.faults = faults
        self.stimulating = tuple(status.stimulating)
        if faults != old:
            names = fault_names(faults)
            self.ledger.write("link", {"event": "board_status", "detail": {
                "faults": names, "stimulating": [o.name for o in status.stimulating]}})
            self.ledger.event("technical", "board_status", "board faults: " + (", ".join(names) or "none"),
                              detail={"faults": names})
        self._lead_off(faults, old)
        self._board_fault(faults, old)
        # the board stopped stimulating on its own (host heartbeat missing): command again
        if faults & Fault.HOST_SILENT and not old & Fault.HOST_SILENT:
            self.ledger.write("link", {"event": "host_silent", "detail": {"faults": fault_names(faults)}})
            self.ledger.event("technical", "host_silent",
                              "the board missed the engine's heartbeat and stopped stimulation", priority="medium")
        if not faults & Fault.HOST_SILENT and self.ctx.case is not None and self.link_up:
            for out in self.stim.outputs():
                if out.on and out.output not in status.stimulating and not faults & Fault.OVER_CURRENT:
                    self.ctx.counters["stimulation_restarted"] += 1
                    self.ctx.send(out.stimulate())

    def _lead_off(self, faults: int, old: int) -> None:
        if faults & Fault.LEAD_OFF and not old & Fault.LEAD_OFF:
            self.alarms.raise_technical(
                AlarmKind.LEAD_OFF, message="An EMG electrode is disconnected: that side is not monitored.")
        elif old & Fault.LEAD_OFF and not faults & Fault.LEAD_OFF:
            self.alarms.clear_technical(AlarmKind.LEAD_OFF)

    def _board_fault(self, faults: int, old: int) -> None:
        """Over-current, watchdog reset, internal fault and unknown bits: the board-fault alarm."""
        bad = (faults & _BOARD_FAULT_BITS) | (faults & ~KNOWN_FAULT_BITS)
        old_bad = (old & _BOARD_FAULT_BITS) | (old & ~KNOWN_FAULT_BITS)
        if bad and bad != old_bad:
            self.alarms.raise_technical(AlarmKind.BOARD_FAULT, message="Board fault: " + ", ".join(fault_names(bad)),
                                        detail={"faults": fault_names(bad)})
        elif old_bad and not bad:
            self.alarms.clear_technical(AlarmKind.BOARD_FAULT)

    # -- the link

    def link_event(self, kind: str | Enum, detail: str = "", data: Mapping[str, Any] | None = None) -> None:
        """A change of the link (``firmware_bridge.link.LinkEventKind``): connected, restored,
        lost, port_error, port_opened, invalid_data, data_valid, incompatible,
        board_accepted, board_restarted. ``data``: the event's values for the journal."""
        kind = str(kind.value) if isinstance(kind, Enum) else kind
        now = self.ctx.clock.now()
        if kind in ("connected", "restored"):
            self._link_up(kind, detail, now)
        elif kind == "lost":
            self.flow.suspend(now)
            if self.link_up or not self.link_ever_up:
                self.link_up = False
                self.acq_configured = False
                self.ledger.write("link", {"event": "lost", "detail": detail})
                self.ledger.event("technical", "link_lost", f"board link lost: {detail}", priority="high",
                                  detail={"detail": detail})
                self.alarms.raise_technical(AlarmKind.BOARD_LINK_LOST, message=(
                    f"No data from the board ({detail}): the nerve is NOT being monitored."))
        elif kind in ("port_error", "port_opened"):
            if kind == "port_opened":
                self.board_state = "unknown"  # the port may hold another board: it must answer Hello again
            self.ledger.write("link", {"event": kind, "detail": detail})
            self.ledger.event("technical", kind, f"board port: {detail}",
                              priority="info" if kind == "port_opened" else "medium")
        elif kind in ("invalid_data", "data_valid"):
            self._invalid_data(kind == "invalid_data", detail, data)
        elif kind in ("incompatible", "board_accepted"):
            self._board_judged(kind == "board_accepted", detail, data, now)
        elif kind == "board_restarted":
            self.flow.reset(now)
            self.time.forget_offset()  # its clock began again
            self.ledger.write("link", {"event": kind, "detail": {"text": detail, **plain(data or {})}})
            self.ledger.event("technical", kind, detail or "the board restarted", priority="medium",
                              detail=plain(data or {}))
        else:
            log.warning("board link event %r not known to the engine (%s)", kind, detail)

    def _link_up(self, kind: str, detail: str, now: float) -> None:
        was_up = self.link_up
        self.link_up = True
        self.time.forget_offset()
        self.flow.reset(now)
        if not was_up:
            self.ledger.write("link", {"event": "connected" if kind == "connected" else "reconnected",
                                       "detail": detail})
            self.ledger.event("technical", "link_restored" if self.link_ever_up else "link_connected",
                              "board link " + ("restored" if self.link_ever_up else "connected"),
                              detail={"detail": detail})
            self.alarms.clear_technical(AlarmKind.BOARD_LINK_LOST)
        self.link_ever_up = True
        self.configure()

    def _invalid_data(self, active: bool, detail: str, data: Mapping[str, Any] | None) -> None:
        """A burst of invalid board frames (the link's words), or its end."""
        values = plain(dict(data or {}))
        self.invalid_data = detail if active else ""
        self.ledger.write("link", {"event": "invalid_data" if active else "data_valid",
                                   "detail": {"text": detail, **values}})
        self.ledger.event("technical", "invalid_data" if active else "data_valid", detail,
                          priority="medium" if active else "info", detail=values)
        if active:
            self.alarms.raise_technical(AlarmKind.BOARD_INVALID_DATA, message=(
                f"{_sentence(detail)}. It is thrown away, not measured."), detail=values)
        else:
            self.alarms.clear_technical(AlarmKind.BOARD_INVALID_DATA, detail={"detail": detail})

    def _board_judged(self, accepted: bool, detail: str, data: Mapping[str, Any] | None, now: float) -> None:
        """The link refused the board (what it claimed and what is supported), or accepted
        a board it had refused."""
        values = plain(dict(data or {}))
        if accepted:
            self.board_state, self.refusal = "accepted", ""
            self.flow.reset(now)
            self.ledger.write("link", {"event": "board_accepted", "detail": {"text": detail, **values}})
            self.ledger.event("technical", "board_accepted", detail or "the board is supported", detail=values)
            self.alarms.clear_technical(AlarmKind.BOARD_NOT_SUPPORTED, detail={"detail": detail})
            return
        self.board_state, self.refusal = "refused", detail
        self.flow.suspend(now)
        self.ledger.write("link", {"event": "incompatible", "detail": {"text": detail, **values}})
        self.ledger.event("technical", "board_not_supported", f"board not supported: {detail}", priority="high",
                          detail=values)
        self.alarms.raise_technical(AlarmKind.BOARD_NOT_SUPPORTED, message=(
            f"Board not supported: {detail}. No stimulation is possible: the nerve is NOT being monitored."),
            detail=values)

    # -- what is sent to the board

    def outgoing(self, msgs: list[HostMessage]) -> list[HostMessage]:
        """Every message on its way to the board: a configuration token on each Stimulate
        (a board that echoes them), and the flow supervisor told what to expect."""
        now = self.ctx.clock.now()
        out: list[HostMessage] = []
        for msg in msgs:
            if isinstance(msg, Stimulate):
                msg = self.stim.issue(msg, now)
                if msg.mode is StimMode.CONTINUOUS:
                    self.flow.output(now, msg.output, msg.rate_mHz / 1000.0)
                elif msg.mode is StimMode.STOP:
                    self.flow.output(now, msg.output, None)
            elif isinstance(msg, ConfigureAcquisition):
                dec = max(1, int(msg.stream_decimation))
                self.flow.acquisition(now, stream_rate_hz=msg.sample_rate_hz / dec,
                                      block_samples=msg.stream_block_samples, streaming=msg.stream_enabled,
                                      epoch_window_s=(msg.epoch_pre_ms + msg.epoch_post_ms) / 1000.0)
            out.append(msg)
        return out

    def after_input(self) -> None:
        """End of every input: a change of what the probe or the electrode is on goes to
        the board as a new configuration (token) while that output stimulates."""
        changed = self.stim.note_selection(self.ctx.clock.now())
        if not changed or not self.stim.tokens_supported or not self.link_up or self.board_state != "accepted":
            return
        for output in changed:
            out = self.stim.on_wire(output)
            if out.on:
                self.ctx.send(out.stimulate())

    # -- data flow and what stimulation is doing

    def tick(self) -> None:
        """Timers: data-flow supervision, the link's health in the journal."""
        now = self.ctx.clock.now()
        self._check_flow(now)
        self._health_tick(now)

    def _check_flow(self, now: float) -> None:
        want: dict[str, tuple[AlarmKind, FlowFinding]] = {}
        vagal = self.stim.aps.on
        for f in self.flow.check(now):
            high = vagal and f.kind in ("epochs", "emg")
            want[f.key] = (AlarmKind.MONITORING_DATA_MISSING if high else AlarmKind.BOARD_DATA_MISSING, f)
        for key, (kind, f) in list(self.data_missing.items()):
            new = want.get(key)
            if new is not None and new[0] is kind:
                self.data_missing[key] = new  # the same alarm: its finding as of now (how long, for the state)
                continue
            del self.data_missing[key]
            if new is None:
                self._data_missing_ended(kind, f, now)
            else:  # still missing, the priority changed (continuous vagal monitoring on or off)
                self.alarms.clear_technical(kind, key, detail={"by": "priority changed"})
                self.data_missing[key] = new
                self._raise_data_missing(*new)
        for key, hit in want.items():
            if key not in self.data_missing:
                self.data_missing[key] = hit
                kind, f = hit
                self.ledger.write("link", {"event": "data_missing", "detail": {**f.to_json(), "alarm": kind.value}})
                self.ledger.event("technical", "data_missing", f.text,
                                  priority="high" if kind is AlarmKind.MONITORING_DATA_MISSING else "medium",
                                  detail=f.to_json())
                self._raise_data_missing(kind, f)

    def _raise_data_missing(self, kind: AlarmKind, f: FlowFinding) -> None:
        tail = ": the nerve is NOT being monitored." if kind is AlarmKind.MONITORING_DATA_MISSING else "."
        self.alarms.raise_technical(kind, f.key, message=_sentence(f.text) + tail, detail=f.to_json())

    def _data_missing_ended(self, kind: AlarmKind, f: FlowFinding, now: float) -> None:
        what = _stream_words(f)
        if not self.flow.active:
            why, text = "link", f"{what}: no longer supervised while the board link is down or the board refused"
        elif f.output is not None and not self.stim.on_wire(f.output).on:
            why, text = "stopped", f"{what}: no longer expected (the output was switched off)"
        else:
            why, text = "arrives", f"{what} arrive again"
        detail = {"key": f.key, "why": why, "alarm": kind.value}
        self.ledger.write("link", {"event": "data_missing_ended", "detail": detail})
        self.ledger.event("technical", "data_missing_ended", text, priority="info", detail=detail)
        self.alarms.clear_technical(kind, f.key, detail=detail)

    def stim_state(self, output: Output) -> tuple[str, str]:
        """What ``output`` is known to be doing: (``on`` | ``off`` | ``unknown``, why unknown)."""
        if not self.link_up:
            return "unknown", "the board link is down"
        if self.board_state == "refused":
            return "unknown", "the board is not supported: stimulation is unavailable"
        if self.board_state != "accepted":
            return "unknown", "the board has not identified itself yet"
        for key in (f"epochs:{Output(output).name}", "status"):
            hit = self.data_missing.get(key)
            if hit is not None:
                return "unknown", hit[1].text
        return ("on" if self.stim.on_wire(output).on else "off"), ""

    # -- the link's health

    def health(self) -> dict[str, Any] | None:
        """The link's health counters (``BoardLink.health``), or None without a link."""
        fn = self.link_health
        if fn is None:
            return None
        try:
            return dict(fn())
        except Exception as exc:  # noqa: BLE001 - counters are diagnostics: never stop monitoring for them
            log.error("board link health not available: %s", exc)
            return None

    def link_json(self) -> dict[str, Any]:
        """The state's compact ``link`` section."""
        h = self.health() or {}
        g = h.get("gaps")
        gaps: Mapping[str, Any] = g if isinstance(g, Mapping) else {}
        return {
            "state": h.get("state", "up" if self.link_up else "down"), "board": self.board_state,
            "refusal": self.refusal or None, "invalid_data": self.invalid_data or None,
            "data_missing": [f.text for _kind, f in self.data_missing.values()],
            "config_token": self.stim.tokens_supported,
            **{k: h.get(k) for k in ("frames_ok", "crc_errors", "resyncs", "oversize", "invalid", "duplicates",
                                     "replayed", "board_restarts", "lost")},
            "frames_missed": gaps.get("frames_missed"), "epochs_missed": gaps.get("epochs_missed"),
        }

    def journal_health(self, why: str) -> None:
        """A ``link`` entry ``health``: the link's counters and the epochs each output delivered and lost."""
        h = self.health()
        if h is None or self.ctx.case is None:
            return
        flow = self.flow.snapshot(self.ctx.clock.now())["outputs"]
        detail = {k: h.get(k) for k in HEALTH_KEYS if k in h}
        detail["why"] = why
        detail["epochs"] = {name: {"arrived": o["epochs"], "lost": o["epochs_lost"]} for name, o in flow.items()}
        self.ledger.write("link", {"event": "health", "detail": plain(detail)})

    def _health_tick(self, now: float) -> None:
        case = self.ctx.case
        if case is None:
            self._health_case = None
            return
        if self._health_case != case.case_id:  # a case opened or resumed: where its counts start
            self._health_case, self._health_at = case.case_id, now
            self.journal_health("case opened")
        elif now - self._health_at >= HEALTH_JOURNAL_S:
            self._health_at = now
            self.journal_health("periodic")

    def case_closing(self) -> None:
        """The case closes: its last ``health`` entry."""
        self.journal_health("case closed")

    # -- what commands need

    def require_link(self, what: str) -> None:
        """``what`` needs the board: refused while the link is down or the board is refused."""
        if not self.link_up:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: the board link is down; check the USB cable and the board")
        if self.board_state == "refused":
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: the board is not supported ({self.refusal}); "
                             "no stimulation is possible with it")

    def require_sim(self, what: str) -> None:
        """``what`` controls the virtual board: refused on a real one."""
        if self.capabilities is None:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: no board has answered yet")
        if not self.capabilities.simulated or not self.ctx.options.allow_sim_control:
            raise p.ApiError(p.NOT_SIMULATED, f"{what}: the board is a real board; virtual-board controls are refused")

    def self_test(self) -> dict[str, Any]:
        """The board's line of the self-test."""
        caps = self.capabilities
        if self.board_state == "refused":
            return {"item": "board", "ok": False, "message": f"the board is not supported: {self.refusal}"}
        if not self.link_up or caps is None:
            return {"item": "board", "ok": False, "message": "the board does not answer"}
        failures = self.faults & ~CONDITIONS
        conditions = self.faults & CONDITIONS
        return {"item": "board", "ok": not failures,
                "message": f"{caps.board_id} firmware {caps.firmware_version}"
                + (" (virtual)" if caps.simulated else "")
                + ("; faults: " + ", ".join(fault_names(failures)) if failures else "")
                + ("; " + "; ".join(CONDITION_WORDS[f] for f in Fault if f & conditions) if conditions else "")}


# Flags that describe the patient side or the last pulse, not the board: a lead off, and a
# pulse that could not reach its current (the probe in air at the end of the last case; it
# clears at the next pulse that reaches its current). The self-test names them, and passes.
CONDITIONS = int(Fault.LEAD_OFF | Fault.COMPLIANCE_LIMIT)
CONDITION_WORDS = {
    Fault.LEAD_OFF: "an EMG electrode is disconnected (not a board fault)",
    Fault.COMPLIANCE_LIMIT: "the last stimulus could not reach its set current (probe in air?); "
                            "not a board fault, clears at the next pulse that does",
}


def _sentence(text: str) -> str:
    """``text`` with a capital first letter and no final full stop."""
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:]


def _stream_words(f: FlowFinding) -> str:
    """What a finding is about, in words: "stimulus responses from the probe", "EMG", "status"."""
    if f.output is not None:
        return f"stimulus responses from {OUTPUT_WORDS[f.output]}"
    return {"emg": "EMG from the board", "status": "status messages from the board"}.get(f.kind, f.kind)
