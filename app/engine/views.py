"""What the engine shows: the state snapshot, the alarms message and the trends.

Owns: ``state_snapshot`` (the ``state`` message and ``state.get``: engine, board, link,
storage, audio, the open case and everything it owns, stimulation and what it is known
to be doing, alarms, counters),
``alarms_json`` (the ``alarms`` message) and ``trend_series`` (``trend.get``). Pure
functions of the engine's rooms: they read, never change (the format is ``app/api/API.md``).
May import: ``app.alarms`` (types), ``app.model``, ``app.settings`` (defaults),
``app.record.closeout`` (the steps still missing), ``app.engine.jsonsafe``/``timebase``/
``case_state``/``board`` (fault names)/``limits`` and, for types only, ``app.engine.core``.

With no case open, everything a case owns is empty: no steps, baselines, loss episodes,
troubleshooting, mapping, staging, last responses or irritation, and the tube check only
if one was made since the last case closed (``app.engine.case_state``).
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import TYPE_CHECKING, Any

from app import __version__
from app.engine.board_faults import fault_names
from app.engine.case_state import CaseState
from app.engine.jsonsafe import plain, rnd
from app.engine.timebase import TimeBase
from app.model import Side, Site, Step
from app.record.closeout import missing_from_procedure
from app.settings import SCHEMA
from app.rules.procedure import Procedure
from firmware_bridge.messages import Fault, Output

if TYPE_CHECKING:
    from app.alarms import AlarmState
    from app.engine.core import Monitor
    from app.engine.seams import Rules


def alarms_json(st: AlarmState, time: TimeBase, notices_since: float | None = None) -> dict[str, Any]:
    """The ``alarms`` message; notices from ``notices_since`` (engine clock) on."""
    active = []
    for a in st.alarms:
        d = a.to_json()
        site, _, side = a.key.rpartition("-")
        d.update(
            technical=a.category == "technical",
            raised_t_s=round(time.case_t(a.since), 3),
            acknowledged_t_s=None if a.acknowledged_at is None else round(time.case_t(a.acknowledged_at), 3),
            side=side if side in ("L", "R") else None,
            site=site if side in ("L", "R") else None,
            name=a.title,
        )
        d.pop("since", None)
        d.pop("unacknowledged_since", None)
        d.pop("acknowledged_at", None)
        active.append(d)
    audio = st.audio
    notices = [n for n in st.notices if notices_since is None or n.t >= notices_since]
    return {
        "type": "alarms",
        "audio": audio.mode,
        "pause_remaining_s": round(audio.remaining_s, 1) if audio.remaining_s is not None else 0.0,
        "audio_off_reminder_in_s": rnd(audio.next_reminder_in_s, 1),
        "sounding": st.sounding,
        "sounding_id": st.sounding_id,
        "top": active[0]["id"] if active else None,
        "active": active,
        "notices": [{**n.to_json(), "t_s": round(time.case_t(n.t), 3)} for n in notices[-10:]],
    }


def trend_series(case: CaseState | None, side: str | None = None, max_points: int = 1000) -> list[dict[str, Any]]:
    """The case's amplitude/latency series (``trend.get``), each decimated to ``max_points``."""
    if case is None:
        return []
    series = []
    for key, tr in sorted(case.trends.items()):
        s_side, site, source = key.split("-")
        if side is not None and s_side != side:
            continue
        step = max(1, math.ceil(len(tr.t) / max_points))
        amp_pct = lat_pct = None
        b = case.rules.aps_baseline(Side(s_side)) if source == "APS" else None
        if b and b.get("amplitude_uV"):
            amp_pct = [None if a is None else round(a / b["amplitude_uV"] * 100, 1) for a in tr.amp[::step]]
            lat_pct = [None if x is None or not b.get("latency_ms") else round(x / b["latency_ms"] * 100, 1)
                       for x in tr.lat[::step]]
        series.append({"side": s_side, "site": site, "source": source, "t_s": tr.t[::step],
                       "amplitude_uV": tr.amp[::step], "latency_ms": tr.lat[::step],
                       "amplitude_pct": amp_pct, "latency_pct": lat_pct})
    return series


def _aps(rules: Rules | None, last: dict[str, dict[str, Any]], needed: int) -> dict[str, Any]:
    out = {}
    sides = rules.state()["sides"] if rules is not None else {}
    for side in (Side.L, Side.R):
        b = rules.aps_baseline(side) if rules is not None else None
        rs = sides.get(side.value, {})
        lst = last.get(side.value) or {}
        aps = lst.get("source") == "APS"
        out[side.value] = {
            "side": side.value,
            "baseline_uV": rnd(b.get("amplitude_uV"), 1) if b else None,
            "baseline_latency_ms": rnd(b.get("latency_ms"), 3) if b else None,
            "baseline_count": rs.get("aps_collected", 0) if not b else b.get("count"),
            "baseline_needed": needed,
            "collecting": rs.get("aps_baseline_state") not in (None, "SET"),
            "amplitude_pct": lst.get("amplitude_pct") if aps else None,
            "latency_pct": lst.get("latency_pct") if aps else None,
        }
    return out


def _procedure(rules: Rules | None) -> dict[str, Any]:
    """Steps, loss episodes, troubleshooting, mapping, staging and baselines of the case
    (those of an empty procedure with no case open)."""
    proc = rules.procedure if rules is not None else Procedure()
    steps: dict[str, Any] = {}
    los: dict[str, Any] = {}
    ts: dict[str, Any] = {}
    mapping: dict[str, Any] = {}
    for side in ("L", "R"):
        s_steps = {step.value: plain(v) for step in Step if (v := proc.step(side, step))}
        for phase in ("L1", "L2"):
            v = proc.laryngoscopy(phase, side)
            if v:
                s_steps[phase] = v
        steps[side] = s_steps
        t = proc.troubleshooting(side)
        ts[side] = plain(t) if t else None
        mapping[side] = proc.mapping(side)
        los[side] = {"active": bool(t and t.get("open")), "since_s": t.get("t_s") if t else None,
                     "recovered_at_s": t.get("recovered_t_s") if t else None, "type": mapping[side].get("type")}
    baselines: dict[str, Any] = {}
    for site in (Site.VAGUS, Site.RLN):
        for s in (Side.L, Side.R):
            b = rules.probe_baseline(site, s) if rules is not None else None
            if b:
                baselines[f"{site.value}-{s.value}"] = plain(b)
    staging = proc.staging_recommendation()
    history = proc.staging_history()
    return {
        "baselines": baselines, "steps": steps, "los": los, "troubleshooting": ts, "mapping": mapping,
        # what the close-out will ask a reason for (``app.record.closeout``), per planned side
        "missing_steps": missing_from_procedure(proc.to_dict()) if rules is not None else [],
        "staging": {"recommended": staging is not None, "active": plain(staging),
                    "reason": staging["message"] if staging else "",
                    "decision": history[-1]["decision"] if history else None},
    }


def _tube(m: Monitor) -> dict[str, Any] | None:
    check = m.tube.current
    if check is None:
        return None
    tube = check.result
    return {**plain(tube), "t_s": round(m.time.case_t(check.t_clock), 3),
            "breathing_variation": plain(check.breathing_json(m.clock.now())),
            "checked": True, "pass": bool(tube.get("passed")),
            "impedances_kohm": {k: (None if v < 0 else round(v / 1000.0, 2))
                                for k, v in tube["impedances_ohm"].items()}}


def _board(m: Monitor) -> dict[str, Any]:
    b = m.board
    caps = b.capabilities
    return {"connected": b.link_up, "url": m.board_url,
            "board_id": caps.board_id if caps else None, "firmware": caps.firmware_version if caps else None,
            "faults": fault_names(b.faults),
            "stimulating": [o.name.lower() for o in b.stimulating],
            "backup_beeper": bool(b.faults & Fault.BACKUP_BEEPER),
            "max_current_mA": caps.max_current_uA / 1000.0 if caps else None}


def _known(m: Monitor, output: Output) -> dict[str, Any]:
    """What an output is known to do: ``state`` on | off | unknown (link down, board not
    accepted, its data not arriving as promised) and ``state_reason`` (why unknown)."""
    state, why = m.board.stim_state(output)
    return {"state": state, "state_reason": why or None}


def state_snapshot(m: Monitor, seq: int) -> dict[str, Any]:
    """The ``state`` message (see ``app/api/API.md``)."""
    st = m.settings
    c = m.case
    caps = m.board.capabilities
    case = None
    if c is not None:
        case = {"case_id": c.case_id, **plain(c.data), "resumed": c.resumed, "t_s": round(m.now_t(), 3)}
    last = c.last if c is not None else {}
    stim = m.stim
    counters = m.counters
    return {
        "type": "state", "seq": seq, "t_s": round(m.now_t(), 3),
        "wall_time": m.wall_clock().astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "engine": {"version": f"lnm {__version__}", "simulated": bool(caps and caps.simulated),
                   "profile": m.profile, "uptime_s": round(m.clock.now() - m.started_at, 1),
                   "fatal": m.fatal},
        "board": _board(m),
        "storage": {"ok": m.alarm_desk.storage_ok, "message": m.alarm_desk.storage_message},
        "recording": m.ledger.recording().to_json(),
        "audio": {"ok": m.alarm_desk.audio_ok, "backend": m.outputs.describe(), "message": m.alarm_desk.audio_message},
        "case": case,
        "last_case_id": m.last_case_id,
        "stim": {"confirm_above_mA": float(st["stim.confirm_above_mA"]),
                 "probe": {**stim.probe.to_json(), "site": stim.probe_site.value, "side": stim.probe_side.value,
                           "step": stim.probe_step.value if stim.probe_step else None, **_known(m, Output.PROBE)},
                 "aps": {**stim.aps.to_json(), "side": stim.aps_side.value, **_known(m, Output.APS)}},
        "link": m.board.link_json(),
        "threshold_uV": float(st["analysis.event_threshold_uV"]),
        "threshold_default_uV": float(SCHEMA["analysis.event_threshold_uV"].default),
        # protected limits relaxed beyond their defaults: shown on the monitor until restored
        "limits": m.relaxations.view(st, m.time.case_t),
        "volume_pct": float(st["audio.volume_pct"]),
        "last": dict(last),
        "aps": _aps(c.rules if c is not None else None, last, int(st["rules.aps_baseline_count"])),
        **_procedure(c.rules if c is not None else None),
        "pending_step": c.pending_step if c is not None else None,
        "tube": _tube(m),
        "emg": {"cautery": m.emg.cautery,
                "irritation_active": {k: round(v, 3) for k, v in (c.irritation_active if c else {}).items()},
                "irritation_last_s": {k: round(v, 3) for k, v in (c.irritation if c else {}).items()}},
        "alarms": m.alarm_desk.json(),
        "counters": {"stimuli": counters["stimuli"], "journal_entries": counters["journal_entries"],
                     "emg_blocks": counters["emg_blocks"], "emg_gaps": counters["emg_gaps"]},
    }


__all__ = ["alarms_json", "state_snapshot", "trend_series"]
