"""The alarm system inside the engine: the alarm manager, its record and its outputs.

Owns: ``AlarmDesk``: the appliance's ``AlarmManager`` (the IEC 60601-1-8 state machine of
``app.alarms``), every transition of it journaled and announced (an ``alarm`` entry and
an event), rule events applied to it, technical conditions raised and cleared (board
link lost, board fault, lead off, storage problem, audio failure, engine fault), storage
and loudspeaker health, the end of a case's alarms when it closes, and, at the end of
every input, the ``alarms`` stream and the outputs told of the alarm state.
May import: ``app.alarms``, ``app.record.entries``, ``app.engine.context``/``ledger``/
``timebase``/``views``/``jsonsafe``/``case_state``.

The outputs (sounds, LEDs) read the manager itself; they are handed its state at every
tick and at once after a change, after the change is journaled (journal first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.alarms import AlarmKind, AlarmManager, AlarmState, LogEntry, apply_rule_event
from app.engine.case_state import CASE_ALARM_KINDS
from app.engine.context import EngineContext
from app.engine.jsonsafe import plain
from app.engine.ledger import Ledger
from app.engine.timebase import TimeBase
from app.engine.views import alarms_json
from app.model import RuleEvent
from app.record import entries as E

CASE_CLOSED = "case closed"  # who ends the case's alarms


class AlarmDesk:
    """The alarm manager and its glue (see the module docstring)."""

    def __init__(self, ctx: EngineContext, time: TimeBase, ledger: Ledger, changed: Callable[[], None]) -> None:
        self.ctx = ctx
        self.time = time
        self.ledger = ledger
        self._changed = changed  # the engine-state entry is due
        self.manager = AlarmManager(ctx.clock, ctx.settings, on_log=self._logged)
        self.dirty = True  # the alarms stream and the outputs are due
        self._state: AlarmState | None = None
        self._paused = False
        self._last_publish = -1e9
        self._deferred: list[Callable[[], None]] = []
        self.storage_ok = True
        self.storage_message = ""
        self.audio_ok = True
        self.audio_message = ""
        self.notices_since = ctx.clock.now()  # the notices shown are the open case's (none between cases)

    # -- the record of every transition

    def _logged(self, entry: LogEntry) -> None:
        """AlarmManager's on_log: journal every transition, then announce it."""
        side = site = None
        key = (entry.alarm_id or "").partition(":")[2]
        if "-" in key:
            site, _, side = key.rpartition("-")
            if side not in ("L", "R"):
                side = None
        message = str(entry.detail.get("message") or "") if isinstance(entry.detail, Mapping) else ""
        t_case = self.time.case_t(entry.t)
        self.ledger.write("alarm", {**E.alarm(entry.transition, entry.alarm_id or "audio", entry.priority, side,
                                              entry.who, message or None, entry.kind, site),
                                    "detail": plain(entry.detail)}, t_s=t_case)
        text = f"{entry.transition.replace('_', ' ')}: {entry.alarm_id or 'alarm audio'}"
        if message:
            text += f" ({message})"
        self.ledger.event("alarm", entry.transition, text, priority=entry.priority, side=side, site=site,
                          detail={"alarm": entry.alarm_id, "kind": entry.kind, "who": entry.who,
                                  **plain(entry.detail)}, t_s=t_case)
        self.dirty = True
        self._changed()

    # -- conditions

    def rule_event(self, ev: RuleEvent, who: str = "rules") -> None:
        """What a rule event does to the alarms (``app.alarms.mapping``)."""
        apply_rule_event(self.manager, ev, who=who)

    def raise_technical(self, kind: AlarmKind, key: str = "", message: str | None = None,
                        detail: Mapping[str, Any] | None = None) -> None:
        """A technical condition is present."""
        self.manager.raise_condition(kind, key, message=message, detail=detail, who="engine")

    def clear_technical(self, kind: AlarmKind, key: str = "", detail: Mapping[str, Any] | None = None) -> None:
        """A technical condition ended."""
        self.manager.clear_condition(kind, key, who="engine", detail=detail)

    def case_opened(self, origin: float) -> None:
        """A case opened (or resumed) with case time 0 at ``origin``: its notices are shown."""
        self.notices_since = origin
        self.dirty = True

    def case_closed(self) -> None:
        """The case is gone: its notices are no longer shown."""
        self.notices_since = self.ctx.clock.now()
        self.dirty = True

    def end_case(self) -> None:
        """The case closes: its alarms end (condition ended, then reset) and alarm audio is
        back on; technical alarms about the appliance stay (``app.engine.case_state``)."""
        for a in self.manager.state().alarms:
            if AlarmKind(a.kind) not in CASE_ALARM_KINDS:
                continue
            if a.condition_active:
                self.manager.clear_condition(a.kind, a.key, who=CASE_CLOSED, detail={"by": CASE_CLOSED})
            if self.manager.state().by_id(a.id) is not None:
                self.manager.reset(a.id, who=CASE_CLOSED)
        if self.manager.state().audio.mode != "normal":
            self.manager.audio_on(who=CASE_CLOSED)
        self.dirty = True

    # -- storage and loudspeaker health

    def storage_status(self, ok: bool, message: str = "") -> None:
        """From the journal's on_status callback (may arrive during a journal write: the
        change is applied at the end of the current input)."""
        def apply() -> None:
            if ok == self.storage_ok and message == self.storage_message:
                return
            self.storage_ok, self.storage_message = ok, message
            if ok:
                self.ledger.event("technical", "storage_recovered", "case record storage works again")
                self.clear_technical(AlarmKind.STORAGE_PROBLEM)
            else:
                self.ledger.event("technical", "storage_problem", f"case record storage problem: {message}",
                                  priority="medium")
                self.raise_technical(AlarmKind.STORAGE_PROBLEM,
                                     message=f"Storage problem: {message}. Monitoring and alarms continue.")
        self._deferred.append(apply)

    def check_audio(self) -> None:
        """Follow the loudspeaker's health (the annunciator raises the audio-failure alarm)."""
        ok, message = self.ctx.outputs.status()
        if ok == self.audio_ok:
            return
        self.audio_ok, self.audio_message = ok, message
        if ok:
            self.ledger.write("engine", {"event": "audio_recovered", "detail": message})
            self.ledger.event("technical", "audio_recovered", "audio output works again")
        else:
            self.ledger.write("engine", {"event": "audio_failure", "detail": message})
            self.ledger.event("technical", "audio_failure",
                              f"audio output failed: {message}; alarms on the backup buzzer", priority="high")

    # -- the end of every input

    def after_input(self, tick: bool) -> None:
        """Deferred status changes, then the alarms stream (at once after a change, every
        second while audio is paused) and the outputs (after a change, and at every tick)."""
        while self._deferred:
            self._deferred.pop(0)()
        dirty = self.dirty
        if dirty or (tick and self._paused):
            now = self.ctx.clock.now()
            st = self.manager.state()
            self._state = st
            self._paused = st.audio.mode == "paused"
            if dirty or now - self._last_publish >= 1.0:
                self.dirty = False
                self._last_publish = now
                self.ledger.publish("alarms", self.json(), sticky=True)
        elif tick:
            self._state = self.manager.state()
        if (dirty or tick) and self._state is not None:
            self.ctx.outputs.alarm_state(self._state)
            self.ctx.outputs.update()

    def json(self) -> dict[str, Any]:
        """The ``alarms`` message."""
        return alarms_json(self.manager.state(), self.time, self.notices_since)

    @property
    def sounding(self) -> bool:
        """An alarm sounds now (as of the last input); carried by the host heartbeat."""
        st = self._state
        return st is not None and st.sounding is not None
