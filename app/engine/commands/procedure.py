"""Procedure commands: steps, laryngoscopy, baselines, troubleshooting, mapping, staging, tube check.

Owns: the handlers of ``step.tag``, ``step.clear``, ``laryngoscopy``, ``baseline.capture``,
``baseline.rebaseline``, ``ts.answer``, ``ts.verdict``, ``mapping.result``,
``mapping.clear``, ``staging.decision``, ``tube.check`` and ``tube.override``: each
changes the open case's procedure (``app.rules.procedure``) or tube check, journals it
and announces it.
May import: ``app.api.protocol``, ``app.alarms``, ``app.model``, ``app.rules.procedure``,
``app.engine`` rooms and ``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.alarms import AlarmKind
from app.api import protocol as p
from app.engine.commands.registry import command, open_case, operator, who
from app.engine.jsonsafe import plain
from app.engine.lifecycle import measurement_from_json
from app.engine.stimulator import step_site
from app.model import Side, Site, Source, Step
from app.rules.procedure import CHECK_QUESTIONS, Check, ProcedureError
from firmware_bridge.messages import ImpedanceRequest

if TYPE_CHECKING:
    from app.engine.core import Monitor

# what a mapping point keeps of its measurement (journaled with the operator entry)
MAP_POINT_FIELDS = ("position_mm", "response", "amplitude_uV", "latency_ms", "set_mA", "delivered_mA",
                    "stimulus_index", "stimulus_t_s", "measured", "measured_response", "note")

# journal vocabulary of laryngoscopy findings (app.record.entries.FOLD_FINDINGS)
FINDING_TO_RECORD = {"normal": "normal", "paresis": "reduced", "palsy": "immobile", "not_examined": "not_assessed"}


@command("step.tag")
def step_tag(m: Monitor, req: p.Request, step: str, side: str | None = None, which: str = "last") -> dict[str, Any]:
    """Record a step: from the side's last valid stimulus of the step's site (``last``),
    the next one (``next``), or the stimulus the side's loss-of-signal troubleshooting
    offers for it (``offer``: R2 / V2 given after the loss, no response). The step's
    rules apply at once (``StimulusPipeline.record_step``: a poor V1 is raised now)."""
    case = open_case(m, "step.tag")
    s = Step(step)
    side = side or m.stim.probe_side.value
    site = step_site(s)
    if which == "next":
        case.pending_step = {"step": s.value, "side": side, "who": who(req)}
        operator(m, req, detail={"step": s.value, "side": side, "which": "next"})
        return {"step": s.value, "side": side, "recorded": False, "pending": True}
    if which == "offer":
        offer = case.rules.procedure.offer(side, s)
        if not offer or not offer.get("measurement"):
            raise p.ApiError(p.BAD_STATE, f"step.tag: the troubleshooting of side {side} offers no stimulus for "
                                          f"{s.value} (only R2 and V2 given after a loss of signal are offered)")
        meas = measurement_from_json(offer["measurement"])
    else:
        meas = case.last_valid.get((site.value, side))
        if meas is None:
            raise p.ApiError(p.BAD_STATE,
                             f"step.tag: no valid {site.value} response on side {side} yet to record as {s.value}")
    try:
        with m.ledger.transaction():  # the step and the events its rules raise: one write (none if refused)
            value = m.pipeline.record_step(case, s, meas, who=who(req), how="operator")
            operator(m, req, detail={"step": s.value, "side": side, "which": which,
                                     "stimulus_index": meas.stimulus.index})
    except ProcedureError as exc:
        raise p.ApiError(p.BAD_STATE, f"step.tag: {exc}") from None
    return {"step": s.value, "side": side, "recorded": True, "measurement": meas.to_json(), "value": value}


@command("step.clear")
def step_clear(m: Monitor, req: p.Request, step: str, side: str) -> dict[str, Any]:
    """Forget a step's recorded value."""
    open_case(m, "step.clear").rules.procedure.clear_step(side, step)
    operator(m, req)
    return {"step": step, "side": side}


@command("laryngoscopy")
def laryngoscopy(m: Monitor, req: p.Request, phase: str, side: str, finding: str,
                 note: str | None = None) -> dict[str, Any]:
    """L1 or L2 vocal-fold finding of a side."""
    proc = open_case(m, "laryngoscopy").rules.procedure
    proc.set_laryngoscopy(phase, side, finding, m.now_t(), note or "")
    other_value = (proc.laryngoscopy(phase, Side(side).other) or {}).get("finding", "not_examined")
    left, right = (finding, other_value) if side == "L" else (other_value, finding)
    m.ledger.write("laryngoscopy", {"step": phase, "left": FINDING_TO_RECORD[left],
                                    "right": FINDING_TO_RECORD[right], "who": req.client or None,
                                    "comment": note or None})
    m.ledger.event("procedure", "laryngoscopy", f"{phase} {side}: {finding}", side=side,
                   detail={"phase": phase, "finding": finding, "note": note})
    m.persist.changed()
    return {"phase": phase, "side": side, "finding": finding}


@command("baseline.capture")
def baseline_capture(m: Monitor, req: p.Request, site: str, side: str) -> dict[str, Any]:
    """The site's last valid response becomes its probe baseline."""
    case = open_case(m, "baseline.capture")
    meas = case.last_valid.get((site, side))
    if meas is None or not meas.response:
        raise p.ApiError(p.BAD_STATE, f"baseline.capture: no valid {site} response on side {side} to capture")
    operator(m, req, detail={"site": site, "side": side, "stimulus_index": meas.stimulus.index})
    try:
        events = case.rules.capture_baseline(Site(site), Side(side), meas, t_s=m.now_t())
    except ValueError as exc:
        raise p.ApiError(p.BAD_STATE, f"baseline.capture: {exc}") from None
    for ev in events:
        m.pipeline.rule_event(case, ev)
    return {"site": site, "side": side, "amplitude_uV": meas.amplitude_uV, "latency_ms": meas.latency_ms}


@command("baseline.rebaseline")
def baseline_rebaseline(m: Monitor, req: p.Request, side: str) -> dict[str, Any]:
    """A new continuous vagal baseline for a side."""
    case = open_case(m, "baseline.rebaseline")
    operator(m, req)
    for ev in case.rules.rebaseline(Side(side), Source.APS, t_s=m.now_t()):
        m.pipeline.rule_event(case, ev)
    # The rules end an open combined-event / amplitude-decrease episode of that vagus
    # without a recovery event: its alarm condition ends with it (a latched alarm
    # still stays until it is reset).
    key = f"{Site.VAGUS.value}-{Side(side).value}"
    for kind in (AlarmKind.COMBINED_EVENT, AlarmKind.AMPLITUDE_DECREASE):
        m.alarms.clear_condition(kind, key, who=who(req), detail={"by": "rebaseline"})
    return {"side": side, "needed": int(m.settings["rules.aps_baseline_count"])}


def _troubleshooting_changed(m: Monitor, entry: dict[str, Any], text: str, side: str,
                             detail: dict[str, Any]) -> None:
    m.ledger.write("troubleshooting", entry)
    m.ledger.event("procedure", "troubleshooting", text, side=side, detail=detail)
    m.persist.changed()
    m.pipeline.check_staging(open_case(m, "troubleshooting"))


@command("ts.answer")
def ts_answer(m: Monitor, req: p.Request, side: str, check: str, answer: str,
              note: str | None = None) -> dict[str, Any]:
    """An answer in the loss-of-signal troubleshooting sequence."""
    proc = open_case(m, "ts.answer").rules.procedure
    try:
        state = proc.answer(side, check, answer, m.now_t(), note or "", by=who(req))
    except ProcedureError as exc:
        raise p.ApiError(p.BAD_STATE, f"ts.answer: {exc}") from None
    question = CHECK_QUESTIONS[Check(check)]
    _troubleshooting_changed(
        m, {"check": check, "answer": answer, "side": side, "question": question, "who": req.client or None},
        f"{question} {answer} -> {state.get('message')}", side,
        {"check": check, "answer": answer, "conclusion": state.get("conclusion")})
    return {"troubleshooting": state}


@command("ts.verdict")
def ts_verdict(m: Monitor, req: p.Request, side: str, verdict: str, reason: str) -> dict[str, Any]:
    """The surgeon's own verdict on a side's loss of signal."""
    proc = open_case(m, "ts.verdict").rules.procedure
    try:
        proc.set_verdict(side, verdict, reason, m.now_t())
    except ProcedureError as exc:
        raise p.ApiError(p.BAD_STATE, f"ts.verdict: {exc}") from None
    _troubleshooting_changed(
        m, {"check": "verdict", "answer": verdict, "side": side, "question": reason, "who": req.client or None},
        f"surgeon's verdict {side}: {verdict} ({reason})", side, {"verdict": verdict, "reason": reason})
    return {"troubleshooting": proc.troubleshooting(side)}


@command("mapping.result")
def mapping_result(m: Monitor, req: p.Request, side: str, position_mm: float, response: bool,
                   amplitude_uV: float | None = None, label: str | None = None) -> dict[str, Any]:
    """A point of RLN mapping after a loss of signal: it keeps what was measured at it (the
    amplitude, latency, set and delivered current of the side's last RLN probe stimulus
    since the loss that no earlier point took, ``Procedure.add_mapping_point``; an
    amplitude entered by hand instead), and the loss type and the lesion are journaled
    each time they change (a type 1 lesion moves with every point)."""
    proc = open_case(m, "mapping.result").rules.procedure
    try:
        mapping = proc.add_mapping_point(side, position_mm, response, m.now_t(), amplitude_uV, label or "")
    except ProcedureError as exc:
        raise p.ApiError(p.BAD_STATE, f"mapping.result: {exc}") from None
    point = dict(max(mapping["points"], key=lambda pt: pt["t_s"]))
    operator(m, req, detail={**req.args, "point": plain({k: point.get(k) for k in MAP_POINT_FIELDS})})
    changed = bool(mapping.pop("changed", False))
    if changed and mapping.get("type") in (1, 2):
        m.ledger.write("los_type", {"side": side, "los_type": int(mapping["type"]), "who": req.client or None,
                                    "detail": plain(mapping)})
        m.ledger.event("procedure", "los_type", mapping["message"], side=side, site=mapping["site"],
                       detail=plain(mapping))
    m.persist.changed()
    return {"los_type": mapping.get("type"), "mapping": mapping, "point": point, "changed": changed}


@command("mapping.clear")
def mapping_clear(m: Monitor, req: p.Request, side: str) -> dict[str, Any]:
    """Forget a side's mapping points."""
    proc = open_case(m, "mapping.clear").rules.procedure
    proc.clear_mapping(side)
    operator(m, req)
    return {"mapping": proc.mapping(side)}


@command("staging.decision")
def staging_decision(m: Monitor, req: p.Request, decision: str, reason: str) -> dict[str, Any]:
    """The surgeon's decision after a staging recommendation."""
    proc = open_case(m, "staging.decision").rules.procedure
    try:
        entry = proc.decide_staging(decision, reason, m.now_t())
    except ProcedureError as exc:
        raise p.ApiError(p.BAD_STATE, f"staging.decision: {exc}") from None
    m.ledger.write("staging", {"recommendation": entry["message"], "decision": decision, "reason": reason,
                               "who": req.client or None, "side": entry.get("side")})
    m.ledger.event("procedure", "staging_decision", f"staging decision: {decision} ({reason})", detail=entry)
    m.persist.changed()
    return {"staging": entry}


@command("tube.check")
def tube_check(m: Monitor, req: p.Request) -> dict[str, Any]:
    """Measure the electrode impedances now (the result comes back from the board)."""
    m.board.require_link("tube.check")
    operator(m, req)
    m.ctx.send(ImpedanceRequest())
    return {"requested": True}


@command("tube.override")
def tube_override(m: Monitor, req: p.Request, reason: str) -> dict[str, Any]:
    """Accept the case's failed tube check, with a reason."""
    if not m.tube.override(open_case(m, "tube.override"), who(req), reason):
        raise p.ApiError(p.BAD_STATE, "tube.override: there is no failed tube check to accept")
    operator(m, req)
    return {"override": True}
