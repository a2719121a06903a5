"""One way to round, write and name every clinical value: screen, report, case JSON and EDF+.

Owns: the precision of each quantity (``PRECISION``), ``round_value`` (rounding once, half
away from zero, on the decimal value a person reads), the text of amplitudes, latencies,
currents, percentages, case times and positions, and the words for sides, sites, INMSG
steps, rule events, priorities, troubleshooting checks and conclusions, laryngoscopy
findings, staging decisions, alarm transitions, invalid epochs and operator actions.
May import: the standard library only (the touchscreen UI imports it, and so do
``app.record`` and ``app.analysis``).

Why one place: a number rounded twice (423.46 -> 423.5 -> "424") or by two rules (the
screen's ``int()`` against the report's ``round``) shows two values for one measurement.
Every writer takes the raw value and calls the function of its quantity here, once:

==============  ==========  ==================================================
quantity        precision   text
==============  ==========  ==================================================
amplitude_uV    1 µV        ``706 µV`` (peak-to-peak)
latency_ms      0.01 ms     ``3.76 ms``
current_mA      0.01 mA     ``1.00 mA``; delivered beside set where measured
percent         1 %         ``96 %``
position_mm     0.1 mm      ``16 mm`` / ``16.5 mm``
==============  ==========  ==================================================

Rounding is half away from zero on the shortest decimal text of the float (``repr``),
so 2.675 ms shows as 2.68 ms, as a person rounding the printed value would. The case
JSON stores the values at these precisions (``app.record.document``), the report and the
screen print them with the same functions, and EDF+ annotations that carry a measured
value use them too; the stimulus currents of STIM annotations keep the stimulator's
resolution of 1 µA (``current_exact``), because the rules compare them with the set current.

Nothing here returns an internal key: ``words(table, key)`` falls back to the key with its
underscores turned into spaces, so an unknown value still reads as words.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from collections.abc import Mapping
from typing import Any

PRECISION: dict[str, int] = {
    "amplitude_uV": 0,
    "latency_ms": 2,
    "current_mA": 2,
    "current_exact_mA": 3,
    "percent": 0,
    "position_mm": 1,
}
NONE_TEXT = "-"
UV = "µV"


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        try:
            x = float(x)  # numpy scalars, numeric strings
        except (TypeError, ValueError):
            return None
    x = float(x)
    return x if math.isfinite(x) else None


def round_value(x: Any, digits: int) -> float | int | None:
    """``x`` rounded half away from zero to ``digits`` decimals (an ``int`` for 0 digits);
    None for a missing or non-finite value."""
    v = _finite(x)
    if v is None:
        return None
    try:
        q = Decimal(repr(v)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # astronomically large values: nothing to round
        return v
    if digits <= 0:
        return int(q)
    out = float(q)
    return 0.0 if out == 0 else out  # no "-0.00"


def amplitude_uV(x: Any) -> int | None:
    """A peak-to-peak amplitude as shown and stored (whole µV)."""
    return round_value(x, PRECISION["amplitude_uV"])  # type: ignore[return-value]


def latency_ms(x: Any) -> float | None:
    """A latency as shown and stored (0.01 ms)."""
    return round_value(x, PRECISION["latency_ms"])


def current_mA(x: Any) -> float | None:
    """A current as shown (0.01 mA)."""
    return round_value(x, PRECISION["current_mA"])


def current_exact(x: Any) -> float | None:
    """A stimulator current at its resolution (1 µA): what the rules compare."""
    return round_value(x, PRECISION["current_exact_mA"])


def percent(x: Any) -> int | None:
    """A percentage as shown and stored (whole per cent)."""
    return round_value(x, PRECISION["percent"])  # type: ignore[return-value]


def position_mm(x: Any) -> float | None:
    """A mapping position as shown and stored (0.1 mm)."""
    return round_value(x, PRECISION["position_mm"])


def _fixed(x: Any, digits: int) -> str | None:
    v = round_value(x, digits)
    if v is None:
        return None
    return str(v) if digits <= 0 else f"{v:.{digits}f}"


def amp_text(x: Any, unit: bool = True, none: str = NONE_TEXT) -> str:
    """``706 µV`` (``706`` without the unit)."""
    s = _fixed(x, PRECISION["amplitude_uV"])
    return none if s is None else (f"{s} {UV}" if unit else s)


def lat_text(x: Any, unit: bool = True, none: str = NONE_TEXT) -> str:
    """``3.76 ms``."""
    s = _fixed(x, PRECISION["latency_ms"])
    return none if s is None else (f"{s} ms" if unit else s)


def ma_text(x: Any, unit: bool = True, none: str = NONE_TEXT) -> str:
    """``1.00 mA``."""
    s = _fixed(x, PRECISION["current_mA"])
    return none if s is None else (f"{s} mA" if unit else s)


def exact_ma_text(x: Any) -> str:
    """A current at the stimulator's resolution, for machine-read text (``0.984``)."""
    s = _fixed(x, PRECISION["current_exact_mA"])
    return "" if s is None else s


def pct_text(x: Any, none: str = NONE_TEXT) -> str:
    """``96 %``."""
    s = _fixed(x, PRECISION["percent"])
    return none if s is None else f"{s} %"


def mm_text(x: Any, none: str = NONE_TEXT) -> str:
    """``16 mm`` or ``16.5 mm``."""
    v = position_mm(x)
    if v is None:
        return none
    return f"{v:g} mm"


def current_text(set_mA: Any, delivered_mA: Any, none: str = NONE_TEXT) -> str:
    """The set current with the delivered one beside it: ``1.00 mA (delivered 0.98 mA)``,
    ``1.00 mA (delivered: not measured)``."""
    if _finite(set_mA) is None:
        return none
    d = _finite(delivered_mA)
    return f"{ma_text(set_mA)} (delivered {ma_text(d)})" if d is not None else \
        f"{ma_text(set_mA)} (delivered: not measured)"


def delivered_low(set_mA: Any, delivered_mA: Any, tolerance_pct: float = 5.0) -> bool:
    """Whether the measured delivered current is below the set current's tolerance."""
    s, d = _finite(set_mA), _finite(delivered_mA)
    return s is not None and d is not None and s > 0 and d < s * (1.0 - tolerance_pct / 100.0)


def clock(t_s: Any, none: str = NONE_TEXT) -> str:
    """Case time as ``h:mm:ss`` (whole seconds, rounded)."""
    v = round_value(t_s, 0)
    if v is None:
        return none
    t = max(0, int(v))
    return f"{t // 3600}:{(t % 3600) // 60:02d}:{t % 60:02d}"


def duration(s: Any, none: str = NONE_TEXT) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``."""
    v = round_value(s, 0)
    if v is None:
        return none
    x = max(0, int(v))
    h, rem = divmod(x, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {sec:02d} s"
    return f"{sec} s"


# ---------------------------------------------------------------------------- words

SIDE_WORDS = {"L": "left", "R": "right"}
SITE_WORDS = {"VAGUS": "vagus", "RLN": "RLN", "EBSLN": "EBSLN", "UNTAGGED": "untagged structure"}
SOURCE_WORDS = {"PROBE": "probe", "APS": "continuous vagal electrode"}
OUTPUT_WORDS = {"probe": "probe", "aps": "continuous vagal electrode", "PROBE": "probe",
                "APS": "continuous vagal electrode"}
STEP_WORDS = {
    "L1": "laryngoscopy before surgery",
    "V1": "vagus before dissection",
    "S1": "EBSLN before the upper pole",
    "R1": "RLN at identification",
    "R2": "RLN after dissection",
    "R2P": "RLN, most proximal point",
    "R2D": "RLN, distal point",
    "S2": "EBSLN after the upper pole",
    "V2": "vagus after resection",
    "L2": "laryngoscopy after surgery",
}
EVENT_WORDS = {
    "loss_of_signal": "Loss of signal",
    "combined_event": "Combined event (amplitude down, latency up)",
    "amplitude_decrease": "Amplitude decrease, latency stable",
    "signal_recovered": "Signal recovered",
    "no_current": "No stimulus current",
    "nonrecurrent_nerve_suspected": "Non-recurrent nerve suspected",
    "poor_baseline": "Poor baseline",
    "baseline_set": "Baseline set",
    "neuromuscular_blockade_suspected": "Neuromuscular blockade suspected",
    "nmb_suspected": "Neuromuscular blockade suspected",
    "loss_of_signal_continued": "Loss of signal again (same episode)",
}
PRIORITY_WORDS = {"high": "high", "medium": "medium", "low": "low", "info": "information"}
PRIORITY_ORDER = ("high", "medium", "low", "info")
CHECK_WORDS = {
    "current_delivered": "Current delivered as set",
    "leads_ok": "Probe, return and ground leads connected",
    "field_dry": "Field dry (no fluid shunting)",
    "laryngeal_twitch": "Laryngeal twitch palpable",
    "contralateral_vagus": "Contralateral vagus responds",
    "tube_position_ok": "Tube depth and rotation correct",
    "secretions_ok": "Electrodes free of secretions",
    "nmb_ok": "Train-of-four normal (no relaxant effect)",
    "nonrecurrent": "Non-recurrent nerve suspected",
    "verdict": "Surgeon's verdict",
}
CONCLUSION_WORDS = {
    "open": "troubleshooting in progress",
    "stimulation_problem": "stimulation problem (not a true loss)",
    "neuromuscular_blockade": "neuromuscular blockade (not a true loss)",
    "system_fault_likely": "system fault likely",
    "recording_problem_likely": "recording problem likely (tube or electrodes)",
    "true_los": "true loss of signal",
    "not_true_los": "not a true loss of signal",
}
# the API's findings and the record's older words for the same thing
FINDING_WORDS = {
    "normal": "normal mobility",
    "paresis": "paresis (reduced mobility)",
    "palsy": "palsy (immobile)",
    "not_examined": "not examined",
    "reduced": "paresis (reduced mobility)",
    "immobile": "palsy (immobile)",
    "not_assessed": "not examined",
}
FINDING_IMPAIRED = ("paresis", "palsy", "reduced", "immobile")
DECISION_WORDS = {
    "postpone_second_side": "postpone the second side",
    "proceed_second_side": "proceed to the second side",
}
TRANSITION_WORDS = {
    "raised": "raised", "raise": "raised", "re_raised": "raised again", "acknowledged": "acknowledged",
    "ack": "acknowledged", "cleared": "cleared", "condition_ended": "condition ended", "reset": "reset",
    "escalated": "escalated", "audio_paused": "audio paused", "audio_resumed": "audio resumed",
    "audio_off": "audio switched off", "audio_on": "audio switched on", "removed": "removed",
}
INVALID_WORDS = {
    "cautery": "electrocautery", "saturated": "signal out of range", "no_current": "current not delivered",
    "artifact": "artifact", "no_channel": "no recording channel",
    "other_stimulus": "a response to the other stimulator may be in its window",
}
ANSWER_WORDS = {"yes": "yes", "no": "no", "true_los": "true loss of signal",
                "not_true_los": "not a true loss of signal"}
LOS_TYPE_WORDS = {1: "type 1 (segmental)", 2: "type 2 (global)"}


def words(table: Mapping[Any, str], key: Any, none: str = NONE_TEXT) -> str:
    """``table[key]``, else the key itself with underscores as spaces (never a raw key)."""
    if key is None or key == "":
        return none
    if key in table:
        return table[key]
    return str(key).replace("_", " ").replace(".", " ").strip().lower() or none


def side_word(side: Any) -> str:
    """``left`` / ``right``."""
    return words(SIDE_WORDS, side)


def site_side(site: Any, side: Any) -> str:
    """``left RLN``, ``right vagus``."""
    parts = [SIDE_WORDS.get(str(side), "") if side else "", words(SITE_WORDS, site, "") if site else ""]
    return " ".join(p for p in parts if p) or NONE_TEXT


def event_title(kind: Any) -> str:
    """The title of a rule event kind (``Loss of signal``)."""
    return EVENT_WORDS.get(kind) or words({}, kind).capitalize()


def finding_text(finding: Any, none: str = "not recorded") -> str:
    """A laryngoscopy finding in words (the API's and the record's words alike)."""
    return words(FINDING_WORDS, finding, none)


def alarm_name(alarm_id: Any) -> str:
    """``loss_of_signal:RLN-L`` -> ``Loss of signal, left RLN``; technical alarms in words."""
    if not alarm_id or alarm_id == "audio":
        return "alarm audio"
    kind, _, key = str(alarm_id).partition(":")
    title = event_title(kind)
    if not key:
        return title
    site, _, side = key.rpartition("-")
    if side in SIDE_WORDS and site:
        return f"{title}, {site_side(site, side)}"
    return f"{title} ({words({}, key)})"


def _on_off(v: Any) -> str:
    return "on" if v in (True, "true", "yes", "on", 1) else "off"


def _output(d: Mapping[str, Any]) -> str:
    return words(OUTPUT_WORDS, d.get("output")).capitalize()


def _stim_set(d: Mapping[str, Any]) -> str:
    parts = []
    if d.get("current_mA") is not None:
        parts.append(ma_text(d["current_mA"]))
    if d.get("rate_hz") is not None:
        parts.append(f"{round_value(d['rate_hz'], 1):g} Hz")
    if d.get("pulse_width_us") is not None:
        parts.append(f"{int(d['pulse_width_us'])} µs")
    confirmed = " (confirmed above the limit)" if d.get("confirm") else ""
    return f"{_output(d)} set to {', '.join(parts) or 'unchanged'}{confirmed}"


def _probe_site(d: Mapping[str, Any]) -> str:
    step = d.get("step")
    tail = f" (step {step}: {STEP_WORDS.get(step, step)})" if step and step != "none" else ""
    return f"Probe placed on the {site_side(d.get('site'), d.get('side'))}{tail}"


def _mapping(d: Mapping[str, Any]) -> str:
    resp = "response" if d.get("response") else "no response"
    label = f" ({d['label']})" if d.get("label") else ""
    amp = f", {amp_text(d['amplitude_uV'])}" if d.get("amplitude_uV") is not None else ""
    return f"Mapping {side_word(d.get('side'))} at {mm_text(d.get('position_mm'))}{label}: {resp}{amp}"


def _case_start(d: Mapping[str, Any]) -> str:
    sides = " then ".join(side_word(s) for s in d.get("planned_sides") or []) or "no side planned"
    return f"Case opened ({sides})"


_ACTIONS: dict[str, Any] = {
    "probe.site": _probe_site,
    "stim.output": lambda d: f"{_output(d)} stimulation {_on_off(d.get('on'))}",
    "stim.set": _stim_set,
    "stim.single": lambda d: "Single probe pulse",
    "aps.side": lambda d: f"Continuous vagal electrode on the {side_word(d.get('side'))} vagus",
    "step.tag": lambda d: (f"Step {d.get('step')} {side_word(d.get('side'))} recorded from the "
                           + ("next response" if d.get("which") == "next" else "last response")),
    "step.clear": lambda d: f"Step {d.get('step')} {side_word(d.get('side'))} cleared",
    "baseline.capture": lambda d: f"Probe baseline of the {site_side(d.get('site'), d.get('side'))} captured",
    "baseline.rebaseline": lambda d: f"New continuous baseline requested, {side_word(d.get('side'))} side",
    "mapping.result": _mapping,
    "mapping.clear": lambda d: f"Mapping points of the {side_word(d.get('side'))} side cleared",
    "case.start": _case_start,
    "case.update": lambda d: "Case data changed: " + (", ".join(words(CASE_FIELD_WORDS, k) for k in d) or "nothing"),
    "case.close": lambda d: "Case closed",
    "tube.check": lambda d: "Tube check started",
    "tube.override": lambda d: f"Failed tube check accepted: {d.get('reason') or 'no reason given'}",
    "settings.set": lambda d: "Settings changed",
    "export.usb": lambda d: "Case exported to a USB stick",
    "report.get": lambda d: "Report made",
    "sim.control": lambda d: f"Virtual board: {words({}, d.get('command'))}",
    "snapshot": lambda d: "Mark",
}


def action_text(action: str, detail: Any) -> str:
    """An operator action in words with its arguments (``Probe placed on the left RLN``)."""
    d: Mapping[str, Any] = detail if isinstance(detail, Mapping) else {}
    fn = _ACTIONS.get(str(action))
    return fn(d) if fn is not None else words({}, action).capitalize()


CASE_FIELD_WORDS: dict[str, str] = {
    "surgeon": "surgeon", "procedure": "procedure", "planned_sides": "planned sides", "tube_type": "tube type",
    "tube_size_mm": "tube size", "tube_depth_cm": "tube depth", "relaxant": "relaxant",
    "relaxant_time": "relaxant time", "tof_count": "train-of-four count", "tof_ratio_pct": "train-of-four ratio",
    "patient_id": "patient", "profile": "surgeon profile",
}

# clinical settings in words, with their unit (the report shows only these; wiring,
# devices and link timing are service matters)
SETTING_WORDS: dict[str, str] = {
    "stim.probe_current_mA": "Probe current, RLN",
    "stim.vagus_current_mA": "Probe current, vagus (V1/V2)",
    "stim.mapping_current_mA": "Mapping current",
    "stim.aps_current_mA": "Continuous vagal current",
    "stim.confirm_above_mA": "Currents needing confirmation above",
    "stim.pulse_width_us": "Pulse width",
    "stim.probe_rate_hz": "Probe rate",
    "stim.aps_rate_hz": "Continuous vagal rate",
    "stim.delivered_tolerance_pct": "Delivered-current tolerance",
    "acq.sample_rate_hz": "EMG sampling rate",
    "analysis.bandpass_low_hz": "Band-pass, low corner",
    "analysis.bandpass_high_hz": "Band-pass, high corner",
    "analysis.artifact_blank_ms": "Stimulus-artifact blank",
    "analysis.window_ms": "Analysis window",
    "analysis.event_threshold_uV": "Event threshold (response present)",
    "analysis.auto_threshold": "Automatic threshold raise in noise",
    "analysis.auto_threshold_max_uV": "Automatic threshold ceiling",
    "analysis.response_end_vagus_ms": "Response window, vagus",
    "analysis.response_end_rln_ms": "Response window, RLN",
    "analysis.response_end_ebsln_ms": "Response window, EBSLN",
    "rules.los_min_current_mA": "Loss of signal: minimum set current",
    "rules.los_consecutive": "Loss of signal: stimuli without response",
    "rules.los_reentry_s": "Loss of signal: re-entry joins the episode within",
    "rules.aps_baseline_count": "Continuous baseline: stimuli averaged",
    "rules.combined_amplitude_pct": "Combined event: amplitude below",
    "rules.combined_latency_pct": "Combined event: latency above",
    "rules.combined_consecutive": "Combined event: stimuli",
    "rules.amplitude_decrease_pct": "Amplitude decrease: amplitude below",
    "rules.amplitude_decrease_consecutive": "Amplitude decrease: stimuli",
    "rules.recovery_pct": "Recovery: amplitude back to",
    "rules.recovery_consecutive": "Recovery: stimuli",
    "rules.poor_baseline_uV": "Poor baseline below",
    "rules.nonrecurrent_latency_ms": "Non-recurrent nerve: right vagal latency below",
    "rules.r2_reduction_map_pct": "R2 proximal/distal reduction asking for mapping",
    "rules.r2_reduction_palsy_pct": "R2 proximal/distal reduction predicting palsy",
    "tube.max_impedance_kohm": "Tube check: electrode impedance limit",
    "tube.max_imbalance_kohm": "Tube check: imbalance limit within a pair",
    "alarms.escalation_s": "Unacknowledged alarm escalates after",
    "alarms.audio_pause_s": "Alarm audio pause",
}
UNIT_WORDS = {"uV": UV, "us": "µs", "kOhm": "kOhm", "% of baseline": "% of baseline"}


def setting_name(key: str) -> str:
    """A setting in words (``Event threshold (response present)``)."""
    return SETTING_WORDS.get(key) or words({}, key.split(".", 1)[-1]).capitalize()


def setting_value(value: Any, unit: str = "") -> str:
    """A setting's value with its unit (``100 µV``, ``on``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    u = UNIT_WORDS.get(unit, unit)
    if isinstance(value, (int, float)):
        text = f"{value:g}"
    else:
        text = str(value)
    return f"{text} {u}".strip()

