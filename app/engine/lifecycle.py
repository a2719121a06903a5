"""A case's life in the engine: opened, closed, brought back after a crash.

Owns: ``open_case_state`` (a new ``CaseState`` and every room told: case clock, journal,
engine-state entries, tube check, the reader's inbox), ``close_case`` (the end of everything the case owns, as
``app.engine.case_state`` describes, journaled in the closing case before its closing
entry), ``case_summary``, ``restore_engine_state`` and ``resume_case`` (crash resume, see
``app.engine.resume``).
May import: ``app.engine`` rooms, ``app.model``, ``app.record.entries``, ``app.rules.engine``
(snapshot restore), ``app.alarms``; ``app.engine.core`` for types only.

These functions take the ``Monitor`` because a case's life touches every room; they are
the only place that creates or drops the case state.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from app import __version__
from app.alarms import AlarmKind, apply_rule_event
from app.engine.alarm_desk import CASE_CLOSED
from app.engine.case_state import CaseState
from app.engine.inbox import case_changed
from app.engine.jsonsafe import plain
from app.engine.persist import ENGINE_STATE_FORMAT
from app.model import InvalidReason, Measurement, Side, Site, Source, Step, Stimulus
from app.record import entries as E
from app.settings import SCHEMA, Settings

if TYPE_CHECKING:
    from app.engine.core import Monitor


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


def open_case_state(m: Monitor, case_id: str, case_data: Mapping[str, Any], origin: float, *,
                    settings_before: Settings, profile_before: str | None) -> CaseState:
    """The case state of a case that opens (or resumes) now, with case time 0 at ``origin``
    (the tube check made before it is the caller's to hand over: ``TubeDesk.case_opened``)."""
    ctx = m.ctx
    case = CaseState(case_id=case_id, data=dict(case_data), rules=m.rules_factory(ctx.settings),
                     settings_before=settings_before, profile_before=profile_before,
                     events=collections.deque(maxlen=ctx.options.events_kept))
    ctx.case = case
    m.time.start_case(origin)
    m.ledger.attach(case_id, case.events)
    m.persist.case_opened()
    m.alarm_desk.case_opened(origin)
    _inbox_changed(m)
    return case


def _inbox_changed(m: Monitor) -> None:
    """The reader's inbox follows the case (``app.engine.inbox``)."""
    case_changed(m)


def case_summary(m: Monitor, case: CaseState) -> dict[str, Any]:
    """The closing entry's summary: the procedure, the case's stimuli and rule events."""
    return {"procedure": case.rules.procedure.summary(m.settings), "stimuli": case.stim_index,
            "rule_events": dict(case.rule_counts)}


def _settings_back(m: Monitor, case: CaseState) -> None:
    """What was changed during the case goes back to what was in force when it opened (journaled)."""
    before, now = case.settings_before, m.settings
    changed = [k for k in SCHEMA if now[k] != before[k]]
    for key in changed:
        m.ledger.write("setting_changed", E.setting_changed(key, now[key], before[key], who=CASE_CLOSED))
    if changed:
        m.apply_settings(before)
    if changed or m.profile != case.profile_before:
        m.ledger.event("case", "settings_restored", "settings of the case ended: back to "
                       + (f"profile {case.profile_before}" if case.profile_before else "the configuration")
                       + (" (" + ", ".join(changed) + ")" if changed else ""),
                       detail={"changed": changed, "profile": case.profile_before})
    m.ctx.profile = case.profile_before


def close_case(m: Monitor, who: str | None, note: str | None,
               missing_steps: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """Close the open case: stimulation stops, its EMG and tube check are written, its alarms
    and settings end (``app.engine.case_state``), its closing entry holds the summary (and
    the INMSG steps still missing with their reasons, ``app.record.closeout``), and its
    state goes; returns (id, summary)."""
    ctx = m.ctx
    case = ctx.case
    if case is None:
        raise ValueError("no case is open")
    for out in m.stim.outputs():
        if out.on:
            out.on = False
            ctx.send(out.stimulate())
    m.pipeline.case_closing()  # the case's epochs still waiting for the other output's pulses
    m.emg.flush()
    m.tube.case_closing(case)
    m.board.case_closing()  # the board link's health over the case
    summary = case_summary(m, case)  # under the case's own settings
    m.alarm_desk.end_case()
    _settings_back(m, case)
    m.persist.write()
    closing: dict[str, Any] = {"reason": note or "closed by the operator", "who": who, "summary": summary}
    if missing_steps is not None:
        closing["missing_steps"] = missing_steps
    m.ledger.close_case(closing)
    m.ledger.event("case", "closed", f"case {case.case_id} closed", detail={"case_id": case.case_id})
    m.last_case_id = case.case_id
    m.last_case_summary = summary
    ctx.case = None
    m.time.end_case()
    m.tube.waiting = None  # a check of the next patient is one made from now on
    m.stim.reset(m.settings)
    m.alarm_desk.case_closed()
    _inbox_changed(m)
    return case.case_id, summary


def restore_engine_state(m: Monitor, data: Mapping[str, Any]) -> None:
    """Load an ``engine_state()`` into the open case (crash resume); the caller then replays later stimuli."""
    from app.rules.engine import RuleEngine

    if data.get("format") != ENGINE_STATE_FORMAT:
        raise ValueError(f"engine state: format {data.get('format')!r} is not {ENGINE_STATE_FORMAT!r}")
    case = m.ctx.case
    if case is None or not isinstance(data.get("case"), Mapping):
        raise ValueError("engine state: it is a case's state, and restoring it needs that case open")
    d = dict(data["case"])
    changes = dict(d.get("settings") or {})
    if changes:
        m.apply_settings(m.settings.with_changes(changes, "resumed case"))
    case.rules = RuleEngine.restore(m.settings, data["rules"])
    origin = data.get("origin")
    shift = m.time.origin - float(origin) if isinstance(origin, (int, float)) else None
    m.alarms.restore(data["alarms"], who="resume", shift=shift)  # onsets, acknowledgements, a pause: as they were
    m.stim.restore(d)
    case.restore(d, m.time.origin, m.settings)
    m.ctx.profile = d.get("profile", m.ctx.profile)
    m.alarm_desk.dirty = True


def resume_case(m: Monitor, case_id: str, case_data: Mapping[str, Any], case_t: float,
                state: Mapping[str, Any] | None, stimuli: Iterable[tuple[Mapping[str, Any], bool]],
                journaled_rule_events: set[tuple[str, int | None, str, str]], detail: Mapping[str, Any]) -> None:
    """Continue a case left open (see ``Monitor.resume_case``)."""
    case = open_case_state(m, case_id, case_data, m.clock.now() - case_t, settings_before=m.settings,
                           profile_before=m.profile)
    m.tube.waiting = None  # a check made before the engine stopped is the case's only if journaled in it
    if state is not None:
        restore_engine_state(m, state)
    elif case_data.get("planned_sides"):
        case.rules.procedure.set_plan(case_data["planned_sides"], 0.0)
    replayed = 0
    for payload, after in stimuli:
        meas = measurement_from_json(payload)
        if after:
            replayed += 1
            for ev in case.rules.process(meas):
                key = (ev.kind.value, ev.stimulus_index, ev.side.value, ev.site.value)
                if key in journaled_rule_events:
                    case.rule_counts[ev.kind.value] += 1
                    apply_rule_event(m.alarms, ev, who="resume")
                else:
                    m.pipeline.rule_event(case, ev)
        case.stim_index = max(case.stim_index, meas.stimulus.index + 1)
        if meas.valid:
            case.last_valid[(meas.stimulus.site.value, meas.stimulus.side.value)] = meas
        m.pipeline.remember(case, meas)
    case.rules.take_documented_steps()  # R2/V2 after a loss, replayed: in the procedure state written below
    case.resumed = True
    m.ledger.write("engine", {"event": "resumed", "version": __version__,
                              "detail": {**plain(detail), "replayed_stimuli": replayed,
                                         "state_restored": state is not None}})
    m.ledger.event("case", "resumed", f"case {case_id} resumed after an interruption "
                   f"({detail.get('gap_s', 0):.1f} s without the engine); baselines and alarms restored",
                   priority="medium", detail={"case_id": case_id, **plain(detail), "replayed_stimuli": replayed})
    damaged = detail.get("damaged")
    if isinstance(damaged, Mapping):
        left = damaged.get("entries")
        where = (f"{left if left else 'the'} entries from entry {damaged.get('from_seq')} on"
                 if damaged.get("from_seq") is not None else "part of it")
        text = (f"case {case_id} resumed from what could be read: {where} could not be used "
                f"({damaged.get('problem')}); the journal keeps them for service")
        m.ledger.event("technical", "resumed_damaged", text, priority="medium", detail=plain(damaged))
        m.alarm_desk.raise_technical(AlarmKind.STORAGE_PROBLEM, "resume", message=f"Case record: {text}")
        m.alarm_desk.clear_technical(AlarmKind.STORAGE_PROBLEM, "resume")  # latched until acknowledged
    m.alarm_desk.dirty = True
    m.persist.write()
