"""The engine's pure core: ``Monitor``, the facade that composes the engine's rooms.

Owns: ``Monitor``: it builds the rooms and hands each input to the one that handles it:
board messages and link events (``board.BoardDesk``: the only place that sees the
board), API commands (``commands``: one handler per command, registered by name), the
timer (``tick``); at the end of every input it lets the alarm system publish and sound
(``alarm_desk``) and writes the engine-state entry if due (``persist``). Its attributes
and methods are the interface the shells use (``service``, ``stepped``, ``simulate``,
``resume``, the benchmarks and the tests); ``EngineOptions``, ``Outputs``,
``NullJournal``, ``OutputSettings``, ``measurement_from_json``, ``step_site`` and
``fault_names`` are re-exported from here.
May import: ``firmware_bridge.messages``/``clock``, ``app.model``, ``app.settings``,
``app.alarms``, ``app.api.protocol``, ``app.record`` (entries only) and the engine's
rooms; ``app.analysis`` and ``app.rules`` through the default factories. No threads,
sockets or files: the journal, the outputs and the publishing sink are injected objects,
time comes from the injected clock.

The rooms:

=================  ===========================================================
``timebase``       case clock; board timestamps -> case time
``ledger``         journal first: entries, one transaction per stimulus, publishing, events
``case_state``     ``CaseState``: everything a case owns; what crosses to the next case
``lifecycle``      a case opened, closed, restored, resumed
``stimulator``     the probe and the continuous vagal electrode as commanded
``stimulus``       epoch -> measurement -> journal -> rules -> alarms -> procedure
``emg_stream``     free-running EMG: record, irritation, cautery, display
``tube``           the tube check and its breathing window
``board``          board messages, capabilities, faults, the link
``alarm_desk``     the alarm manager, its record, technical conditions, outputs
``persist``        the engine-state entry for crash resume
``limits``         protected limits: relaxing one needs a confirmation and shows
``views``          the state snapshot, the alarms message, trends
``commands``       the API commands, one module per topic
``seams``          the Protocols of what is injected
=================  ===========================================================

Case time (``t_s`` everywhere) is seconds since the case was opened on the engine clock.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from app import __version__
from app.alarms import AlarmKind, AlarmManager
from app.api import protocol as p
from app.engine import lifecycle
from app.engine.alarm_desk import AlarmDesk
from app.engine.board import BoardDesk, fault_names
from app.engine.case_state import CaseState, Inbox
from app.engine.commands import dispatch
from app.engine.commands import documents as _documents
from app.engine.commands.documents import snapshot as _snapshot
from app.engine.context import EngineContext, EngineOptions
from app.engine.emg_stream import EmgStream, coalesce
from app.engine.ledger import Ledger
from app.engine.lifecycle import measurement_from_json
from app.engine.limits import Relaxations
from app.engine.persist import ENGINE_STATE_FORMAT, Persistence, engine_state
from app.engine.selftest import SelfTest
from app.engine.seams import (
    AnalyzerFactory,
    DetectorFactory,
    DocumentMaker,
    Journal,
    NullJournal,
    NullOutputs,
    Outputs,
    Rules,
    RulesFactory,
    SettingsLoader,
    Sink,
    Wants,
    default_analyzer,
    default_detector,
    default_rules,
)
from app.engine.stimulator import OutputSettings, Stimulator, step_site
from app.engine.stimulus import StimulusPipeline
from app.engine.timebase import TimeBase
from app.engine.tube import TubeDesk
from app.engine.views import state_snapshot
from app.engine.writer import JournalWriter
from app.model import Measurement
from app.settings import Settings
from firmware_bridge.clock import Clock
from firmware_bridge.messages import BoardMessage, Capabilities, HostMessage, Output, Stimulate, StimMode

log = logging.getLogger("lnm.engine")


class Monitor:
    """The monitoring engine's core (see the module docstring)."""

    OFFLINE = _documents.OFFLINE

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        journal: Journal | None = None,
        outputs: Outputs | None = None,
        options: EngineOptions | None = None,
        sink: Sink | None = None,
        wants: Wants | None = None,
        board_url: str = "",
        profile: str | None = None,
        config_dir: Path | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        analyzer_factory: AnalyzerFactory = default_analyzer,
        rules_factory: RulesFactory = default_rules,
        detector_factory: DetectorFactory | None = default_detector,
        settings_loader: SettingsLoader | None = None,
        documents: DocumentMaker | None = None,
        writer: JournalWriter | None = None,
    ) -> None:
        self.clock = clock
        self.journal: Journal = journal if journal is not None else NullJournal()
        self.options = options or EngineOptions()
        self.ctx = EngineContext(clock, settings, self.options, outputs or NullOutputs(), profile)
        self.board_url = board_url
        self.config_dir = config_dir
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.rules_factory = rules_factory
        self.settings_loader = settings_loader
        self.documents = documents
        self.last_case_id: str | None = None
        self.last_case_summary: dict[str, Any] | None = None
        self.fatal: str | None = None
        self._state_seq = 0
        self._last_state_publish = -1e9

        ctx = self.ctx
        self.time = TimeBase(clock)
        self.started_at = self.time.started_at
        self.ledger = Ledger(self.journal, sink or (lambda stream, msg, sticky: None), wants or (lambda stream: True),
                             self.time, ctx.counters, self.options.events_kept, writer=writer,
                             wall_clock=self.wall_clock)
        self.reply_ticket: int | None = None  # the ticket of the last reply that is not yet recorded
        self.stim = Stimulator(settings)
        self.persist = Persistence(ctx, self.ledger, self.engine_state)
        self.alarm_desk = AlarmDesk(ctx, self.time, self.ledger, self.persist.changed)
        self.tube = TubeDesk(ctx, self.time, self.ledger, self.persist.changed)
        self.emg = EmgStream(ctx, self.time, self.ledger, self.tube, detector_factory)
        self.pipeline = StimulusPipeline(ctx, self.time, self.ledger, self.stim, self.alarm_desk, self.emg,
                                         self.tube, self.persist, analyzer_factory)
        self.board = BoardDesk(ctx, self.time, self.ledger, self.alarm_desk, self.stim, self.pipeline, self.emg,
                               self.tube)
        self.ledger.on_recording = self.alarm_desk.recording_changed
        self.ledger.on_space_note = self.alarm_desk.space_note
        self.selftest: SelfTest | None = None  # the last self-test and the nurse's confirmations
        self.relaxations = Relaxations()  # protected limits relaxed beyond their defaults, and since when
        self.idle_inbox = Inbox()  # reader messages that arrive while no case is open (app.engine.inbox)
        self.relaxations.update(settings, clock.now())

    # ================================================================== shared state

    @property
    def settings(self) -> Settings:
        """The settings in force."""
        return self.ctx.settings

    @property
    def outputs(self) -> Outputs:
        """The appliance outputs (set by the shell once they are made)."""
        return self.ctx.outputs

    @outputs.setter
    def outputs(self, outputs: Outputs) -> None:
        self.ctx.outputs = outputs

    @property
    def profile(self) -> str | None:
        """The surgeon profile of the settings in force."""
        return self.ctx.profile

    @property
    def counters(self) -> collections.Counter[str]:
        """The engine's diagnostic counters (stimuli, journal entries, EMG blocks and gaps, ...)."""
        return self.ctx.counters

    @property
    def case(self) -> CaseState | None:
        """The open case's state (None between cases)."""
        return self.ctx.case

    @property
    def case_id(self) -> str | None:
        """The open case's id."""
        return self.ctx.case.case_id if self.ctx.case is not None else None

    @property
    def case_data(self) -> dict[str, Any] | None:
        """The open case's data (patient id, procedure, planned sides, tube)."""
        return self.ctx.case.data if self.ctx.case is not None else None

    @property
    def case_resumed(self) -> bool:
        """The open case was resumed after an interruption."""
        return self.ctx.case is not None and self.ctx.case.resumed

    @property
    def rules(self) -> Rules:
        """The open case's rules; with no case open, an empty rule engine (a closed case's is gone)."""
        case = self.ctx.case
        return case.rules if case is not None else self.rules_factory(self.settings)

    @property
    def last(self) -> dict[str, dict[str, Any]]:
        """The open case's last measurement per side (empty with no case open)."""
        return self.ctx.case.last if self.ctx.case is not None else {}

    @property
    def events(self) -> collections.deque[dict[str, Any]]:
        """Recent events: the open case's, or those since the last case closed."""
        return self.ledger.events

    @property
    def alarms(self) -> AlarmManager:
        """The appliance's alarm manager."""
        return self.alarm_desk.manager

    @property
    def capabilities(self) -> Capabilities | None:
        """What the board said it can do (None before it answered)."""
        return self.board.capabilities

    @property
    def link_up(self) -> bool:
        """The board link is up."""
        return self.board.link_up

    @property
    def link_health(self) -> Callable[[], Mapping[str, Any]] | None:
        """The board link's health counters (set by the shell: ``BoardLink.health``)."""
        return self.board.link_health

    @link_health.setter
    def link_health(self, fn: Callable[[], Mapping[str, Any]] | None) -> None:
        self.board.link_health = fn

    @property
    def probe(self) -> OutputSettings:
        """The hand-held probe's output."""
        return self.stim.probe

    @property
    def aps(self) -> OutputSettings:
        """The continuous vagal electrode's output."""
        return self.stim.aps

    # the publishing seam, replaceable after construction (tests record what is published)
    @property
    def _sink(self) -> Sink:
        return self.ledger.sink

    @_sink.setter
    def _sink(self, sink: Sink) -> None:
        self.ledger.sink = sink

    @property
    def _wants(self) -> Wants:
        return self.ledger.wants

    @_wants.setter
    def _wants(self, wants: Wants) -> None:
        self.ledger.wants = wants

    # ================================================================== time

    @property
    def case_origin(self) -> float:
        """Clock time of case time 0 (engine start when no case is open)."""
        return self.time.origin

    @property
    def _origin(self) -> float:
        return self.time.origin

    def now_t(self) -> float:
        """Case time now (seconds since the case opened; since engine start without a case)."""
        return self.time.now_t()

    def case_t_of_board(self, board_time_us: int, latency_s: float = 0.0) -> float:
        """A board timestamp as case time."""
        return self.time.case_t_of_board(board_time_us, latency_s)

    # ================================================================== inputs

    def board_message(self, msg: BoardMessage) -> None:
        """One message from the board (any Board API type)."""
        self.board.message(msg)
        self._after_input()

    def board_messages(self, msgs: Sequence[BoardMessage]) -> None:
        """Messages from the board that arrived together, in order; consecutive EMG blocks
        are analysed as one (``emg_stream.coalesce``). They are one input: the end-of-input
        work (``_after_input``) runs once, after the last of them, and also when handling one
        of them fails: what the earlier ones raised is announced before the failure goes on."""
        if not msgs:
            return
        try:
            for msg in coalesce(msgs):
                self.board.message(msg)
        finally:
            self._after_input()

    def link_event(self, kind: str | Enum, detail: str = "", data: Mapping[str, Any] | None = None) -> None:
        """A change of the board link (``firmware_bridge.link.LinkEventKind``: ``connected``,
        ``restored``, ``lost``, ``port_error``, ``port_opened``, ``invalid_data``,
        ``data_valid``, ``incompatible``, ``board_accepted``, ``board_restarted``)."""
        self.board.link_event(kind, detail, data)
        self._after_input()

    def handle(self, req: p.Request) -> dict[str, Any]:
        """Execute one validated request; returns the reply (never raises ApiError).

        A command that journaled something carries ``recorded``: true once all of it is on the
        disk; false while it is only handed to the journal writer (``reply_ticket`` then names
        the ticket the live service waits for, briefly) or was not recorded."""
        cmd = p.COMMANDS[req.cmd]
        mark = self.ledger.last_ticket
        self.reply_ticket = None
        try:
            if cmd.needs_case and self.ctx.case is None:
                raise p.ApiError(p.BAD_STATE, f"{req.cmd}: no case is open (start one with case.start)")
            if cmd.simulation_only:
                self.board.require_sim(req.cmd)
            reply = p.reply_ok(req.id, dispatch(self, req))
        except p.ApiError as err:
            reply = p.reply_error(req.id, err)
        self._after_input()
        ticket = self.ledger.last_ticket
        if reply.get("ok") and ticket != mark:
            self.record_reply(reply, ticket)
        return reply

    def record_reply(self, reply: dict[str, Any], ticket: int) -> None:
        """Say in ``reply`` whether what the command journaled (up to ``ticket``) is on the disk."""
        outcome = self.ledger.outcome(ticket)
        reply["recorded"] = outcome == "durable"
        self.reply_ticket = ticket if outcome == "pending" else None
        if outcome != "durable":
            state = self.ledger.recording()
            reply["record"] = ("accepted, not yet recorded: " if outcome == "pending" else "accepted, NOT recorded: "
                               ) + state.message

    def offline_job(self, req: p.Request) -> Callable[[], dict[str, Any]]:
        """For a command in ``OFFLINE``: the function that computes its reply (run in a worker)."""
        return _documents.offline_job(self, req)

    def tick(self) -> None:
        """Timers: alarm pause/escalation, outputs, the tube check's window, publishing, engine-state entries."""
        self.alarms.tick()
        self.alarm_desk.check_audio()
        self.tube.poll()
        self.board.tick()
        self.pipeline.release()  # epochs that waited long enough for the other output's pulses
        self._after_input(tick=True)
        now = self.clock.now()
        if self.ledger.wants("state") and now - self._last_state_publish >= self.options.state_publish_s:
            self._last_state_publish = now
            self.ledger.publish("state", self.state_snapshot(), sticky=True)
        self.persist.tick()

    def footswitch(self, event: str) -> None:
        """From the annunciator: a short press marks the moment (snapshot) in the record."""
        if event == "press" and self.ctx.case is not None:
            _snapshot(self, p.Request(None, "snapshot", {}, client="footswitch"), comment="footswitch")

    def storage_status(self, ok: bool, message: str = "") -> None:
        """From the journal's on_status callback: logged only; the recording state (and its
        technical alarm) follows the journal writer, which reads the journal's status itself."""
        log.info("case journal status: %s", message if not ok else "ok")

    def _after_input(self, tick: bool = False) -> None:
        """End of every input: a new selection to the board, the recording state, alarm sound
        and publication (never waiting for the disk), the engine-state entry if due, then the
        events whose entries are written."""
        self.board.after_input()
        self.ledger.pump()
        self.alarm_desk.after_input(tick)
        self.persist.after_input()
        self.ledger.release()

    def apply_settings(self, new: Settings) -> None:
        """New settings in force, in every room at once."""
        self.ctx.settings = new
        self.relaxations.update(new, self.clock.now())
        self.pipeline.settings_changed()
        if self.ctx.case is not None:
            self.ctx.case.rules.set_settings(new)
        self.alarms.update_settings(new)
        self.emg.settings_changed()
        self.tube.settings_changed()
        self.outputs.settings_changed(new)

    # ================================================================== outputs for the shells

    def take_host_messages(self) -> list[HostMessage]:
        """The messages for the board since the last call."""
        out, self.ctx.to_board = self.ctx.to_board, []
        return self.board.outgoing(out) if out else out

    @property
    def alarm_sounding(self) -> bool:
        """An alarm sounds now (as of the last input); carried by the host heartbeat."""
        return self.alarm_desk.sounding

    def stop_stimulation(self) -> list[Stimulate]:
        """Messages that stop both outputs now (fail-safe; the outputs stay marked off)."""
        return self.stim.stop()

    def shutdown(self) -> list[Stimulate]:
        """A clean stop of the engine: stop stimulation, keep the open case open (it resumes
        at the next start) with everything written. Returns the stop messages for the board."""
        msgs = [Stimulate(Output.PROBE, StimMode.STOP), Stimulate(Output.APS, StimMode.STOP)]  # outputs stay "on"
        if self.ctx.case is not None:
            self.emg.flush()
            self.ledger.write("engine", {"event": "stopped", "version": __version__,
                                         "detail": "engine stopped; the open case resumes at the next start"})
            self.persist.write()
        return msgs

    def fail_safe(self, reason: str) -> list[Stimulate]:
        """An unexpected error: stop stimulation, raise the engine-fault alarm, journal it."""
        self.fatal = reason
        msgs = self.stop_stimulation()
        try:
            self.ledger.write("engine", {"event": "fault", "version": __version__, "detail": reason[:4000]})
        except Exception as exc:  # noqa: BLE001 - the journal may be what failed; go on stopping
            log.error("could not journal the engine fault: %s", exc)
        try:
            self.alarms.raise_condition(AlarmKind.ENGINE_FAULT, message=f"Engine fault: {reason[:300]}", who="engine")
            self.persist.write()
        except Exception as exc:  # noqa: BLE001
            log.error("could not record the engine-fault alarm: %s", exc)
        return msgs

    # ================================================================== views

    def state_snapshot(self) -> dict[str, Any]:
        """The ``state`` message (``app.engine.views``)."""
        self._state_seq += 1
        return state_snapshot(self, self._state_seq)

    def alarms_json(self) -> dict[str, Any]:
        """The ``alarms`` message."""
        return self.alarm_desk.json()

    def summary(self) -> dict[str, Any]:
        """The open case's summary (as its closing entry will hold it)."""
        case = self.ctx.case
        if case is None:
            raise ValueError("no case is open")
        return lifecycle.case_summary(self, case)

    # ================================================================== crash resume

    def engine_state(self) -> dict[str, Any]:
        """The content of an engine-state entry (``ENGINE_STATE_FORMAT``)."""
        return engine_state(self.ctx, self.time, self.alarms, self.stim)

    def restore_engine_state(self, data: Mapping[str, Any]) -> None:
        """Load an ``engine_state()`` into the open case; the caller then replays later stimuli."""
        lifecycle.restore_engine_state(self, data)

    def resume_case(self, case_id: str, case_data: Mapping[str, Any], case_t: float,
                    state: Mapping[str, Any] | None, stimuli: Iterable[tuple[Mapping[str, Any], bool]],
                    journaled_rule_events: set[tuple[str, int | None, str, str]], detail: Mapping[str, Any]) -> None:
        """Continue a case left open (crash, power loss); see ``app.engine.resume``.

        ``state``: the last ``engine_state()`` entry (or None); ``stimuli``: every stimulus
        payload of the case in order with a flag "after the state entry"; those are run
        through the rules again, and the events they produce that the journal does not
        hold yet (``journaled_rule_events``: kind, stimulus index, side, site) are journaled.
        """
        lifecycle.resume_case(self, case_id, case_data, case_t, state, stimuli, journaled_rule_events, detail)
        self._after_input()


__all__ = ["ENGINE_STATE_FORMAT", "EngineOptions", "Measurement", "Monitor", "NullJournal", "NullOutputs",
           "OutputSettings", "Outputs", "fault_names", "measurement_from_json", "step_site"]
