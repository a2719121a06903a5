"""The board as the engine sees it: the one place that handles board messages and link events.

Owns: ``BoardDesk``: every Board API message routed (epochs to the stimulus pipeline,
EMG blocks to the free-running stream, impedances to the tube check, heartbeats and
status to the time base), the board's capabilities and the acquisition configured from
the settings after every (re)connection, the board's faults (lead off, board fault
alarms, the host-silent stop and the outputs commanded again), refusals (``Nack``), the
link's state (connected, lost, restored; the link-lost alarm) and the checks that a
command needs the link or a virtual board; ``fault_names``.
May import: ``app.alarms``, ``app.api.protocol`` (errors), ``app.engine`` rooms
(context, ledger, timebase, stimulator, alarm_desk, stimulus, emg_stream, tube),
``firmware_bridge.messages``.

Seam for data-flow supervision and link counters: ``message`` sees every message from
the board and ``link_event`` every change of the link.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from app.alarms import AlarmKind
from app.api import protocol as p
from app.engine.alarm_desk import AlarmDesk
from app.engine.context import EngineContext
from app.engine.emg_stream import EmgStream
from app.engine.ledger import Ledger
from app.engine.stimulator import Stimulator
from app.engine.stimulus import StimulusPipeline
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from firmware_bridge.messages import (
    BoardHeartbeat,
    BoardMessage,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    EmgBlock,
    Fault,
    ImpedanceResult,
    Nack,
    Output,
    StimEpoch,
)

_FAULT_NAMES = {
    Fault.LEAD_OFF: "lead_off",
    Fault.COMPLIANCE_LIMIT: "compliance_limit",
    Fault.ADC_SATURATION: "adc_saturation",
    Fault.OVER_CURRENT: "over_current",
    Fault.WATCHDOG: "watchdog",
    Fault.HOST_SILENT: "host_silent",
    Fault.BACKUP_BEEPER: "backup_beeper",
    Fault.INTERNAL: "internal",
}
# faults that are a board fault alarm (the others are handled on their own)
_BOARD_FAULT_BITS = int(Fault.OVER_CURRENT | Fault.WATCHDOG | Fault.INTERNAL)
_KNOWN_FAULT_BITS = 0xFF
# settings the board acquires with (``configure``)
ACQUISITION_SETTINGS = ("acq.sample_rate_hz", "acq.stream_block_ms", "analysis.window_ms")


def fault_names(faults: int) -> list[str]:
    """The board's fault bits in words (unknown bits as ``unknown_0x..``)."""
    names = [name for bit, name in _FAULT_NAMES.items() if faults & bit]
    unknown = int(faults) & ~_KNOWN_FAULT_BITS
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


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

    # -- messages

    def message(self, msg: BoardMessage) -> None:
        """One message from the board (any Board API type)."""
        if isinstance(msg, StimEpoch):
            self.pipeline.epoch(msg)
        elif isinstance(msg, EmgBlock):
            self.emg.block(msg)
        elif isinstance(msg, BoardHeartbeat):
            self.time.learn_offset(msg.board_time_us)
        elif isinstance(msg, BoardStatus):
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
        self.time.forget_offset()  # a (re)started board session: learn its clock again
        if first:
            self.ledger.write("link", {"event": "capabilities", "detail": {
                "firmware_version": caps.firmware_version, "board_id": caps.board_id,
                "protocol_version": caps.protocol_version, "simulated": caps.simulated,
                "max_current_uA": caps.max_current_uA, "sample_rates_hz": list(caps.sample_rates_hz)}})
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
        bad = (faults & _BOARD_FAULT_BITS) | (faults & ~_KNOWN_FAULT_BITS)
        old_bad = (old & _BOARD_FAULT_BITS) | (old & ~_KNOWN_FAULT_BITS)
        if bad and bad != old_bad:
            self.alarms.raise_technical(AlarmKind.BOARD_FAULT, message="Board fault: " + ", ".join(fault_names(bad)),
                                        detail={"faults": fault_names(bad)})
        elif old_bad and not bad:
            self.alarms.clear_technical(AlarmKind.BOARD_FAULT)

    # -- the link

    def link_event(self, kind: str | Enum, detail: str = "") -> None:
        """The link's supervisor: connected, restored, lost, port_error, port_opened."""
        kind = str(kind.value) if isinstance(kind, Enum) else kind
        if kind in ("connected", "restored"):
            was_up = self.link_up
            self.link_up = True
            self.time.forget_offset()
            if not was_up:
                self.ledger.write("link", {"event": "connected" if kind == "connected" else "reconnected",
                                           "detail": detail})
                self.ledger.event("technical", "link_restored" if self.link_ever_up else "link_connected",
                                  "board link " + ("restored" if self.link_ever_up else "connected"),
                                  detail={"detail": detail})
                self.alarms.clear_technical(AlarmKind.BOARD_LINK_LOST)
            self.link_ever_up = True
            self.configure()
        elif kind == "lost":
            if self.link_up or not self.link_ever_up:
                self.link_up = False
                self.acq_configured = False
                self.ledger.write("link", {"event": "lost", "detail": detail})
                self.ledger.event("technical", "link_lost", f"board link lost: {detail}", priority="high",
                                  detail={"detail": detail})
                self.alarms.raise_technical(AlarmKind.BOARD_LINK_LOST, message=(
                    f"No data from the board ({detail}): the nerve is NOT being monitored."))
        elif kind in ("port_error", "port_opened"):
            self.ledger.write("link", {"event": kind, "detail": detail})
            self.ledger.event("technical", kind, f"board port: {detail}",
                              priority="info" if kind == "port_opened" else "medium")

    # -- what commands need

    def require_link(self, what: str) -> None:
        """``what`` needs the board: refused while the link is down."""
        if not self.link_up:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: the board link is down; check the USB cable and the board")

    def require_sim(self, what: str) -> None:
        """``what`` controls the virtual board: refused on a real one."""
        if self.capabilities is None:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: no board has answered yet")
        if not self.capabilities.simulated or not self.ctx.options.allow_sim_control:
            raise p.ApiError(p.NOT_SIMULATED, f"{what}: the board is a real board; virtual-board controls are refused")

    def self_test(self) -> dict[str, Any]:
        """The board's line of the self-test."""
        caps = self.capabilities
        if not self.link_up or caps is None:
            return {"item": "board", "ok": False, "message": "the board does not answer"}
        return {"item": "board", "ok": not (self.faults & ~int(Fault.LEAD_OFF)),
                "message": f"{caps.board_id} firmware {caps.firmware_version}"
                + (" (virtual)" if caps.simulated else "")
                + ("; faults: " + ", ".join(fault_names(self.faults)) if self.faults else "")}
