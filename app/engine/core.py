"""The engine's pure core: one ``Monitor`` composes analysis, rules, alarms, outputs and the record.

Owns: the case state (case data, probe site/side/step, stimulation settings with the
``stim.confirm_above_mA`` confirmation, step tagging, troubleshooting, mapping, staging,
tube check, notes, snapshots), the mapping of board timestamps to case time, the flow
board message -> analysis -> rules -> alarms -> outputs, technical conditions (link lost,
board faults, lead off, storage problem, audio failure, engine fault), the API command
handler, the state snapshot and the event stream, and the periodic engine-state entries
that let a crashed case resume (``app.engine.resume``).
May import: ``firmware_bridge.messages``/``clock``, ``app.model``, ``app.settings``,
``app.analysis``, ``app.rules``, ``app.alarms``, ``app.record`` (entries only) and
``app.api.protocol``. No threads, sockets or files: the journal, the outputs and the
publishing sink are injected objects, time comes from the injected clock.

Inputs: ``board_message(msg)``, ``link_event(kind, detail)``, ``handle(request)`` (the
same validated requests the API carries) and ``tick()``. Outputs:
``take_host_messages()`` (for the board), the journal (written FIRST, before anything is
published or sounded; the entries one stimulus makes (the stimulus, its rule events, the
alarm transitions they cause, step results) go in one transaction, ``append_many``, and
what they announce is held back until it is written), ``sink(stream, message, sticky)``
(the API server's ``publish``), and the outputs object (sounds, LEDs).

Case time (``t_s`` everywhere) is seconds since the case was opened on the engine clock.
Board timestamps are mapped to it through an offset learnt from the board's heartbeats
(the earliest arrival wins, a jump of more than ``_OFFSET_JUMP_S`` re-anchors: a board
reset or clock drift).
"""

from __future__ import annotations

import collections
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from app import __version__
from app.alarms import AlarmKind, AlarmManager, LogEntry, apply_rule_event
from app.api import protocol as p
from app.engine import inbox
from app.engine.breathing import BreathingCheck, breathing_message, interrupted
from app.model import InvalidReason, Measurement, RuleEvent, Side, Site, Source, Step, Stimulus
from app.record import entries as E
from app.settings import SCHEMA, SettingError, Settings
from firmware_bridge.clock import Clock
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    ConfigureAcquisition,
    Electrode,
    EmgBlock,
    Fault,
    ImpedanceRequest,
    ImpedanceResult,
    Nack,
    Output,
    SimControl,
    StimEpoch,
    Stimulate,
    StimMode,
)

log = logging.getLogger("lnm.engine")

ENGINE_STATE_FORMAT = "lnm-engine-state/1"
_OFFSET_JUMP_S = 0.25
_DETECT_LAG_S = 0.08  # free-running detection waits this long for the epochs of the stimuli in the stream
_STEP_SITE = {"V": Site.VAGUS, "R": Site.RLN, "S": Site.EBSLN}
# journal vocabulary of laryngoscopy findings (app.record.entries.FOLD_FINDINGS)
_FINDING_TO_RECORD = {"normal": "normal", "paresis": "reduced", "palsy": "immobile", "not_examined": "not_assessed"}
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
_BOARD_FAULT_BITS = Fault.OVER_CURRENT | Fault.WATCHDOG | Fault.INTERNAL
_KNOWN_FAULT_BITS = 0xFF


def step_site(step: Step | str) -> Site:
    """The nerve site an INMSG step stimulates (V -> vagus, R -> RLN, S -> EBSLN)."""
    return _STEP_SITE[Step(step).value[0]]


def fault_names(faults: int) -> list[str]:
    names = [name for bit, name in _FAULT_NAMES.items() if faults & bit]
    unknown = int(faults) & ~_KNOWN_FAULT_BITS
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


# settings the board acquires with (``_configure_board``)
_ACQUISITION_SETTINGS = ("acq.sample_rate_hz", "acq.stream_block_ms", "analysis.window_ms")


@dataclass
class EngineOptions:
    """How the engine runs (not clinical settings: those live in ``app.settings``)."""

    stream_decimation: int = 1  # ConfigureAcquisition.stream_decimation for the free-running stream
    journal_emg: bool = True  # keep the free-running EMG in the journal
    emg_chunk_s: float = 1.0  # free-running EMG journal entry length
    display_epoch_hz: int = 5000  # epoch waveforms decimated to this rate for display
    emg_bin_hz: int = 1000  # free-running EMG envelope bins per second for display
    emg_publish_s: float = 0.1
    state_publish_s: float = 0.1
    snapshot_every_s: float = 10.0  # engine-state entry at least this often while stimuli arrive
    events_kept: int = 2000
    trend_points: int = 2000  # per series, then decimated by two
    allow_sim_control: bool = True


@dataclass
class OutputSettings:
    output: Output
    current_mA: float
    rate_hz: float
    pulse_width_us: int
    on: bool = False
    delivered_mA: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"on": self.on, "current_mA": round(self.current_mA, 3), "rate_hz": round(self.rate_hz, 3),
                "pulse_width_us": self.pulse_width_us,
                "delivered_mA": None if self.delivered_mA is None else round(self.delivered_mA, 3)}

    def stimulate(self) -> Stimulate:
        if not self.on:
            return Stimulate(self.output, StimMode.STOP, int(round(self.current_mA * 1000)), self.pulse_width_us,
                             int(round(self.rate_hz * 1000)))
        return Stimulate(self.output, StimMode.CONTINUOUS, int(round(self.current_mA * 1000)),
                         self.pulse_width_us, int(round(self.rate_hz * 1000)))


class _Trend:
    """One amplitude/latency series with bounded memory (decimated by two when full)."""

    __slots__ = ("t", "amp", "lat", "stride", "skip", "limit")

    def __init__(self, limit: int) -> None:
        self.t: list[float] = []
        self.amp: list[float | None] = []
        self.lat: list[float | None] = []
        self.stride = 1
        self.skip = 0
        self.limit = limit

    def add(self, t: float, amp: float | None, lat: float | None) -> None:
        self.skip += 1
        if self.skip < self.stride:
            return
        self.skip = 0
        self.t.append(round(t, 3))
        self.amp.append(None if amp is None else round(amp, 1))
        self.lat.append(None if lat is None else round(lat, 3))
        if len(self.t) >= self.limit:
            self.t, self.amp, self.lat = self.t[::2], self.amp[::2], self.lat[::2]
            self.stride *= 2


class Outputs:
    """What the core needs from the appliance outputs (sounds, LEDs, buzzer).

    The default does nothing; ``app.engine.outputs`` adapts ``app.outputs`` to it.
    """

    def alarm_state(self, state: Any) -> None: ...

    def stimulus(self, m: Measurement, response: bool) -> None: ...

    def emg(self, samples_uV: np.ndarray, sample_rate_hz: float, muted: bool) -> None: ...

    def update(self) -> None: ...

    def settings_changed(self, settings: Settings) -> None: ...

    def status(self) -> tuple[bool, str]:
        return True, ""

    def describe(self) -> str:
        return "none"

    def self_test(self) -> list[dict[str, Any]]:
        return [{"item": "audio", "ok": False, "message": "no audio output configured"}]


class NullJournal:
    """A journal that keeps nothing (monitoring without a record: tests, benchmarks)."""

    def __init__(self) -> None:
        self.count = 0
        self._n = 0

    def open_case(self, case_data: Mapping[str, Any]) -> str:
        self._n += 1
        return f"case-{self._n}"

    def append(self, case_id: str, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
               t_s: float | None = None) -> int:
        E.validate(kind, payload, blob)
        self.count += 1
        return self.count

    def append_many(self, case_id: str, items: Iterable[tuple]) -> list[int]:
        return [self.append(case_id, *item) for item in items]

    def close_case(self, case_id: str, payload: Mapping[str, Any] | None = None) -> int:
        self.count += 1
        return self.count


def measurement_from_json(d: Mapping[str, Any]) -> Measurement:
    """A ``Measurement`` back from ``Measurement.to_json()`` (journal stimulus entries)."""
    stim = Stimulus(
        index=int(d["index"]), t_s=float(d["t_s"]), site=Site(d["site"]), side=Side(d["side"]),
        source=Source(d["source"]), set_mA=float(d["set_mA"]),
        delivered_mA=None if d.get("delivered_mA") is None else float(d["delivered_mA"]),
        pw_us=int(d.get("pw_us") or 100), step=Step(d["step"]) if d.get("step") else None,
    )
    return Measurement(
        stimulus=stim, channel=d.get("channel"), valid=bool(d["valid"]),
        invalid_reason=InvalidReason(d["invalid_reason"]) if d.get("invalid_reason") else None,
        response=bool(d["response"]), amplitude_uV=d.get("amplitude_uV"), latency_ms=d.get("latency_ms"),
        onset_latency_ms=d.get("onset_latency_ms"),
    )


def _default_analyzer(settings: Settings) -> Any:
    from app.analysis import EpochAnalyzer

    return EpochAnalyzer(settings)


def _default_rules(settings: Settings) -> Any:
    from app.rules.engine import RuleEngine

    return RuleEngine(settings)


def _default_detector(settings: Settings, sample_rate_hz: float) -> Any:
    from app.analysis.freerun import FreeRunDetector

    return FreeRunDetector(settings, sample_rate_hz, stimulus_wait_s=_DETECT_LAG_S)


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


class Monitor:
    """The monitoring engine's core (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        journal: Any = None,
        outputs: Outputs | None = None,
        options: EngineOptions | None = None,
        sink: Callable[[str, Mapping[str, Any], bool], None] | None = None,
        wants: Callable[[str], bool] | None = None,
        board_url: str = "",
        profile: str | None = None,
        config_dir: Any = None,
        wall_clock: Callable[[], datetime] | None = None,
        analyzer_factory: Callable[[Settings], Any] = _default_analyzer,
        rules_factory: Callable[[Settings], Any] = _default_rules,
        detector_factory: Callable[[Settings, float], Any] | None = _default_detector,
        settings_loader: Callable[[Any, str | None], Settings] | None = None,
        documents: Any = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.journal = journal if journal is not None else NullJournal()
        self.outputs = outputs or Outputs()
        self.options = options or EngineOptions()
        self._sink = sink or (lambda stream, msg, sticky: None)
        self._wants = wants or (lambda stream: True)
        self.board_url = board_url
        self.profile = profile
        self.config_dir = config_dir
        self._wall = wall_clock or (lambda: datetime.now(timezone.utc))
        self._analyzer_factory = analyzer_factory
        self._rules_factory = rules_factory
        self._detector_factory = detector_factory
        self._settings_loader = settings_loader
        self.documents = documents  # app.engine.documents.Documents (report/export), optional

        self.started_at = clock.now()
        self.case_id: str | None = None
        self.case_data: dict[str, Any] | None = None
        self.case_resumed = False
        self.last_case_id: str | None = None
        self._origin = self.started_at  # clock time of case t = 0

        self.analyzer = analyzer_factory(settings)
        self.rules = rules_factory(settings)
        self.detector: Any = None
        self._detector_rate: float | None = None
        self.alarms = AlarmManager(clock, settings, on_log=self._alarm_logged)

        self.probe = OutputSettings(Output.PROBE, settings["stim.probe_current_mA"], settings["stim.probe_rate_hz"],
                                    int(settings["stim.pulse_width_us"]))
        self.aps = OutputSettings(Output.APS, settings["stim.aps_current_mA"], settings["stim.aps_rate_hz"],
                                  int(settings["stim.pulse_width_us"]))
        self.probe_site = Site.VAGUS
        self.probe_side = Side.L
        self.probe_step: Step | None = None
        self.aps_side = Side.L
        self.pending_step: dict[str, Any] | None = None
        self.stim_index = 0

        # board and link
        self.capabilities: Capabilities | None = None
        self.link_up = False
        self.link_ever_up = False
        self.board_faults = 0
        self.board_stimulating: tuple[Output, ...] = ()
        self._board_offset: float | None = None
        self.acq_configured = False
        self._to_board: list[Any] = []

        # measurement state
        self.last: dict[str, dict[str, Any]] = {}  # side -> last measurement json (+ pct)
        self.last_valid: dict[tuple[str, str], Measurement] = {}  # (site, side) -> measurement
        self.trends: dict[str, _Trend] = {}
        self.cautery = False
        self.irritation: dict[str, float] = {}  # side -> case time (onset) of the last finished episode
        self.irritation_active: dict[str, float] = {}  # side -> onset of an episode going on
        self.tube: dict[str, Any] | None = None
        self.tube_t_s: float | None = None
        self.tube_override: dict[str, Any] | None = None
        self.breathing = BreathingCheck(settings)  # the tube check's breathing-variation window
        self._staging_seen: int = 0

        # free-running EMG buffers (bounded)
        self._emg_chunk: list[np.ndarray] = []
        self._emg_chunk_n = 0
        self._emg_chunk_first: int | None = None
        self._emg_chunk_t: float | None = None
        self._emg_rate: float | None = None
        self._emg_bins_min: list[np.ndarray] = []
        self._emg_bins_max: list[np.ndarray] = []
        self._emg_bins_t: float | None = None
        self._emg_rest: np.ndarray | None = None
        self._last_emg_publish = clock.now()
        self._last_emg_block_end: int | None = None

        # events, publishing, snapshots
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.options.events_kept)
        self._event_seq = 0
        self._state_seq = 0
        self._alarms_dirty = True
        self._snapshot_dirty = False
        self._stimuli_since_snapshot = 0
        self._last_snapshot_t = clock.now()
        self._last_state_publish = -1e9
        self._last_alarm_publish = -1e9
        self._alarm_state: Any = None
        self._paused = False
        self._deferred: list[Callable[[], None]] = []
        self.storage_ok = True
        self.storage_message = ""
        self.audio_ok = True
        self.audio_message = ""
        self.counters: collections.Counter[str] = collections.Counter()
        self._replaying = False
        self._batch: list[tuple[str, Mapping[str, Any], bytes | None, float]] | None = None  # one transaction
        self._held: list[tuple[str, Mapping[str, Any], bool]] | None = None  # published once it is written
        self.fatal: str | None = None

    # ================================================================== time

    @property
    def case_origin(self) -> float:
        """Clock time of case time 0 (engine start when no case is open)."""
        return self._origin

    def now_t(self) -> float:
        """Case time now (seconds since the case opened; since engine start without a case)."""
        return self.clock.now() - self._origin

    def _board_clock(self, board_time_us: int, latency_s: float = 0.0) -> float:
        """Board time -> engine clock seconds."""
        board_s = board_time_us / 1e6
        if self._board_offset is None:
            self._board_offset = self.clock.now() - latency_s - board_s
        return board_s + self._board_offset

    def _learn_offset(self, board_time_us: int) -> None:
        o = self.clock.now() - board_time_us / 1e6
        if self._board_offset is None or o < self._board_offset or o - self._board_offset > _OFFSET_JUMP_S:
            self._board_offset = o

    def case_t_of_board(self, board_time_us: int, latency_s: float = 0.0) -> float:
        return self._board_clock(board_time_us, latency_s) - self._origin

    # ================================================================== journal and publishing

    def _journal(self, kind: str, payload: Mapping[str, Any], blob: bytes | None = None,
                 t_s: float | None = None) -> None:
        if self.case_id is None or self._replaying:
            return
        t = self.now_t() if t_s is None else t_s
        if self._batch is not None:
            self._batch.append((kind, payload, blob, t))
        else:
            self.journal.append(self.case_id, kind, payload, blob, t_s=t)
        self.counters["journal_entries"] += 1

    def _publish(self, stream: str, message: Mapping[str, Any], sticky: bool = False) -> None:
        if self._replaying:
            return
        if self._held is not None:
            self._held.append((stream, message, sticky))
            return
        self._sink(stream, message, sticky)

    def _begin_transaction(self) -> None:
        """From here on, journal entries are collected (and what announces them is held)
        until ``_commit_transaction`` writes them in one transaction."""
        self._batch, self._held = [], []

    def _commit_transaction(self) -> None:
        """Write the collected entries (one transaction, one durable sync), then publish
        what was held: journal first (nothing is announced when the write raises)."""
        batch, held = self._batch or [], self._held or []
        self._batch = self._held = None
        if len(batch) == 1:
            kind, payload, blob, t = batch[0]
            self.journal.append(self.case_id, kind, payload, blob, t_s=t)
        elif batch:
            self.journal.append_many(self.case_id, batch)
        for stream, message, sticky in held:
            self._sink(stream, message, sticky)

    def _event(self, category: str, kind: str, message: str, *, priority: str | None = None,
               side: str | None = None, site: str | None = None, detail: Mapping[str, Any] | None = None,
               t_s: float | None = None) -> dict[str, Any]:
        """An event for people (already journaled by the caller): kept and published."""
        self._event_seq += 1
        ev = {"type": "event", "seq": self._event_seq, "t_s": round(self.now_t() if t_s is None else t_s, 4),
              "category": category, "kind": kind, "priority": priority, "side": side, "site": site,
              "message": message, "detail": dict(detail or {})}
        if not self._replaying:
            self.events.append(ev)
            self._publish("events", ev)
        return ev

    def _operator(self, req: p.Request, action: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Journal an accepted operator command, then announce it."""
        d = dict(req.args if detail is None else detail)
        if self.case_id is None:
            log.info("operator action outside a case: %s %s by %s", action or req.cmd, d, req.client or "operator")
        self._journal("operator", {"action": action or req.cmd, "who": req.client or "operator", "detail": d})
        self._event("operator", action or req.cmd, f"{req.client or 'operator'}: {action or req.cmd}",
                    detail={"client": req.client, **d})
        self._snapshot_dirty = True

    # ================================================================== alarms

    def _alarm_logged(self, entry: LogEntry) -> None:
        """AlarmManager's on_log: journal every transition, then announce it."""
        side = site = None
        key = (entry.alarm_id or "").partition(":")[2]
        if "-" in key:
            site, _, side = key.rpartition("-")
            if side not in ("L", "R"):
                side = None
        message = str(entry.detail.get("message") or "") if isinstance(entry.detail, Mapping) else ""
        t_case = entry.t - self._origin
        self._journal("alarm", {**E.alarm(entry.transition, entry.alarm_id or "audio", entry.priority, side,
                                          entry.who, message or None, entry.kind, site),
                                "detail": _plain(entry.detail)}, t_s=t_case)
        text = f"{entry.transition.replace('_', ' ')}: {entry.alarm_id or 'alarm audio'}"
        if message:
            text += f" ({message})"
        self._event("alarm", entry.transition, text, priority=entry.priority, side=side, site=site,
                    detail={"alarm": entry.alarm_id, "kind": entry.kind, "who": entry.who, **_plain(entry.detail)},
                    t_s=t_case)
        self._alarms_dirty = True
        self._snapshot_dirty = True

    def raise_technical(self, kind: AlarmKind, key: str = "", message: str | None = None,
                        detail: Mapping[str, Any] | None = None) -> None:
        self.alarms.raise_condition(kind, key, message=message, detail=detail, who="engine")

    def clear_technical(self, kind: AlarmKind, key: str = "", detail: Mapping[str, Any] | None = None) -> None:
        self.alarms.clear_condition(kind, key, who="engine", detail=detail)

    def alarms_json(self) -> dict[str, Any]:
        st = self.alarms.state()
        active = []
        for a in st.alarms:
            d = a.to_json()
            site, _, side = a.key.rpartition("-")
            d.update(
                technical=a.category == "technical",
                raised_t_s=round(a.since - self._origin, 3),
                side=side if side in ("L", "R") else None,
                site=site if side in ("L", "R") else None,
                name=a.title,
            )
            d.pop("since", None)
            d.pop("unacknowledged_since", None)
            active.append(d)
        audio = st.audio
        return {
            "type": "alarms",
            "audio": audio.mode,
            "pause_remaining_s": round(audio.remaining_s, 1) if audio.remaining_s is not None else 0.0,
            "audio_off_reminder_in_s": _round(audio.next_reminder_in_s, 1),
            "sounding": st.sounding,
            "sounding_id": st.sounding_id,
            "top": active[0]["id"] if active else None,
            "active": active,
            "notices": [
                {**n.to_json(), "t_s": round(n.t - self._origin, 3)} for n in list(st.notices)[-10:]
            ],
        }

    # ================================================================== board messages

    def board_message(self, msg: Any) -> None:
        """One message from the board (any Board API type)."""
        if isinstance(msg, StimEpoch):
            self._on_epoch(msg)
        elif isinstance(msg, EmgBlock):
            self._on_emg(msg)
        elif isinstance(msg, BoardHeartbeat):
            self._learn_offset(msg.board_time_us)
        elif isinstance(msg, BoardStatus):
            self._learn_offset(msg.board_time_us)
            self._on_status(msg)
        elif isinstance(msg, ImpedanceResult):
            self._on_impedance(msg)
        elif isinstance(msg, Capabilities):
            self._on_capabilities(msg)
        elif isinstance(msg, Nack):
            self._on_nack(msg)
        elif isinstance(msg, Ack):
            pass
        self._after_step()

    def _on_capabilities(self, caps: Capabilities) -> None:
        first = self.capabilities is None or caps != self.capabilities
        self.capabilities = caps
        self._board_offset = None  # a (re)started board session: learn its clock again
        if first:
            self._journal("link", {"event": "capabilities", "detail": {
                "firmware_version": caps.firmware_version, "board_id": caps.board_id,
                "protocol_version": caps.protocol_version, "simulated": caps.simulated,
                "max_current_uA": caps.max_current_uA, "sample_rates_hz": list(caps.sample_rates_hz)}})
            self._event("technical", "board", f"board {caps.board_id} firmware {caps.firmware_version}"
                        + (" (virtual board)" if caps.simulated else ""),
                        detail={"board_id": caps.board_id, "firmware": caps.firmware_version,
                                "simulated": caps.simulated})
        self._configure_board()

    def _configure_board(self) -> None:
        """Acquisition and the outputs that should be on, after (re)connection."""
        st = self.settings
        rate = int(st["acq.sample_rate_hz"])
        caps = self.capabilities
        if caps is not None and caps.sample_rates_hz and rate not in caps.sample_rates_hz:
            chosen = min(caps.sample_rates_hz, key=lambda r: abs(r - rate))
            self._event("technical", "sample_rate", f"board does not sample at {rate} Hz; using {chosen} Hz",
                        priority="info", detail={"wanted_hz": rate, "used_hz": chosen})
            rate = chosen
        block = max(1, int(round(rate * st["acq.stream_block_ms"] / 1000.0)))
        dec = max(1, int(self.options.stream_decimation))
        block = max(dec, block - block % dec)
        self._to_board.append(ConfigureAcquisition(
            sample_rate_hz=rate, channel_mask=0b11, gain=1, stream_enabled=True, stream_block_samples=block,
            stream_decimation=dec, epoch_pre_ms=10, epoch_post_ms=int(round(st["analysis.window_ms"]))))
        self.acq_configured = True
        for out in (self.probe, self.aps):
            if out.on and self.case_id is not None:
                self._to_board.append(out.stimulate())

    def _on_nack(self, nack: Nack) -> None:
        text = f"the board refused a command: {nack.reason.name}" + (f" ({nack.detail})" if nack.detail else "")
        self._journal("link", {"event": "nack", "detail": {"seq": nack.seq, "reason": nack.reason.name,
                                                           "detail": nack.detail}})
        self._event("technical", "board_refused", text, priority="info",
                    detail={"seq": nack.seq, "reason": nack.reason.name, "detail": nack.detail})

    def _on_status(self, status: BoardStatus) -> None:
        faults = int(status.faults)
        changed = faults != self.board_faults
        old = self.board_faults
        self.board_faults = faults
        self.board_stimulating = tuple(status.stimulating)
        if changed:
            names = fault_names(faults)
            self._journal("link", {"event": "board_status", "detail": {"faults": names,
                                                                       "stimulating": [o.name for o in status.stimulating]}})
            self._event("technical", "board_status", "board faults: " + (", ".join(names) or "none"),
                        detail={"faults": names})
        # lead off
        if faults & Fault.LEAD_OFF and not old & Fault.LEAD_OFF:
            self.raise_technical(AlarmKind.LEAD_OFF, message="An EMG electrode is disconnected: that side is not monitored.")
        elif old & Fault.LEAD_OFF and not faults & Fault.LEAD_OFF:
            self.clear_technical(AlarmKind.LEAD_OFF)
        # board faults (over-current, watchdog reset, internal, unknown bits)
        bad = (faults & int(_BOARD_FAULT_BITS)) | (faults & ~_KNOWN_FAULT_BITS)
        old_bad = (old & int(_BOARD_FAULT_BITS)) | (old & ~_KNOWN_FAULT_BITS)
        if bad and bad != old_bad:
            self.raise_technical(AlarmKind.BOARD_FAULT, message="Board fault: " + ", ".join(fault_names(bad)),
                                 detail={"faults": fault_names(bad)})
        elif old_bad and not bad:
            self.clear_technical(AlarmKind.BOARD_FAULT)
        # the board stopped stimulating on its own (host heartbeat missing): command again
        if faults & Fault.HOST_SILENT and not old & Fault.HOST_SILENT:
            self._journal("link", {"event": "host_silent", "detail": {"faults": fault_names(faults)}})
            self._event("technical", "host_silent", "the board missed the engine's heartbeat and stopped stimulation",
                        priority="medium")
        if not faults & Fault.HOST_SILENT and self.case_id is not None and self.link_up:
            for out in (self.probe, self.aps):
                if out.on and out.output not in status.stimulating and not faults & Fault.OVER_CURRENT:
                    self.counters["stimulation_restarted"] += 1
                    self._to_board.append(out.stimulate())

    def _on_impedance(self, res: ImpedanceResult) -> None:
        st = self.settings
        imp = {Electrode(k).name: int(v) for k, v in res.impedances_ohm}
        self.breathing.start(self.clock.now())  # then a window of free-running EMG for the breathing variation
        payload = E.tube_check(imp, st["tube.max_impedance_kohm"], st["tube.max_imbalance_kohm"],
                               breathing_variation=self.breathing.json(self.clock.now()), override=self.tube_override)
        if payload["passed"]:
            self.tube_override = None
            payload["override"] = None  # a passing check needs none (an earlier override stays in its own entry)
        self.tube = payload
        self.tube_t_s = self.now_t()
        self._journal("tube_check", payload)
        self._event("procedure", "tube_check",
                    ("Tube check passed: " if payload["passed"] else "Tube check FAILED: ") + payload["message"],
                    priority=None if payload["passed"] else "low", detail=payload)
        self._snapshot_dirty = True

    def _breathing_feed(self, uv: np.ndarray, t0: float, rate: float) -> None:
        done = self.breathing.feed(uv, t0 + self._origin, rate)
        if done is not None:
            self._breathing_done(done)

    def _breathing_done(self, bv: dict[str, Any]) -> None:
        """The breathing-variation window of the last tube check is over: state, journal, event."""
        text, missing = breathing_message(bv)
        if self.tube is not None:
            self.tube = {**self.tube, "breathing_variation": bv}
            self._journal("tube_check", self.tube)
        self._event("procedure", "breathing_variation", text, priority="info" if missing else None,
                    detail={"breathing_variation": bv})
        self._snapshot_dirty = True

    # ------------------------------------------------------------------ stimulus epochs

    def _stimulus_of(self, e: StimEpoch) -> Stimulus:
        post_s = (e.samples.shape[1] - e.pre_samples) / float(e.sample_rate_hz) if e.samples.ndim == 2 else 0.05
        t_s = self.case_t_of_board(e.board_time_us, latency_s=post_s)
        if e.output == Output.APS:
            site, side, step, source = Site.VAGUS, self.aps_side, None, Source.APS
        else:
            site, side, step, source = self.probe_site, self.probe_side, self.probe_step, Source.PROBE
        if step is not None and step_site(step) is not site:
            step = None
        return Stimulus(
            index=self.stim_index, t_s=t_s, site=site, side=side, source=source,
            set_mA=e.set_current_uA / 1000.0,
            delivered_mA=None if e.delivered_current_uA < 0 else e.delivered_current_uA / 1000.0,
            pw_us=int(e.pulse_width_us), step=step,
        )

    def _on_epoch(self, e: StimEpoch) -> None:
        stim = self._stimulus_of(e)
        if self.detector is not None:
            self.detector.note_stimulus(stim.t_s)  # its window is not free-running EMG
        if self.breathing.active:
            t = stim.t_s + self._origin
            self.breathing.blank(t - 0.001, t + float(self.settings["analysis.window_ms"]) / 1000.0 + 0.005)
        self.stim_index += 1
        self.counters["stimuli"] += 1
        m = self.analyzer.measure_board_epoch(e, stim)
        if self.cautery and m.valid:
            # free-running detector says cautery is on: never a response, never a loss
            m = Measurement(m.stimulus, m.channel, False, InvalidReason.CAUTERY, False, None, None, None)
        out = self.probe if stim.source is Source.PROBE else self.aps
        out.delivered_mA = stim.delivered_mA
        threshold = float(self.settings["analysis.event_threshold_uV"])
        if self.case_id is not None:
            payload, blob = E.stimulus(m, e.microvolts(), e.sample_rate_hz, e.pre_samples,
                                       res_uV=max(e.nv_per_count / 1000.0, 1e-3), threshold_uV=threshold)
            # the stimulus and everything it causes (rule events, alarm transitions, step
            # results) in one transaction; sounds and announcements follow it
            self._begin_transaction()
            try:
                self._journal("stimulus", payload, blob, t_s=stim.t_s)
                self._measured(m)
            finally:
                self._commit_transaction()
        response = bool(m.valid and m.response)
        self.outputs.stimulus(m, response)
        self._publish_measurement(m, e)

    def _measured(self, m: Measurement) -> None:
        """A journaled measurement of the open case: rules, alarms, procedure, state."""
        stim = m.stimulus
        events = self.rules.process(m)
        self._stimuli_since_snapshot += 1
        for ev in events:
            self._rule_event(ev)
        if m.valid:
            self.last_valid[(stim.site.value, stim.side.value)] = m
        pend = self.pending_step
        if pend is not None and m.valid and stim.side.value == pend["side"] and stim.site is step_site(pend["step"]):
            self.pending_step = None
            self._record_step(Step(pend["step"]), m, who=pend["who"], how="operator")
        self._procedure_changed(m)
        self._remember(m)

    def _rule_event(self, ev: RuleEvent) -> None:
        self._journal("rule_event", E.rule_event(ev), t_s=ev.t_s)
        self.counters[f"rule_{ev.kind.value}"] += 1
        message = str(ev.detail.get("message") or ev.kind.value.replace("_", " "))
        where = f"{'left' if ev.side is Side.L else 'right'} {ev.site.value}"
        self._event("rule", ev.kind.value, f"{message} ({where})", priority=ev.priority.value,
                    side=ev.side.value, site=ev.site.value, detail={"stimulus_index": ev.stimulus_index,
                                                                     **_plain(ev.detail)}, t_s=ev.t_s)
        apply_rule_event(self.alarms, ev, who="rules")
        self._snapshot_dirty = True

    def _procedure_changed(self, m: Measurement | None) -> None:
        """Journal what the rule engine changed in the procedure for this measurement."""
        proc = self.rules.procedure
        if m is not None and m.stimulus.step is not None and m.valid:
            value = proc.step(m.stimulus.side, m.stimulus.step)
            if value and value.get("stimulus_index") == m.stimulus.index:
                self._step_recorded(m.stimulus.side.value, m.stimulus.step, value, m, who="probe", how="tagged")
        if m is not None and m.stimulus.site is Site.VAGUS and m.valid:
            other = m.stimulus.side.other
            ts = proc.troubleshooting(other)
            if ts and ts.get("open"):
                ans = ts["answers"].get("contralateral_vagus")
                if ans and ans.get("by") == "monitor" and abs(float(ans["t_s"]) - m.t_end_s) < 1e-6:
                    self._journal("troubleshooting", {"check": "contralateral_vagus", "answer": "yes",
                                                      "side": other.value, "question": ts.get("next_question"),
                                                      "who": "monitor"})
                    self._event("procedure", "troubleshooting",
                                f"contralateral vagus responds ({other.value} loss of signal): answered by the monitor",
                                side=other.value, detail={"check": "contralateral_vagus", "answer": "yes"})
        self._check_staging()

    def _check_staging(self) -> None:
        history = self.rules.procedure.staging_history()
        if len(history) > self._staging_seen:
            for entry in history[self._staging_seen:]:
                self._journal("staging", {"recommendation": entry["message"], "side": entry["side"], "who": "monitor"})
                self._event("rule", "staging_recommended", entry["message"], priority="info", side=entry["side"],
                            detail=entry)
            self._staging_seen = len(history)

    def _step_recorded(self, side: str, step: Step, value: Mapping[str, Any], m: Measurement | None,
                       who: str, how: str) -> None:
        payload = E.step(side, step.value, m, who=who, comment=f"recorded by {how}")
        self._journal("step", payload)
        amp = value.get("amplitude_uV")
        lat = value.get("latency_ms")
        text = f"{step.value} {side}: " + (f"{amp:.0f} uV" if amp is not None else "no value") + (
            f", {lat:.2f} ms" if lat is not None else "") + ("" if value.get("response") else " (no response)")
        self._event("procedure", "step_recorded", text, side=side, site=value.get("site"),
                    detail={"step": step.value, **_plain(value)})
        self._snapshot_dirty = True

    def _record_step(self, step: Step, m: Measurement, who: str, how: str) -> dict[str, Any]:
        value = self.rules.tag_step(step, m.stimulus.side, self.now_t(), measurement=m)
        self._step_recorded(m.stimulus.side.value, step, value, m, who=who, how=how)
        return value

    def _remember(self, m: Measurement) -> None:
        stim = m.stimulus
        d = m.to_json()
        amp_pct = lat_pct = None
        if stim.source is Source.APS:
            b = self.rules.aps_baseline(stim.side)
            if b and m.valid and m.amplitude_uV is not None and b.get("amplitude_uV"):
                amp_pct = round(m.amplitude_uV / b["amplitude_uV"] * 100.0, 1)
                if m.latency_ms is not None and b.get("latency_ms"):
                    lat_pct = round(m.latency_ms / b["latency_ms"] * 100.0, 1)
        d["amplitude_pct"] = amp_pct
        d["latency_pct"] = lat_pct
        self.last[stim.side.value] = d
        key = f"{stim.side.value}-{stim.site.value}-{stim.source.value}"
        tr = self.trends.get(key)
        if tr is None:
            tr = self.trends[key] = _Trend(self.options.trend_points)
        tr.add(stim.t_s, m.amplitude_uV if m.valid else None, m.latency_ms if m.valid else None)

    def _publish_measurement(self, m: Measurement, e: StimEpoch) -> None:
        if self._wants("measurements"):
            d = dict(self.last.get(m.stimulus.side.value) or m.to_json())
            if d.get("index") != m.stimulus.index:
                d = m.to_json()
            self._publish("measurements", {"type": "measurement", **d})
        if self._wants("waveforms"):
            uv = e.microvolts()
            factor = max(1, int(e.sample_rate_hz // self.options.display_epoch_hz))
            n = (uv.shape[1] // factor) * factor
            dec = uv[:, :n].reshape(uv.shape[0], -1, factor).mean(axis=2)
            labels = ("EMG L", "EMG R")
            self._publish("waveforms", {
                "type": "waveform", "index": m.stimulus.index, "t_s": round(m.stimulus.t_s, 4),
                "side": m.stimulus.side.value, "site": m.stimulus.site.value, "source": m.stimulus.source.value,
                "sample_rate_hz": e.sample_rate_hz / factor, "t0_ms": -1000.0 * e.pre_samples / e.sample_rate_hz,
                "channels": {labels[i]: np.round(dec[i], 1).tolist() for i in range(min(2, dec.shape[0]))},
            })

    # ------------------------------------------------------------------ free-running EMG

    def _on_emg(self, b: EmgBlock) -> None:
        rate = float(b.sample_rate_hz)
        uv = b.microvolts()
        n = uv.shape[1]
        t0 = self.case_t_of_board(b.board_time_us, latency_s=n / rate)
        if self._last_emg_block_end is not None and b.first_sample != self._last_emg_block_end:
            self.counters["emg_gaps"] += 1
            self._flush_emg_chunk()
        self._last_emg_block_end = b.first_sample + n
        self.counters["emg_blocks"] += 1
        if self.breathing.active:
            self._breathing_feed(uv, t0, rate)
        # irritation and cautery (the detector leaves the stimulus windows out)
        if self._detector_factory is not None:
            self._detect(uv, t0, rate)
        self.outputs.emg(uv, rate, self.cautery)
        # journal in chunks of about emg_chunk_s
        if self.case_id is not None and self.options.journal_emg:
            if self._emg_rate is not None and self._emg_rate != rate:
                self._flush_emg_chunk()
            if not self._emg_chunk:
                self._emg_chunk_first = b.first_sample
                self._emg_chunk_t = t0
                self._emg_rate = rate
            self._emg_chunk.append(uv)
            self._emg_chunk_n += n
            if self._emg_chunk_n >= rate * self.options.emg_chunk_s:
                self._flush_emg_chunk()
        if self._wants("emg"):
            self._emg_display(uv, rate, t0)

    def _detect(self, uv: np.ndarray, t0: float, rate: float) -> None:
        """Feed the free-running detector. Evoked responses are not spontaneous activity:
        ``_on_epoch`` notes each stimulus to the detector, which holds the newest
        ``_DETECT_LAG_S`` of the stream back until the epochs of the stimuli in it have
        arrived and leaves their windows out."""
        if self._detector_rate != rate:
            self.detector = self._detector_factory(self.settings, rate)
            self._detector_rate = rate
        if self.detector is None:
            return
        for item in self.detector.feed(uv, t0) or ():
            self._detector_item(item)

    def _flush_emg_chunk(self) -> None:
        if not self._emg_chunk or self._emg_rate is None:
            self._emg_chunk, self._emg_chunk_n = [], 0
            return
        data = np.concatenate(self._emg_chunk, axis=1) if len(self._emg_chunk) > 1 else self._emg_chunk[0]
        payload, blob = E.emg_block(float(self._emg_chunk_t or 0.0), int(self._emg_chunk_first or 0), self._emg_rate,
                                    data, labels=("EMG L", "EMG R")[: data.shape[0]])
        self._emg_chunk, self._emg_chunk_n = [], 0
        self._journal("emg_block", payload, blob, t_s=payload["t_s"])

    def _emg_display(self, uv: np.ndarray, rate: float, t0: float) -> None:
        per_bin = max(1, int(round(rate / self.options.emg_bin_hz)))
        if self._emg_rest is not None and self._emg_rest.shape[1]:
            t0 -= self._emg_rest.shape[1] / rate
            uv = np.concatenate([self._emg_rest, uv], axis=1)
        nb = uv.shape[1] // per_bin
        used = nb * per_bin
        self._emg_rest = uv[:, used:].copy() if used < uv.shape[1] else None
        if nb:
            x = uv[:, :used].reshape(uv.shape[0], nb, per_bin)
            if self._emg_bins_t is None:
                self._emg_bins_t = t0
            self._emg_bins_min.append(x.min(axis=2))
            self._emg_bins_max.append(x.max(axis=2))
        now = self.clock.now()
        if now - self._last_emg_publish >= self.options.emg_publish_s and self._emg_bins_min:
            lo = np.concatenate(self._emg_bins_min, axis=1)
            hi = np.concatenate(self._emg_bins_max, axis=1)
            labels = ("EMG L", "EMG R")
            self._publish("emg", {
                "type": "emg", "t_s": round(float(self._emg_bins_t or 0.0), 4), "bin_hz": rate / per_bin,
                "channels": {labels[i]: {"min": np.round(lo[i], 1).tolist(), "max": np.round(hi[i], 1).tolist()}
                             for i in range(min(2, lo.shape[0]))},
                "cautery": self.cautery,
            })
            self._emg_bins_min, self._emg_bins_max, self._emg_bins_t = [], [], None
            self._last_emg_publish = now

    def _detector_item(self, ev: Any) -> None:
        """One ``app.analysis.freerun.EmgEvent``: irritation episodes and cautery."""
        kind = getattr(ev.kind, "value", ev.kind)
        t = float(ev.t_s)
        if kind in ("cautery_start", "cautery_end"):
            starting = kind == "cautery_start"
            if starting == self.cautery:
                return
            self.cautery = starting
            payload: dict[str, Any] = {"state": "start" if starting else "end", "onset_s": float(ev.onset_s)}
            if ev.duration_s is not None:
                payload["duration_s"] = float(ev.duration_s)
            self._journal("cautery", payload, t_s=t)
            self._event("emg", kind, "electrocautery: EMG audio muted, stimuli meanwhile invalid" if starting
                        else f"electrocautery ended ({payload.get('duration_s', 0.0):.1f} s)", detail=payload, t_s=t)
            return
        channel = str(ev.channel or "")
        side = "L" if channel.endswith("L") else "R"
        if kind == "activity_start":
            self.irritation_active[side] = float(ev.onset_s)
            self._event("emg", "irritation_start", f"spontaneous EMG {('left' if side == 'L' else 'right')}: "
                        "nerve irritation going on", priority="info", side=side,
                        detail={"channel": channel, "onset_s": float(ev.onset_s), "pattern": ev.pattern}, t_s=t)
            return
        if kind != "activity":
            return
        self.irritation_active.pop(side, None)
        payload = {"side": side, "onset_s": float(ev.onset_s), "duration_s": float(ev.duration_s or 0.0),
                   "peak_uV": float(ev.peak_uV or 0.0), "channel": channel, "kind": ev.pattern}
        self._journal("irritation", payload, t_s=t)
        self.irritation[side] = payload["onset_s"]
        self._event("emg", "irritation",
                    f"nerve irritation {('left' if side == 'L' else 'right')}: {ev.pattern or 'activity'} "
                    f"{payload['duration_s']:.1f} s, peak {payload['peak_uV']:.0f} uV"
                    + (f", {ev.potentials} potentials at {ev.rate_hz:.0f}/s" if ev.rate_hz else ""),
                    priority="info", side=side,
                    detail={**payload, "potentials": ev.potentials, "rate_hz": ev.rate_hz}, t_s=t)

    # ================================================================== link events

    def link_event(self, kind: str, detail: str = "") -> None:
        kind = getattr(kind, "value", kind)
        if kind in ("connected", "restored"):
            was_up = self.link_up
            self.link_up = True
            self._board_offset = None
            if not was_up:
                self._journal("link", {"event": "connected" if kind == "connected" else "reconnected",
                                       "detail": detail})
                self._event("technical", "link_restored" if self.link_ever_up else "link_connected",
                            "board link " + ("restored" if self.link_ever_up else "connected"), detail={"detail": detail})
                self.clear_technical(AlarmKind.BOARD_LINK_LOST)
            self.link_ever_up = True
            self._configure_board()
        elif kind == "lost":
            if self.link_up or not self.link_ever_up:
                self.link_up = False
                self.acq_configured = False
                self._journal("link", {"event": "lost", "detail": detail})
                self._event("technical", "link_lost", f"board link lost: {detail}", priority="high",
                            detail={"detail": detail})
                self.raise_technical(AlarmKind.BOARD_LINK_LOST, message=f"No data from the board ({detail}): the nerve is NOT being monitored.")
        elif kind in ("port_error", "port_opened"):
            self._journal("link", {"event": kind, "detail": detail})
            self._event("technical", kind, f"board port: {detail}", priority="info" if kind == "port_opened" else "medium")
        self._after_step()

    # ================================================================== storage and audio status

    def storage_status(self, ok: bool, message: str = "") -> None:
        """From the journal's on_status callback (may arrive during a journal write)."""
        def apply() -> None:
            if ok == self.storage_ok and message == self.storage_message:
                return
            self.storage_ok, self.storage_message = ok, message
            if ok:
                self._event("technical", "storage_recovered", "case record storage works again")
                self.clear_technical(AlarmKind.STORAGE_PROBLEM)
            else:
                self._event("technical", "storage_problem", f"case record storage problem: {message}", priority="medium")
                self.raise_technical(AlarmKind.STORAGE_PROBLEM, message=f"Storage problem: {message}. Monitoring and alarms continue.")
        self._deferred.append(apply)

    def _check_audio(self) -> None:
        """Follow the loudspeaker's health (the annunciator raises the audio-failure alarm)."""
        ok, message = self.outputs.status()
        if ok == self.audio_ok:
            return
        self.audio_ok, self.audio_message = ok, message
        if ok:
            self._journal("engine", {"event": "audio_recovered", "detail": message})
            self._event("technical", "audio_recovered", "audio output works again")
        else:
            self._journal("engine", {"event": "audio_failure", "detail": message})
            self._event("technical", "audio_failure", f"audio output failed: {message}; alarms on the backup buzzer",
                        priority="high")

    # ================================================================== time passes

    def tick(self) -> None:
        """Timers: alarm pause/escalation, outputs, publishing, periodic engine-state entries."""
        self.alarms.tick()
        self._check_audio()
        bv = self.breathing.poll(self.clock.now())
        if bv is not None:
            self._breathing_done(bv)
        self._after_step(tick=True)
        now = self.clock.now()
        if self._wants("state") and now - self._last_state_publish >= self.options.state_publish_s:
            self._last_state_publish = now
            self._publish("state", self.state_snapshot(), sticky=True)
        if (self.case_id is not None and self._stimuli_since_snapshot
                and now - self._last_snapshot_t >= self.options.snapshot_every_s):
            self._write_snapshot()

    def _after_step(self, tick: bool = False) -> None:
        """End of every input: deferred work, alarm publication and sound, engine-state entry."""
        while self._deferred:
            self._deferred.pop(0)()
        dirty = self._alarms_dirty
        if dirty or (tick and self._paused):
            now = self.clock.now()
            st = self.alarms.state()
            self._alarm_state = st
            self._paused = st.audio.mode == "paused"
            if dirty or now - self._last_alarm_publish >= 1.0:
                self._alarms_dirty = False
                self._last_alarm_publish = now
                self._publish("alarms", self.alarms_json(), sticky=True)
        elif tick:
            self._alarm_state = self.alarms.state()
        if dirty or tick:
            # the annunciator reads the alarm manager itself: at every tick, and at once on a change
            self.outputs.alarm_state(self._alarm_state)
            self.outputs.update()
        if self._snapshot_dirty and self.case_id is not None:
            self._write_snapshot()

    @property
    def alarm_sounding(self) -> bool:
        """An alarm sounds now (as of the last step); carried by the host heartbeat."""
        st = self._alarm_state
        return st is not None and st.sounding is not None

    # ================================================================== engine state for resume

    def engine_state(self) -> dict[str, Any]:
        return {
            "format": ENGINE_STATE_FORMAT,
            "t_s": round(self.now_t(), 6),
            "rules": self.rules.snapshot(),
            "alarms": self.alarms.to_state(),
            "case": {
                "probe": self.probe.to_json(), "aps": self.aps.to_json(),
                "probe_site": self.probe_site.value, "probe_side": self.probe_side.value,
                "probe_step": self.probe_step.value if self.probe_step else None,
                "aps_side": self.aps_side.value, "stim_index": self.stim_index,
                "pending_step": self.pending_step, "tube": self.tube, "tube_t_s": self.tube_t_s,
                "tube_override": self.tube_override, "staging_seen": self._staging_seen,
                "settings": {k: v for k, v in self.settings.items() if v != SCHEMA[k].default},
                "profile": self.profile,
            },
        }

    def _write_snapshot(self) -> None:
        if self.case_id is None:
            return
        self._journal("engine", {"event": "state", "version": __version__, "detail": self.engine_state()})
        self._snapshot_dirty = False
        self._stimuli_since_snapshot = 0
        self._last_snapshot_t = self.clock.now()
        self.counters["snapshots"] += 1

    def restore_engine_state(self, data: Mapping[str, Any]) -> None:
        """Load an ``engine_state()`` (crash resume); the caller then replays later stimuli."""
        if data.get("format") != ENGINE_STATE_FORMAT:
            raise ValueError(f"engine state: format {data.get('format')!r} is not {ENGINE_STATE_FORMAT!r}")
        from app.rules.engine import RuleEngine

        case = data["case"]
        changes = dict(case.get("settings") or {})
        if changes:
            self.settings = self.settings.with_changes(changes, "resumed case")
            self._settings_applied()
        self.rules = RuleEngine.restore(self.settings, data["rules"])
        self.alarms.restore(data["alarms"], who="resume")
        for out, key in ((self.probe, "probe"), (self.aps, "aps")):
            d = case[key]
            out.current_mA, out.rate_hz, out.pulse_width_us = float(d["current_mA"]), float(d["rate_hz"]), int(d["pulse_width_us"])
            out.on = bool(d["on"])
        self.probe_site, self.probe_side = Site(case["probe_site"]), Side(case["probe_side"])
        self.probe_step = Step(case["probe_step"]) if case.get("probe_step") else None
        self.aps_side = Side(case["aps_side"])
        self.stim_index = int(case["stim_index"])
        self.pending_step = case.get("pending_step")
        self.tube, self.tube_t_s, self.tube_override = case.get("tube"), case.get("tube_t_s"), case.get("tube_override")
        if isinstance(self.tube, dict) and self.tube.get("breathing_variation") is not None:
            self.tube = {**self.tube, "breathing_variation": interrupted(self.tube["breathing_variation"])}
        self._staging_seen = int(case.get("staging_seen", 0))
        self.profile = case.get("profile", self.profile)
        self._alarms_dirty = True

    def resume_case(self, case_id: str, case_data: Mapping[str, Any], case_t: float,
                    state: Mapping[str, Any] | None, stimuli: Iterable[tuple[Mapping[str, Any], bool]],
                    journaled_rule_events: set[tuple[str, int | None, str, str]], detail: Mapping[str, Any]) -> None:
        """Continue a case left open (crash, power loss); see ``app.engine.resume``.

        ``state``: the last ``engine_state()`` entry (or None); ``stimuli``: every stimulus
        payload of the case in order with a flag "after the state entry"; those are run
        through the rules again, and the events they produce that the journal does not
        hold yet (``journaled_rule_events``: kind, stimulus index, side, site) are journaled.
        """
        self._begin_case(case_id, case_data, self.clock.now() - case_t)
        if state is not None:
            self.restore_engine_state(state)
        elif case_data.get("planned_sides"):
            self.rules.procedure.set_plan(case_data["planned_sides"], 0.0)
        replayed = 0
        for payload, after in stimuli:
            m = measurement_from_json(payload)
            if after:
                replayed += 1
                for ev in self.rules.process(m):
                    key = (ev.kind.value, ev.stimulus_index, ev.side.value, ev.site.value)
                    if key in journaled_rule_events:
                        apply_rule_event(self.alarms, ev, who="resume")
                    else:
                        self._rule_event(ev)
            self.stim_index = max(self.stim_index, m.stimulus.index + 1)
            if m.valid:
                self.last_valid[(m.stimulus.site.value, m.stimulus.side.value)] = m
            self._remember(m)
        self.case_resumed = True
        self._journal("engine", {"event": "resumed", "version": __version__,
                                 "detail": {**_plain(detail), "replayed_stimuli": replayed,
                                            "state_restored": state is not None}})
        self._event("case", "resumed", f"case {case_id} resumed after an interruption "
                    f"({detail.get('gap_s', 0):.1f} s without the engine); baselines and alarms restored",
                    priority="medium", detail={"case_id": case_id, **_plain(detail), "replayed_stimuli": replayed})
        self._alarms_dirty = True
        self._write_snapshot()
        self._after_step()

    def footswitch(self, event: str) -> None:
        """From the annunciator: a short press marks the moment (snapshot) in the record."""
        if event == "press" and self.case_id is not None:
            self._cmd_snapshot(p.Request(None, "snapshot", {}, client="footswitch"), comment="footswitch")

    # ================================================================== operator commands

    def handle(self, req: p.Request) -> dict[str, Any]:
        """Execute one validated request; returns the reply (never raises ApiError)."""
        cmd = p.COMMANDS[req.cmd]
        try:
            if cmd.needs_case and self.case_id is None:
                raise p.ApiError(p.BAD_STATE, f"{req.cmd}: no case is open (start one with case.start)")
            if cmd.simulation_only:
                self._require_sim(req.cmd)
            handler = getattr(self, "_cmd_" + req.cmd.replace(".", "_"))
            result = handler(req, **req.args)
            reply = p.reply_ok(req.id, result or {})
        except p.ApiError as err:
            reply = p.reply_error(req.id, err)
        self._after_step()
        return reply

    def _require_sim(self, what: str) -> None:
        if self.capabilities is None:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: no board has answered yet")
        if not self.capabilities.simulated or not self.options.allow_sim_control:
            raise p.ApiError(p.NOT_SIMULATED, f"{what}: the board is a real board; virtual-board controls are refused")

    def _require_link(self, what: str) -> None:
        if not self.link_up:
            raise p.ApiError(p.BOARD_UNAVAILABLE, f"{what}: the board link is down; check the USB cable and the board")

    # -- state and lists

    def _cmd_state_get(self, req: p.Request) -> dict[str, Any]:
        return self.state_snapshot()

    def _cmd_events_list(self, req: p.Request, since_seq: int = 0, limit: int = 100) -> dict[str, Any]:
        evs = [e for e in self.events if e["seq"] > since_seq][-limit:]
        return {"events": evs, "last_seq": self._event_seq}

    def _cmd_trend_get(self, req: p.Request, side: str | None = None, max_points: int = 1000) -> dict[str, Any]:
        series = []
        for key, tr in sorted(self.trends.items()):
            s_side, site, source = key.split("-")
            if side is not None and s_side != side:
                continue
            step = max(1, math.ceil(len(tr.t) / max_points))
            amp_pct = lat_pct = None
            b = self.rules.aps_baseline(Side(s_side)) if source == "APS" else None
            if b and b.get("amplitude_uV"):
                amp_pct = [None if a is None else round(a / b["amplitude_uV"] * 100, 1) for a in tr.amp[::step]]
                lat_pct = [None if x is None or not b.get("latency_ms") else round(x / b["latency_ms"] * 100, 1)
                           for x in tr.lat[::step]]
            series.append({"side": s_side, "site": site, "source": source, "t_s": tr.t[::step],
                           "amplitude_uV": tr.amp[::step], "latency_ms": tr.lat[::step],
                           "amplitude_pct": amp_pct, "latency_pct": lat_pct})
        return {"series": series}

    # -- case

    def _cmd_case_start(self, req: p.Request, patient_id: str, profile: str | None = None, **data: Any) -> dict[str, Any]:
        if self.case_id is not None:
            raise p.ApiError(p.BAD_STATE, f"case.start: case {self.case_id} is open; close it first (case.close)")
        if profile is not None:
            if self._settings_loader is None:
                raise p.ApiError(p.INVALID_ARGUMENT, "case.start: surgeon profiles are not available", argument="profile")
            try:
                new = self._settings_loader(self.config_dir, profile)
            except SettingError as exc:
                raise p.ApiError(p.SETTING_REJECTED, f"case.start: {exc}", argument="profile") from None
            self.settings = new
            self.profile = profile
            self._settings_applied()
        sides = data.get("planned_sides") or []
        tube = {k: data.get(f"tube_{k}") for k in ("type", "size_mm", "depth_cm")}
        case_data = {
            "patient_id": patient_id, "planned_sides": list(sides), "surgeon": data.get("surgeon"),
            "procedure": data.get("procedure"), "tube": {"type": tube["type"], "size_mm": tube["size_mm"],
                                                         "depth_cm": tube["depth_cm"]},
            "operator": req.client or None,
            "board": None if self.capabilities is None else {
                "firmware_version": self.capabilities.firmware_version, "board_id": self.capabilities.board_id,
                "simulated": self.capabilities.simulated},
        }
        case_id = self.journal.open_case(case_data)
        self._begin_case(case_id, case_data, self.clock.now())
        self._journal("settings", E.settings(self.settings, source="case start", profile=self.profile), t_s=0.0)
        self._journal("engine", {"event": "case_started", "version": __version__,
                                 "detail": {"board_url": self.board_url, "options": _plain(self.options.__dict__)}}, t_s=0.0)
        if sides:
            self.rules.procedure.set_plan(sides, 0.0)
        if self.tube is not None:
            self._journal("tube_check", {**self.tube, "message": f"{self.tube['message']} (measured before the case)"})
        self._operator(req, detail={"patient_id": patient_id, "profile": profile, **data})
        self._event("case", "opened", f"case {case_id} opened", detail={"case_id": case_id})
        self._write_snapshot()
        return {"case_id": case_id}

    def _begin_case(self, case_id: str, case_data: Mapping[str, Any], origin: float) -> None:
        self.case_id = case_id
        self.case_data = dict(case_data)
        self.case_resumed = False
        self._origin = origin
        self.rules = self._rules_factory(self.settings)
        self.stim_index = 0
        self.last.clear()
        self.last_valid.clear()
        self.trends.clear()
        self.pending_step = None
        self._staging_seen = 0
        self.tube_override = None
        self._emg_chunk, self._emg_chunk_n = [], 0
        self._alarms_dirty = True

    def _cmd_case_update(self, req: p.Request, **data: Any) -> dict[str, Any]:
        case_data = self.case_data if self.case_data is not None else {}
        self.case_data = case_data
        for k, v in data.items():
            if k.startswith("tube_"):
                self.case_data.setdefault("tube", {})[k[5:]] = v
            else:
                self.case_data[k] = v
        if "planned_sides" in data and data["planned_sides"]:
            self.rules.procedure.set_plan(data["planned_sides"], self.now_t())
            self._check_staging()
        self._operator(req)
        return {"case": self.case_data}

    def _cmd_case_close(self, req: p.Request, note: str | None = None) -> dict[str, Any]:
        case_id = self.case_id
        for out in (self.probe, self.aps):
            if out.on:
                out.on = False
                self._to_board.append(out.stimulate())
        self._flush_emg_chunk()
        self._operator(req)
        summary = self.summary()
        self._write_snapshot()
        self.journal.close_case(case_id, {"reason": note or "closed by the operator", "who": req.client or None,
                                          "summary": summary})
        self._event("case", "closed", f"case {case_id} closed", detail={"case_id": case_id})
        self.last_case_id = case_id
        self.case_id = None
        self.case_data = None
        self.case_resumed = False
        self._origin = self.started_at
        self.pending_step = None
        self.probe_step = None
        return {"case_id": case_id, "summary": summary}

    def summary(self) -> dict[str, Any]:
        proc = self.rules.procedure.summary(self.settings)
        return {"procedure": proc, "stimuli": self.counters["stimuli"],
                "rule_events": {k[5:]: v for k, v in self.counters.items() if k.startswith("rule_")}}

    # -- stimulation

    def _out(self, name: str) -> OutputSettings:
        return self.probe if name == "probe" else self.aps

    def _cmd_stim_set(self, req: p.Request, output: str, current_mA: float | None = None,
                      rate_hz: float | None = None, pulse_width_us: int | None = None,
                      confirm: bool = False) -> dict[str, Any]:
        out = self._out(output)
        st = self.settings
        if current_mA is not None:
            key = "stim.probe_current_mA" if output == "probe" else "stim.aps_current_mA"
            spec = SCHEMA[key]
            hi = spec.maximum
            if self.capabilities is not None:
                hi = min(hi, self.capabilities.max_current_uA / 1000.0)
            if current_mA < spec.minimum or current_mA > hi:
                raise p.ApiError(p.INVALID_ARGUMENT,
                                 f"stim.set: current_mA {current_mA:g} mA is out of range for the {output}; "
                                 f"allowed {spec.minimum:g}-{hi:g} mA", argument="current_mA")
            limit = float(st["stim.confirm_above_mA"])
            if current_mA > limit + 1e-9 and not confirm and current_mA != out.current_mA:
                raise p.ApiError(p.NEEDS_CONFIRMATION,
                                 f"stim.set: {current_mA:g} mA is above {limit:g} mA (stim.confirm_above_mA); "
                                 "send it again with \"confirm\": true", limit_mA=limit, argument="current_mA")
        if rate_hz is not None:
            key = "stim.probe_rate_hz" if output == "probe" else "stim.aps_rate_hz"
            spec = SCHEMA[key]
            lo, hi = spec.minimum, spec.maximum
            if self.capabilities is not None:
                lo = max(lo, self.capabilities.min_rate_mHz / 1000.0)
                hi = min(hi, self.capabilities.max_rate_mHz / 1000.0)
            if rate_hz < lo or rate_hz > hi:
                raise p.ApiError(p.INVALID_ARGUMENT, f"stim.set: rate_hz {rate_hz:g} Hz is out of range for the "
                                 f"{output}; allowed {lo:g}-{hi:g} Hz", argument="rate_hz")
        if pulse_width_us is not None and self.capabilities is not None:
            lo, hi = self.capabilities.min_pulse_width_us, self.capabilities.max_pulse_width_us
            if not lo <= pulse_width_us <= hi:
                raise p.ApiError(p.INVALID_ARGUMENT, f"stim.set: pulse_width_us {pulse_width_us} us is out of the "
                                 f"board's range; allowed {lo}-{hi} us", argument="pulse_width_us")
        if current_mA is not None:
            out.current_mA = float(current_mA)
        if rate_hz is not None:
            out.rate_hz = float(rate_hz)
        if pulse_width_us is not None:
            out.pulse_width_us = int(pulse_width_us)
        self._operator(req)
        if out.on and self.case_id is not None:
            self._to_board.append(out.stimulate())
        return {"output": output, **out.to_json()}

    def _cmd_stim_output(self, req: p.Request, output: str, on: bool) -> dict[str, Any]:
        out = self._out(output)
        if on:
            self._require_link("stim.output")
            if self.tube is not None and not self.tube.get("passed") and self.tube_override is None:
                raise p.ApiError(p.BAD_STATE, "stim.output: the tube check failed (" + str(self.tube.get("message"))
                                 + "); repeat it or accept it with tube.override and a reason")
        out.on = bool(on)
        self._operator(req)
        self._to_board.append(out.stimulate())
        return {"output": output, **out.to_json()}

    def _cmd_stim_single(self, req: p.Request) -> dict[str, Any]:
        self._require_link("stim.single")
        self._operator(req)
        o = self.probe
        self._to_board.append(Stimulate(Output.PROBE, StimMode.SINGLE, int(round(o.current_mA * 1000)),
                                        o.pulse_width_us, int(round(o.rate_hz * 1000))))
        return {"sent": True}

    def _cmd_probe_site(self, req: p.Request, site: str, side: str, step: str | None = None) -> dict[str, Any]:
        new_step = None if step in (None, "none") else Step(step)
        if new_step is not None and step_site(new_step) is not Site(site):
            raise p.ApiError(p.INVALID_ARGUMENT, f"probe.site: step {new_step.value} stimulates the "
                             f"{step_site(new_step).value}, not the {site}", argument="step")
        self.probe_site, self.probe_side = Site(site), Side(side)
        if step is not None or new_step is None:
            self.probe_step = new_step
        self._operator(req)
        return {"site": site, "side": side, "step": self.probe_step.value if self.probe_step else None}

    def _cmd_aps_side(self, req: p.Request, side: str) -> dict[str, Any]:
        self.aps_side = Side(side)
        self._operator(req)
        return {"side": side}

    # -- procedure

    def _cmd_step_tag(self, req: p.Request, step: str, side: str | None = None, which: str = "last") -> dict[str, Any]:
        from app.rules.procedure import ProcedureError

        s = Step(step)
        side = side or self.probe_side.value
        site = step_site(s)
        if which == "next":
            self.pending_step = {"step": s.value, "side": side, "who": req.client or "operator"}
            self._operator(req, detail={"step": s.value, "side": side, "which": "next"})
            return {"step": s.value, "side": side, "recorded": False, "pending": True}
        m = self.last_valid.get((site.value, side))
        if m is None:
            raise p.ApiError(p.BAD_STATE, f"step.tag: no valid {site.value} response on side {side} yet to record as {s.value}")
        self._operator(req, detail={"step": s.value, "side": side, "which": "last", "stimulus_index": m.stimulus.index})
        try:
            value = self._record_step(s, m, who=req.client or "operator", how="operator")
        except ProcedureError as exc:
            raise p.ApiError(p.BAD_STATE, f"step.tag: {exc}") from None
        return {"step": s.value, "side": side, "recorded": True, "measurement": m.to_json(), "value": value}

    def _cmd_step_clear(self, req: p.Request, step: str, side: str) -> dict[str, Any]:
        self.rules.procedure.clear_step(side, step)
        self._operator(req)
        return {"step": step, "side": side}

    def _cmd_laryngoscopy(self, req: p.Request, phase: str, side: str, finding: str, note: str | None = None) -> dict[str, Any]:
        proc = self.rules.procedure
        proc.set_laryngoscopy(phase, side, finding, self.now_t(), note or "")
        other = Side(side).other
        other_value = (proc.laryngoscopy(phase, other) or {}).get("finding", "not_examined")
        left, right = (finding, other_value) if side == "L" else (other_value, finding)
        self._journal("laryngoscopy", {"step": phase, "left": _FINDING_TO_RECORD[left], "right": _FINDING_TO_RECORD[right],
                                       "who": req.client or None, "comment": note or None})
        self._event("procedure", "laryngoscopy", f"{phase} {side}: {finding}", side=side,
                    detail={"phase": phase, "finding": finding, "note": note})
        self._snapshot_dirty = True
        return {"phase": phase, "side": side, "finding": finding}

    def _cmd_baseline_capture(self, req: p.Request, site: str, side: str) -> dict[str, Any]:
        m = self.last_valid.get((site, side))
        if m is None or not m.response:
            raise p.ApiError(p.BAD_STATE, f"baseline.capture: no valid {site} response on side {side} to capture")
        self._operator(req, detail={"site": site, "side": side, "stimulus_index": m.stimulus.index})
        try:
            events = self.rules.capture_baseline(Site(site), Side(side), m, t_s=self.now_t())
        except ValueError as exc:
            raise p.ApiError(p.BAD_STATE, f"baseline.capture: {exc}") from None
        for ev in events:
            self._rule_event(ev)
        return {"site": site, "side": side, "amplitude_uV": m.amplitude_uV, "latency_ms": m.latency_ms}

    def _cmd_baseline_rebaseline(self, req: p.Request, side: str) -> dict[str, Any]:
        self._operator(req)
        for ev in self.rules.rebaseline(Side(side), Source.APS, t_s=self.now_t()):
            self._rule_event(ev)
        # The rules end an open combined-event / amplitude-decrease episode of that vagus
        # without a recovery event: its alarm condition ends with it (a latched alarm
        # still stays until it is reset).
        key = f"{Site.VAGUS.value}-{Side(side).value}"
        for kind in (AlarmKind.COMBINED_EVENT, AlarmKind.AMPLITUDE_DECREASE):
            if self.alarms.clear_condition(kind, key, who=req.client or "operator", detail={"by": "rebaseline"}):
                self._alarms_dirty = True
        return {"side": side, "needed": int(self.settings["rules.aps_baseline_count"])}

    def _cmd_ts_answer(self, req: p.Request, side: str, check: str, answer: str, note: str | None = None) -> dict[str, Any]:
        from app.rules.procedure import CHECK_QUESTIONS, Check, ProcedureError

        try:
            state = self.rules.procedure.answer(side, check, answer, self.now_t(), note or "", by=req.client or "operator")
        except ProcedureError as exc:
            raise p.ApiError(p.BAD_STATE, f"ts.answer: {exc}") from None
        self._journal("troubleshooting", {"check": check, "answer": answer, "side": side,
                                          "question": CHECK_QUESTIONS[Check(check)], "who": req.client or None})
        self._event("procedure", "troubleshooting", f"{CHECK_QUESTIONS[Check(check)]} {answer} -> {state.get('message')}",
                    side=side, detail={"check": check, "answer": answer, "conclusion": state.get("conclusion")})
        self._snapshot_dirty = True
        self._check_staging()
        return {"troubleshooting": state}

    def _cmd_ts_verdict(self, req: p.Request, side: str, verdict: str, reason: str) -> dict[str, Any]:
        from app.rules.procedure import ProcedureError

        try:
            self.rules.procedure.set_verdict(side, verdict, reason, self.now_t())
        except ProcedureError as exc:
            raise p.ApiError(p.BAD_STATE, f"ts.verdict: {exc}") from None
        self._journal("troubleshooting", {"check": "verdict", "answer": verdict, "side": side,
                                          "question": reason, "who": req.client or None})
        self._event("procedure", "troubleshooting", f"surgeon's verdict {side}: {verdict} ({reason})", side=side,
                    detail={"verdict": verdict, "reason": reason})
        self._snapshot_dirty = True
        self._check_staging()
        return {"troubleshooting": self.rules.procedure.troubleshooting(side)}

    def _cmd_mapping_result(self, req: p.Request, side: str, position_mm: float, response: bool,
                            amplitude_uV: float | None = None, label: str | None = None) -> dict[str, Any]:
        proc = self.rules.procedure
        before = proc.mapping(side).get("type")
        proc.add_mapping_point(side, position_mm, response, self.now_t(), amplitude_uV, label or "")
        self._operator(req)
        mapping = proc.mapping(side)
        if mapping.get("type") in (1, 2) and mapping["type"] != before:
            self._journal("los_type", {"side": side, "los_type": int(mapping["type"]), "who": req.client or None,
                                       "detail": mapping})
            self._event("procedure", "los_type", mapping["message"], side=side, detail=mapping)
        return {"los_type": mapping.get("type"), "mapping": mapping}

    def _cmd_mapping_clear(self, req: p.Request, side: str) -> dict[str, Any]:
        self.rules.procedure.clear_mapping(side)
        self._operator(req)
        return {"mapping": self.rules.procedure.mapping(side)}

    def _cmd_staging_decision(self, req: p.Request, decision: str, reason: str) -> dict[str, Any]:
        from app.rules.procedure import ProcedureError

        try:
            entry = self.rules.procedure.decide_staging(decision, reason, self.now_t())
        except ProcedureError as exc:
            raise p.ApiError(p.BAD_STATE, f"staging.decision: {exc}") from None
        self._journal("staging", {"recommendation": entry["message"], "decision": decision, "reason": reason,
                                  "who": req.client or None, "side": entry.get("side")})
        self._event("procedure", "staging_decision", f"staging decision: {decision} ({reason})", detail=entry)
        self._snapshot_dirty = True
        return {"staging": entry}

    def _cmd_inbox_ack(self, req: p.Request, **args: Any) -> dict[str, Any]:  # remote reader messages
        return inbox.ack(self, req, **args)

    def _cmd_note_add(self, req: p.Request, text: str) -> dict[str, Any]:
        t = self.now_t()
        self._journal("note", {"text": text, "who": req.client or None}, t_s=t)
        self._event("operator", "note", text, detail={"client": req.client})
        return {"t_s": round(t, 3)}

    def _cmd_snapshot(self, req: p.Request, comment: str | None = None) -> dict[str, Any]:
        t = self.now_t()
        last_index = max((m.stimulus.index for m in self.last_valid.values()), default=None)
        self._journal("snapshot", {"label": comment, "who": req.client or None, "stimulus_index": last_index,
                                   "last": self.last}, t_s=t)
        self._event("operator", "snapshot", f"snapshot{': ' + comment if comment else ''}",
                    detail={"stimulus_index": last_index, "last": self.last})
        return {"t_s": round(t, 3)}

    def _cmd_tube_check(self, req: p.Request) -> dict[str, Any]:
        self._require_link("tube.check")
        self._operator(req)
        self._to_board.append(ImpedanceRequest())
        return {"requested": True}

    def _cmd_tube_override(self, req: p.Request, reason: str) -> dict[str, Any]:
        if self.tube is None or self.tube.get("passed"):
            raise p.ApiError(p.BAD_STATE, "tube.override: there is no failed tube check to accept")
        self.tube_override = {"who": req.client or "operator", "reason": reason}
        self.tube = {**self.tube, "override": self.tube_override}
        self._journal("tube_check", self.tube)
        self._operator(req)
        return {"override": True}

    # -- alarms

    def _cmd_alarm_ack(self, req: p.Request, alarm: str | None = None) -> dict[str, Any]:
        st = self.alarms.state()
        target = alarm
        if target is None:
            unacked = [a for a in st.alarms if not a.acknowledged]
            target = unacked[0].id if unacked else None
        elif st.by_id(alarm) is None:
            raise p.ApiError(p.INVALID_ARGUMENT, f"alarm.ack: no alarm {alarm!r}; active: "
                             + (", ".join(a.id for a in st.alarms) or "none"), argument="alarm")
        if target is None:
            return {"alarm": None}
        ok = self.alarms.acknowledge(target, who=req.client or "operator")
        if not ok and alarm is not None:
            raise p.ApiError(p.BAD_STATE, f"alarm.ack: {alarm} is already acknowledged")
        return {"alarm": target if ok else None}

    def _cmd_alarm_pause_audio(self, req: p.Request) -> dict[str, Any]:
        self.alarms.pause_audio(who=req.client or "operator")
        st = self.alarms.state()
        return {"pause_remaining_s": st.audio.remaining_s or 0.0}

    def _cmd_alarm_reset(self, req: p.Request, alarm: str | None = None) -> dict[str, Any]:
        before = {a.id for a in self.alarms.state().alarms}
        if alarm is not None and alarm not in before:
            raise p.ApiError(p.INVALID_ARGUMENT, f"alarm.reset: no alarm {alarm!r}", argument="alarm")
        self.alarms.reset(alarm, who=req.client or "operator")
        after = {a.id for a in self.alarms.state().alarms}
        removed = sorted(before - after)
        if alarm is not None and not removed:
            raise p.ApiError(p.BAD_STATE, f"alarm.reset: {alarm} cannot be reset while its condition is present")
        return {"reset": removed}

    def _cmd_alarm_audio_off(self, req: p.Request, off: bool) -> dict[str, Any]:
        who = req.client or "operator"
        if off:
            self.alarms.audio_off(who=who)
        else:
            self.alarms.audio_on(who=who)
        return {"audio": self.alarms.state().audio.mode}

    # -- documents, cases, self-test

    def _docs(self, what: str) -> Any:
        if self.documents is None:
            raise p.ApiError(p.BAD_STATE, f"{what}: documentation is not available in this engine")
        return self.documents

    def _which_case(self, case_id: str | None) -> str:
        cid = case_id or self.case_id or self.last_case_id
        if cid is None:
            raise p.ApiError(p.BAD_STATE, "no case is open and none was closed since the engine started; give case_id")
        return cid

    # Documentation reads the whole case from the journal and may take seconds: the engine
    # loop only prepares it (which case, journal the action); ``offline_job`` returns the
    # work, which the live service runs in a worker thread (the journal is thread-safe).
    OFFLINE = ("report.get", "export.usb", "cases.list")

    def offline_job(self, req: p.Request) -> Callable[[], dict[str, Any]]:
        """For a command in ``OFFLINE``: the function that computes its reply (ApiError -> error reply)."""
        cmd = p.COMMANDS[req.cmd]
        try:
            if req.cmd == "cases.list":
                limit = int(req.args.get("limit", 50))
                journal = self.journal

                def work() -> dict[str, Any]:
                    cases = journal.cases() if hasattr(journal, "cases") else []
                    return {"cases": list(reversed(cases))[:limit]}
            elif req.cmd == "report.get":
                cid = self._which_case(req.args.get("case_id"))
                docs = self._docs(cmd.name)
                pdf = bool(req.args.get("pdf", True))

                def work() -> dict[str, Any]:
                    return docs.report(cid, pdf=pdf)
            else:
                cid = self._which_case(req.args.get("case_id"))
                docs = self._docs(cmd.name)
                target, pseudo = req.args.get("target"), bool(req.args.get("pseudonymise", True))
                if self.case_id is not None:
                    self._operator(req, detail={"case_id": cid, "target": target, "pseudonymise": pseudo})

                def work() -> dict[str, Any]:
                    return docs.export(cid, target=target, pseudonymise=pseudo)
        except p.ApiError as err:
            error = err

            def failed() -> dict[str, Any]:
                return p.reply_error(req.id, error)
            return failed

        def run() -> dict[str, Any]:
            try:
                return p.reply_ok(req.id, work())
            except p.ApiError as err2:
                return p.reply_error(req.id, err2)
        return run

    def _cmd_report_get(self, req: p.Request, **_: Any) -> dict[str, Any]:
        return self._offline_inline(req)

    def _cmd_export_usb(self, req: p.Request, **_: Any) -> dict[str, Any]:
        return self._offline_inline(req)

    def _offline_inline(self, req: p.Request) -> dict[str, Any]:
        reply = self.offline_job(req)()
        if not reply["ok"]:
            e = reply["error"]
            raise p.ApiError(e["code"], e["message"], **{k: v for k, v in e.items() if k not in ("code", "message")})
        return reply["result"]

    def _cmd_cases_list(self, req: p.Request, limit: int = 50) -> dict[str, Any]:
        cases = self.journal.cases() if hasattr(self.journal, "cases") else []
        return {"cases": list(reversed(cases))[:limit]}

    def _cmd_selftest_run(self, req: p.Request) -> dict[str, Any]:
        items = []
        caps = self.capabilities
        if self.link_up and caps is not None:
            items.append({"item": "board", "ok": not (self.board_faults & ~int(Fault.LEAD_OFF)),
                          "message": f"{caps.board_id} firmware {caps.firmware_version}"
                          + (" (virtual)" if caps.simulated else "")
                          + ("; faults: " + ", ".join(fault_names(self.board_faults)) if self.board_faults else "")})
        else:
            items.append({"item": "board", "ok": False, "message": "the board does not answer"})
        items.extend(self.outputs.self_test())
        items.append({"item": "storage", "ok": self.storage_ok,
                      "message": "case record storage writable" if self.storage_ok else self.storage_message})
        ok = all(i["ok"] for i in items)
        if self.case_id is not None:
            self._journal("engine", {"event": "self_test", "detail": {"ok": ok, "items": items}})
        self._event("technical", "self_test", "self-test " + ("passed" if ok else "FAILED: " + "; ".join(
            f"{i['item']}: {i['message']}" for i in items if not i["ok"])), priority=None if ok else "medium",
            detail={"items": items})
        return {"ok": ok, "items": items}

    # -- settings

    def _cmd_settings_get(self, req: p.Request) -> dict[str, Any]:
        schema = [{"key": s.key, "unit": s.unit, "default": s.default, "minimum": s.minimum, "maximum": s.maximum,
                   "kind": s.kind.__name__, "choices": list(s.choices) if s.choices else None, "doc": s.doc,
                   "range": s.describe_range(), "live": s.live} for s in SCHEMA.values()]
        return {"values": self.settings.as_dict(), "schema": schema, "profile": self.profile}

    def _cmd_settings_set(self, req: p.Request, changes: dict[str, Any]) -> dict[str, Any]:
        if not changes:
            raise p.ApiError(p.INVALID_ARGUMENT, "settings.set: changes is empty; give {\"group.name\": value}",
                             argument="changes")
        for key, value in changes.items():
            if key not in SCHEMA:
                raise p.ApiError(p.SETTING_REJECTED, f"settings.set: unknown setting {key!r}", setting=key)
            try:
                checked = SCHEMA[key].validate(value, "settings.set")
            except SettingError as exc:
                raise p.ApiError(p.SETTING_REJECTED, str(exc), setting=key) from None
            if not SCHEMA[key].live and checked != self.settings[key]:
                raise p.ApiError(p.SETTING_REJECTED, (
                    f"setting {key}: read at start-up only (wiring, devices and link timing); change it in the "
                    "configuration file and restart the monitor"), setting=key)
        try:
            new = self.settings.with_changes(changes, "settings.set")
        except SettingError as exc:
            raise p.ApiError(p.SETTING_REJECTED, str(exc), setting=next(iter(changes))) from None
        old = self.settings
        self.settings = new
        for key in changes:
            if old[key] != new[key]:
                self._journal("setting_changed", E.setting_changed(key, old[key], new[key], who=req.client or None))
        self._operator(req)
        self._settings_applied()
        if self.acq_configured and any(old[k] != new[k] for k in _ACQUISITION_SETTINGS):
            self._configure_board()  # the board samples and cuts epochs as the settings now say
        return {"values": {k: new[k] for k in changes}}

    def _settings_applied(self) -> None:
        st = self.settings
        self.analyzer = self._analyzer_factory(st)
        if hasattr(self.rules, "set_settings"):
            self.rules.set_settings(st)
        self.alarms.update_settings(st)
        self.detector = None
        self._detector_rate = None
        self.breathing.settings_changed(st, self.clock.now())
        self.outputs.settings_changed(st)

    # -- simulation

    def _cmd_sim_control(self, req: p.Request, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self._require_link("sim.control")
        try:
            text = json.dumps(args or {})
        except (TypeError, ValueError) as exc:
            raise p.ApiError(p.INVALID_ARGUMENT, f"sim.control: args cannot be sent ({exc})", argument="args") from None
        self._operator(req, action="sim.control", detail={"command": command, "args": args or {}})
        self._to_board.append(SimControl(command, text))
        return {"sent": True}

    # ================================================================== outputs for the shells

    def take_host_messages(self) -> list[Any]:
        out, self._to_board = self._to_board, []
        return out

    def stop_stimulation(self) -> list[Any]:
        """Messages that stop both outputs now (fail-safe; the outputs stay marked off)."""
        for o in (self.probe, self.aps):
            o.on = False
        return [Stimulate(Output.PROBE, StimMode.STOP), Stimulate(Output.APS, StimMode.STOP)]

    def shutdown(self) -> list[Any]:
        """A clean stop of the engine: stop stimulation, keep the open case open (it resumes
        at the next start) with everything written. Returns the stop messages for the board."""
        msgs = [Stimulate(Output.PROBE, StimMode.STOP), Stimulate(Output.APS, StimMode.STOP)]
        if self.case_id is not None:
            self._flush_emg_chunk()
            self._journal("engine", {"event": "stopped", "version": __version__,
                                     "detail": "engine stopped; the open case resumes at the next start"})
            self._write_snapshot()
        return msgs

    def fail_safe(self, reason: str) -> list[Any]:
        """An unexpected error: stop stimulation, raise the engine-fault alarm, journal it."""
        self.fatal = reason
        msgs = self.stop_stimulation()
        try:
            self._journal("engine", {"event": "fault", "version": __version__, "detail": reason[:4000]})
        except Exception as exc:  # noqa: BLE001 - the journal may be what failed; go on stopping
            log.error("could not journal the engine fault: %s", exc)
        try:
            self.alarms.raise_condition(AlarmKind.ENGINE_FAULT, message=f"Engine fault: {reason[:300]}", who="engine")
            self._write_snapshot()
        except Exception as exc:  # noqa: BLE001
            log.error("could not record the engine-fault alarm: %s", exc)
        return msgs

    # ================================================================== state snapshot

    def state_snapshot(self) -> dict[str, Any]:
        self._state_seq += 1
        caps = self.capabilities
        st = self.settings
        case = None
        if self.case_id is not None and self.case_data is not None:
            case = {"case_id": self.case_id, **_plain(self.case_data), "resumed": self.case_resumed,
                    "t_s": round(self.now_t(), 3)}
        aps_state = {}
        for side in (Side.L, Side.R):
            b = self.rules.aps_baseline(side)
            rs = self.rules.state()["sides"][side.value] if hasattr(self.rules, "state") else {}
            last = self.last.get(side.value) or {}
            aps_state[side.value] = {
                "side": side.value,
                "baseline_uV": _round(b.get("amplitude_uV"), 1) if b else None,
                "baseline_latency_ms": _round(b.get("latency_ms"), 3) if b else None,
                "baseline_count": rs.get("aps_collected", 0) if not b else b.get("count"),
                "baseline_needed": int(st["rules.aps_baseline_count"]),
                "collecting": rs.get("aps_baseline_state") not in (None, "SET"),
                "amplitude_pct": last.get("amplitude_pct") if last.get("source") == "APS" else None,
                "latency_pct": last.get("latency_pct") if last.get("source") == "APS" else None,
            }
        proc = self.rules.procedure
        steps: dict[str, Any] = {}
        los: dict[str, Any] = {}
        ts: dict[str, Any] = {}
        mapping: dict[str, Any] = {}
        for side in ("L", "R"):
            s_steps = {}
            for step in Step:
                v = proc.step(side, step)
                if v:
                    s_steps[step.value] = _plain(v)
            for phase in ("L1", "L2"):
                v = proc.laryngoscopy(phase, side)
                if v:
                    s_steps[phase] = v
            steps[side] = s_steps
            t = proc.troubleshooting(side)
            ts[side] = _plain(t) if t else None
            los[side] = {"active": bool(t and t.get("open")), "since_s": t.get("t_s") if t else None,
                         "recovered_at_s": t.get("recovered_t_s") if t else None,
                         "type": proc.mapping(side).get("type")}
            mapping[side] = proc.mapping(side)
        staging = proc.staging_recommendation()
        history = proc.staging_history()
        baselines = {}
        for site in (Site.VAGUS, Site.RLN):
            for side in (Side.L, Side.R):
                b = self.rules.probe_baseline(site, side)
                if b:
                    baselines[f"{site.value}-{side.value}"] = _plain(b)
        return {
            "type": "state", "seq": self._state_seq, "t_s": round(self.now_t(), 3),
            "wall_time": self._wall().astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "engine": {"version": f"lnm {__version__}", "simulated": bool(caps and caps.simulated),
                       "profile": self.profile, "uptime_s": round(self.clock.now() - self.started_at, 1),
                       "fatal": self.fatal},
            "board": {"connected": self.link_up, "url": self.board_url,
                      "board_id": caps.board_id if caps else None, "firmware": caps.firmware_version if caps else None,
                      "faults": fault_names(self.board_faults),
                      "stimulating": [o.name.lower() for o in self.board_stimulating],
                      "backup_beeper": bool(self.board_faults & Fault.BACKUP_BEEPER),
                      "max_current_mA": caps.max_current_uA / 1000.0 if caps else None},
            "storage": {"ok": self.storage_ok, "message": self.storage_message},
            "audio": {"ok": self.audio_ok, "backend": self.outputs.describe(), "message": self.audio_message},
            "case": case,
            "last_case_id": self.last_case_id,
            "stim": {"confirm_above_mA": float(st["stim.confirm_above_mA"]),
                     "probe": {**self.probe.to_json(), "site": self.probe_site.value, "side": self.probe_side.value,
                               "step": self.probe_step.value if self.probe_step else None},
                     "aps": {**self.aps.to_json(), "side": self.aps_side.value}},
            "threshold_uV": float(st["analysis.event_threshold_uV"]),
            "volume_pct": float(st["audio.volume_pct"]),
            "last": {k: v for k, v in self.last.items()},
            "aps": aps_state,
            "baselines": baselines,
            "steps": steps,
            "pending_step": self.pending_step,
            "los": los,
            "troubleshooting": ts,
            "mapping": mapping,
            "staging": {"recommended": staging is not None, "active": _plain(staging),
                        "reason": staging["message"] if staging else "",
                        "decision": history[-1]["decision"] if history else None},
            "tube": None if self.tube is None else {**_plain(self.tube), "t_s": self.tube_t_s,
                                                    "breathing_variation": (self.breathing.json(self.clock.now())
                                                                            if self.breathing.active
                                                                            else _plain(self.tube.get("breathing_variation"))),
                                                    "checked": True, "pass": bool(self.tube.get("passed")),
                                                    "impedances_kohm": {k: (None if v < 0 else round(v / 1000.0, 2))
                                                                        for k, v in self.tube["impedances_ohm"].items()}},
            "emg": {"cautery": self.cautery, "irritation_active": {k: round(v, 3) for k, v in self.irritation_active.items()},
                    "irritation_last_s": {k: round(v, 3) for k, v in self.irritation.items()}},
            "alarms": self.alarms_json(),
            "counters": {"stimuli": self.counters["stimuli"], "journal_entries": self.counters["journal_entries"],
                         "emg_blocks": self.counters["emg_blocks"], "emg_gaps": self.counters["emg_gaps"]},
        }


def _plain(value: Any) -> Any:
    """JSON-safe copy (enums to values, numpy to Python, tuples to lists, NaN to None)."""
    if isinstance(value, Mapping):
        return {str(getattr(k, "value", k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating,)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


__all__ = ["Monitor", "EngineOptions", "Outputs", "NullJournal", "measurement_from_json", "step_site", "fault_names"]
