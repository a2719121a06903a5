"""Case commands: ``case.start``, ``case.update``, ``case.close``.

Owns: those handlers: the case data checked and journaled, the surgeon profile loaded,
the case state opened and closed through ``app.engine.lifecycle`` (what a case owns and
what crosses to the next one: ``app.engine.case_state``).
May import: ``app.api.protocol``, ``app.settings``, ``app.record.entries``,
``app.engine.lifecycle``/``jsonsafe``/``commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app import __version__
from app.api import protocol as p
from app.engine.commands.registry import command, open_case, operator
from app.engine.commands.state import journal_selftest
from app.engine.jsonsafe import plain
from app.engine.lifecycle import close_case, open_case_state
from app.record import entries as E
from app.record.closeout import closeout_entries, missing_from_procedure
from app.settings import SettingError

# anaesthesia for the INMSG record (the case.start / case.update arguments, app.api.protocol)
ANAESTHESIA_FIELDS = ("relaxant", "relaxant_time", "tof_count", "tof_ratio_pct")

if TYPE_CHECKING:
    from app.engine.core import Monitor
    from app.settings import Settings


def _profile(m: Monitor, profile: str) -> Settings:
    if m.settings_loader is None:
        raise p.ApiError(p.INVALID_ARGUMENT, "case.start: surgeon profiles are not available", argument="profile")
    try:
        return m.settings_loader(m.config_dir, profile)
    except SettingError as exc:
        raise p.ApiError(p.SETTING_REJECTED, f"case.start: {exc}", argument="profile") from None


@command("case.start")
def case_start(m: Monitor, req: p.Request, patient_id: str, profile: str | None = None,
               **data: Any) -> dict[str, Any]:
    """Open a new case: the journal records from now on, and the case state starts empty."""
    if m.case is not None:
        raise p.ApiError(p.BAD_STATE, f"case.start: case {m.case.case_id} is open; close it first (case.close)")
    settings_before, profile_before = m.settings, m.profile
    if profile is not None:
        new = _profile(m, profile)
        m.ctx.profile = profile
        m.apply_settings(new)
    sides = data.get("planned_sides") or []
    caps = m.board.capabilities
    case_data = {
        "patient_id": patient_id, "planned_sides": list(sides), "surgeon": data.get("surgeon"),
        "procedure": data.get("procedure"),
        "tube": {k: data.get(f"tube_{k}") for k in ("type", "size_mm", "depth_cm")},
        # INMSG: the relaxant and train-of-four when monitoring started (case.update may add them later)
        "anaesthesia": {k: data.get(k) for k in ANAESTHESIA_FIELDS},
        "operator": req.client or None,
        "board": None if caps is None else {
            "firmware_version": caps.firmware_version, "board_id": caps.board_id, "simulated": caps.simulated},
    }
    case_id = m.ledger.open_case(case_data)
    case = open_case_state(m, case_id, case_data, m.clock.now(), settings_before=settings_before,
                           profile_before=profile_before)
    m.ledger.write("settings", E.settings(m.settings, source="case start", profile=m.profile), t_s=0.0)
    m.ledger.write("engine", {"event": "case_started", "version": __version__,
                              "detail": {"board_url": m.board_url, "options": plain(m.options.__dict__)}}, t_s=0.0)
    if sides:
        case.rules.procedure.set_plan(sides, 0.0)
    m.tube.case_opened(case)
    journal_selftest(m)  # how the alarm outputs were checked before this case
    operator(m, req, detail={"patient_id": patient_id, "profile": profile, **data})
    m.ledger.event("case", "opened", f"case {case_id} opened", detail={"case_id": case_id})
    m.persist.write()
    return {"case_id": case_id}


@command("case.update")
def case_update(m: Monitor, req: p.Request, **data: Any) -> dict[str, Any]:
    """Change the open case's data (surgeon, procedure, planned sides, tube, anaesthesia)."""
    case = open_case(m, "case.update")
    for k, v in data.items():
        if k.startswith("tube_"):
            case.data.setdefault("tube", {})[k[5:]] = v
        elif k in ANAESTHESIA_FIELDS:
            case.data.setdefault("anaesthesia", {})[k] = v
        else:
            case.data[k] = v
    if data.get("planned_sides"):
        case.rules.procedure.set_plan(data["planned_sides"], m.now_t())
        m.pipeline.check_staging(case)
    operator(m, req)
    return {"case": case.data}


@command("case.close")
def case_close(m: Monitor, req: p.Request, note: str | None = None,
               reasons: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stop stimulation and close the open case; what it owned ends with it.

    The INMSG steps still missing per planned side (``app.record.closeout``) are journaled
    in the closing entry, each with the reason given in ``reasons`` (or none): closing is
    never refused for want of a reason, only for a reason that cannot be one (not text,
    too long, or for a step that is not missing), before anything is closed."""
    case = open_case(m, "case.close")
    missing = missing_from_procedure(case.rules.procedure.to_dict())
    try:
        entries = closeout_entries(missing, reasons, who=req.client or None)
    except ValueError as exc:
        raise p.ApiError(p.INVALID_ARGUMENT, f"case.close: {exc}", argument="reasons") from None
    operator(m, req)
    case_id, summary = close_case(m, req.client or None, note, missing_steps=entries)
    return {"case_id": case_id, "summary": summary, "missing_steps": entries}
