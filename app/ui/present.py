"""How the UI presents things (pure: no Kivy, no I/O): sizes, colours, words, numbers.

Owns:
- the IEC 60601-1-8 visual alarm indicator per priority: colour, flashing frequency and
  duty cycle, and, because no information may be carried by colour alone, the priority
  word and symbol (``!!!`` high, ``!!`` medium, ``!`` low) shown with every alarm;
- physical sizes: touch targets of at least 9 mm and the large numbers (readable from
  2 m) converted to pixels from the display's dpi;
- the formatting of amplitudes, latencies, currents, durations and countdowns, the
  tube check's breathing variation in words, and the names of sides, sites, steps and
  troubleshooting checks.

May import: the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

# ---------------------------------------------------------------- physical sizes

MM_PER_INCH = 25.4
TOUCH_TARGET_MM = 9.0  # minimum side of anything touchable
# Cap height of the large response numbers. Normal visual acuity resolves about 3 mm
# letters at 2 m; 8 mm (about 3x) reads comfortably from the surgeon's place.
BIG_NUMBER_CAP_MM = 8.0
CAP_HEIGHT_EM = 0.71  # Roboto's cap height as a fraction of the font size

# Known touchscreens by resolution: (diagonal inches, name). The official 7" Raspberry
# Pi display is 800x480 (about 133 dpi); common 10.1" panels are 1280x800 (about 149 dpi).
KNOWN_SCREENS = {(800, 480): (7.0, '7" 800x480'), (1024, 600): (7.0, '7" 1024x600'),
                 (1280, 800): (10.1, '10.1" 1280x800'), (1920, 1080): (15.6, '15.6" 1920x1080')}


def display_dpi(width_px: int, height_px: int, diagonal_in: float | None = None,
                reported_dpi: float | None = None) -> float:
    """Pixels per inch of the touchscreen: from its diagonal when known (given, or a known
    panel of this resolution), else what the system reports, else 96."""
    diag = diagonal_in or KNOWN_SCREENS.get((int(width_px), int(height_px)), (None, ""))[0]
    if diag:
        return math.hypot(width_px, height_px) / float(diag)
    if reported_dpi and reported_dpi > 0:
        return float(reported_dpi)
    return 96.0


def mm_to_px(mm: float, dpi: float) -> float:
    return mm * dpi / MM_PER_INCH


def touch_target_px(dpi: float, mm: float = TOUCH_TARGET_MM) -> int:
    """Smallest touch target in whole pixels (never under ``mm``)."""
    return int(math.ceil(mm_to_px(mm, dpi)))


def font_px_for_cap(cap_mm: float, dpi: float) -> int:
    return int(math.ceil(mm_to_px(cap_mm, dpi) / CAP_HEIGHT_EM))


# ---------------------------------------------------------------- alarm presentation

Rgba = tuple[float, float, float, float]


@dataclass(frozen=True)
class PriorityStyle:
    priority: str
    word: str  # shown with every alarm: colour is never the only carrier
    symbol: str  # IEC 60601-1-8 convention
    colour: Rgba  # indicator colour
    dim: Rgba  # the "off" phase of a flashing indicator (text stays readable)
    text: Rgba  # text colour on ``colour``
    dim_text: Rgba  # text colour on ``dim``
    flash_hz: float  # 0: steady
    duty: float  # fraction of the period the indicator is "on"


def _rgb(hexcode: str, a: float = 1.0) -> Rgba:
    h = hexcode.lstrip("#")
    return (int(h[0:2], 16) / 255.0, int(h[2:4], 16) / 255.0, int(h[4:6], 16) / 255.0, a)


WHITE = _rgb("#ffffff")
BLACK = _rgb("#000000")

PRIORITY_STYLES: dict[str, PriorityStyle] = {
    # IEC 60601-1-8: high = red, flashing 1.4-2.8 Hz, duty 20-60 %
    "high": PriorityStyle("high", "HIGH", "!!!", _rgb("#d7141a"), _rgb("#4a0507"), WHITE, WHITE, 2.0, 0.5),
    # medium = yellow, flashing 0.4-0.8 Hz, duty 20-60 %
    "medium": PriorityStyle("medium", "MEDIUM", "!!", _rgb("#ffd200"), _rgb("#3d3300"), BLACK, _rgb("#ffd200"), 0.6, 0.5),
    # low = cyan (or yellow), steady
    "low": PriorityStyle("low", "LOW", "!", _rgb("#00c4de"), _rgb("#00c4de"), BLACK, BLACK, 0.0, 1.0),
}
# The UI's own indication that the engine does not answer: shown like a high-priority
# technical alarm (the UI cannot know whether the patient is monitored).
ENGINE_PRIORITY = "high"


def style(priority: str | None) -> PriorityStyle | None:
    return PRIORITY_STYLES.get(str(priority or "").lower())


def flash_on(priority: str | None, t: float) -> bool:
    """Whether a priority's visual indicator is in its "on" phase at time ``t`` (s)."""
    st = style(priority)
    if st is None:
        return False
    if st.flash_hz <= 0:
        return True
    phase = (t * st.flash_hz) % 1.0
    return phase < st.duty


def priority_label(priority: str | None) -> str:
    st = style(priority)
    return f"{st.symbol} {st.word}" if st else ""


def alarm_headline(alarm: Mapping[str, Any], with_priority: bool = True) -> str:
    """'!!! HIGH  LOSS OF SIGNAL  left vagus' style line (the priority may be shown next to
    it instead, as the banner does: it is never left out)."""
    pr = priority_label(alarm.get("priority")) if with_priority else ""
    tech = "TECHNICAL  " if alarm.get("technical") else ""
    title = str(alarm.get("title") or alarm.get("name") or alarm.get("kind") or "ALARM").upper()
    where = site_side_name(alarm.get("site"), alarm.get("side"))
    return "  ".join(x for x in (pr, tech.strip(), title, where) if x)


def alarm_state_words(alarm: Mapping[str, Any]) -> str:
    parts = []
    if alarm.get("acknowledged"):
        who = alarm.get("acknowledged_by")
        parts.append("acknowledged" + (f" by {who}" if who else ""))
    if alarm.get("latched") and not alarm.get("condition_active"):
        parts.append("condition ended - reset to clear")
    elif alarm.get("condition_active", True):
        parts.append("condition active")
    if alarm.get("escalated"):
        parts.append(f"escalated from {alarm.get('original_priority')}")
    return "; ".join(parts)


# ---------------------------------------------------------------- names

SIDE_NAMES = {"L": "LEFT", "R": "RIGHT"}
SITE_NAMES = {"VAGUS": "vagus", "RLN": "RLN", "EBSLN": "EBSLN", "UNTAGGED": "untagged"}
STEPS = ("V1", "S1", "R1", "R2", "S2", "V2")
STEP_SITE = {"V": "VAGUS", "S": "EBSLN", "R": "RLN"}
FINDINGS = (("normal", "Normal"), ("paresis", "Paresis"), ("palsy", "Palsy"), ("not_examined", "Not examined"))
# the case record's words for vocal-fold mobility (app.record) shown as the API's words
FINDING_WORDS = {"normal": "normal", "paresis": "paresis", "palsy": "palsy", "not_examined": "not examined",
                 "reduced": "paresis", "immobile": "palsy", "not_assessed": "not examined"}

CHECK_LABELS = {
    "current_delivered": "Current delivered as set",
    "leads_ok": "Probe, return and ground leads connected",
    "field_dry": "Field dry (no fluid shunting)",
    "laryngeal_twitch": "Laryngeal twitch palpable",
    "contralateral_vagus": "Contralateral vagus responds",
    "tube_position_ok": "Tube depth and rotation correct",
    "secretions_ok": "Electrodes free of secretions",
    "nmb_ok": "Train-of-four normal (no relaxant)",
    "nonrecurrent": "Non-recurrent nerve suspected",
}
CONCLUSIONS = {
    "open": "troubleshooting in progress",
    "stimulation_problem": "stimulation problem (not a true loss)",
    "neuromuscular_blockade": "neuromuscular blockade (not a true loss)",
    "system_fault_likely": "system fault likely",
    "recording_problem_likely": "recording problem likely (tube / electrodes)",
    "true_los": "TRUE LOSS OF SIGNAL",
    "not_true_los": "not a true loss of signal",
}


def side_name(side: str | None) -> str:
    return SIDE_NAMES.get(str(side), "-")


def site_side_name(site: str | None, side: str | None) -> str:
    if not site and not side:
        return ""
    s = SITE_NAMES.get(str(site), str(site or "")) if site else ""
    return f"{side_name(side).lower()} {s}".strip() if side else s


def step_site(step: str) -> str:
    return STEP_SITE.get(step[:1], "UNTAGGED")


# ---------------------------------------------------------------- numbers


def _finite(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def fmt_amp(uV: Any) -> str:
    x = _finite(uV)
    return "---" if x is None else f"{x:.0f}"


def fmt_lat(ms: Any) -> str:
    x = _finite(ms)
    return "---" if x is None else f"{x:.2f}"


def fmt_ma(mA: Any, digits: int = 2) -> str:
    x = _finite(mA)
    return "---" if x is None else f"{x:.{digits}f}"


def fmt_pct(p: Any) -> str:
    x = _finite(p)
    return "---" if x is None else f"{x:.0f} %"


def fmt_countdown(s: Any) -> str:
    x = _finite(s)
    if x is None or x <= 0:
        return "0:00"
    x = int(math.ceil(x))
    return f"{x // 60}:{x % 60:02d}"


def fmt_duration(s: Any) -> str:
    x = _finite(s)
    if x is None:
        return "-"
    x = max(0, int(x))
    h, rem = divmod(x, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {sec:02d} s"
    return f"{sec} s"


def fmt_clock(s: Any) -> str:
    """Case time as h:mm:ss."""
    x = _finite(s)
    if x is None:
        return "--:--"
    x = max(0, int(x))
    return f"{x // 3600}:{(x % 3600) // 60:02d}:{x % 60:02d}"


def delivered_words(set_mA: Any, delivered_mA: Any, tolerance_pct: float = 5.0) -> str:
    """'' when delivered current is as set; a warning phrase otherwise."""
    s, d = _finite(set_mA), _finite(delivered_mA)
    if s is None or d is None or s <= 0:
        return ""
    if d < s * (1 - tolerance_pct / 100.0):
        return "LOW: not delivered as set"
    return ""


def response_words(m: Mapping[str, Any] | None) -> str:
    """What the last stimulus of a side showed, in words."""
    if not m:
        return "no stimulus yet"
    if not m.get("valid", True):
        reason = str(m.get("invalid_reason") or "invalid").replace("_", " ")
        return f"not measured: {reason}"
    if m.get("response"):
        # only a lowered threshold makes it one: never a plain "RESPONSE" (under a loss of signal least of all)
        return "RESPONSE (lowered threshold)" if m.get("lowered_threshold") else "RESPONSE"
    return "NO RESPONSE, current delivered" if _finite(m.get("delivered_mA")) else "NO RESPONSE"


# ---------------------------------------------------------------- palette (high contrast, dark)

PALETTE: dict[str, Rgba] = {
    "bg": _rgb("#0b0f14"),
    "panel": _rgb("#161c24"),
    "panel2": _rgb("#222b36"),
    "line": _rgb("#3a4654"),
    "text": _rgb("#f4f7fa"),
    "muted": _rgb("#aab4bf"),
    "button": _rgb("#34404e"),
    "button_down": _rgb("#56677a"),
    "primary": _rgb("#1d63c9"),
    "danger": _rgb("#a51d22"),
    "ok": _rgb("#2f9e44"),
    "fail": _rgb("#d7141a"),
    "warn": _rgb("#ffd200"),
    "selected": _rgb("#1d63c9"),
    "side_L": _rgb("#5cb3ff"),
    "side_R": _rgb("#ffa24a"),
    "grid": _rgb("#2a3440"),
    "threshold": _rgb("#8d99a6"),
    "trend_amp": _rgb("#7ee081"),
    "trend_lat": _rgb("#e7a6ff"),
}


# ---------------------------------------------------------------- report preview


def breathing_side_words(d: Any) -> str:
    """One side of the tube check's breathing variation (``state.tube.breathing_variation``)."""
    if d is None:
        return "not measured"
    if isinstance(d, bool):
        return "PRESENT" if d else "ABSENT"
    if not isinstance(d, Mapping):
        return str(d)
    if d.get("status") == "measuring":
        rem = _finite(d.get("remaining_s"))
        return "measuring ..." + (f" {math.ceil(rem):.0f} s left" if rem is not None else "")
    present = d.get("present")
    if present is None:
        return "NOT MEASURABLE" + (f" ({d['reason']})" if d.get("reason") else "")
    values = []
    if _finite(d.get("wander_uV")) is not None:
        values.append(f"wander {d['wander_uV']:.0f} µV")
    if _finite(d.get("modulation_pct")) is not None:
        values.append(f"modulation {d['modulation_pct']:.0f} %")
    return ("PRESENT" if present else "ABSENT") + (f": {', '.join(values)}" if values else "")


def breathing_words(bv: Any) -> list[str]:
    """The tube check's breathing variation (the respiratory variation of the baseline EMG,
    a sign of vocal-fold contact) in lines for the tube screen."""
    if bv is None:
        return ["Breathing variation: not measured"]
    if not isinstance(bv, Mapping):
        return [f"Breathing variation: {breathing_side_words(bv)}"]
    lines = ["Breathing variation (vocal-fold contact):"]
    for side in ("L", "R"):
        if side in bv:
            lines.append(f"  {side_name(side).capitalize()}: {breathing_side_words(bv[side])}")
    rates = [d.get("rate_per_min") for d in bv.values() if isinstance(d, Mapping) and d.get("present") is not None]
    rate = next((r for r in rates if _finite(r) is not None), None)
    if rate is not None:
        lines.append(f"  breathing {rate:.0f} per minute")
    if any(isinstance(d, Mapping) and d.get("present") is False for d in bv.values()):
        lines.append("  Absent: check the tube position (depth, rotation)")
    return lines


def document_summary(doc: Mapping[str, Any]) -> str:
    """The case documentation (``report.get``'s ``document``) as plain text lines for the
    on-screen preview: case, steps per side, tube check, adverse events, staging, notes."""
    lines: list[str] = []
    case = doc.get("case") or {}
    lines.append(f"Case {case.get('case_id', '?')}   patient {case.get('patient_id', '?')}   {case.get('date', '')}")
    proc = case.get("procedure") or "procedure not given"
    sides = ", ".join(side_name(s) for s in case.get("planned_sides") or []) or "-"
    lines.append(f"{proc}; planned sides: {sides}; surgeon: {case.get('surgeon') or '-'}")
    if case.get("duration_s") is not None:
        lines.append(f"Duration {fmt_duration(case.get('duration_s'))}"
                     + (f"; closing remark: {case.get('close_reason')}" if case.get("close_reason") else ""))
    if (case.get("board") or {}).get("simulated"):
        lines.append("SIMULATED BOARD: demonstration record, not patient data.")
    lines.append("")
    for side, sd in (doc.get("sides") or {}).items():
        steps = (sd or {}).get("steps") or {}
        vals = []
        for k in ("L1", "V1", "S1", "R1", "R2", "R2P", "R2D", "S2", "V2", "L2"):
            v = steps.get(k)
            if not v:
                continue
            if "finding" in v:
                f = str(v["finding"])
                vals.append(f"{k} {FINDING_WORDS.get(f, f.replace('_', ' '))}")
            else:
                vals.append(f"{k} {fmt_amp(v.get('amplitude_uV'))} µV / {fmt_lat(v.get('latency_ms'))} ms")
        lines.append(f"{side_name(side)}: " + ("; ".join(vals) if vals else "no steps recorded"))
        extra = []
        if sd.get("v2_of_v1_pct") is not None:
            extra.append(f"V2 = {sd['v2_of_v1_pct']:.0f} % of V1")
        if sd.get("r2_reduction_pct") is not None:
            extra.append(f"R2 reduction {sd['r2_reduction_pct']:.0f} %")
        if extra:
            lines.append("   " + "; ".join(extra))
    tubes = doc.get("tube_check") or []
    if tubes:
        t = tubes[-1]
        lines.append("")
        lines.append(f"Tube check: {'PASSED' if t.get('passed') else 'FAILED'} ({t.get('message', '')})"
                     + (f"; override: {t['override']}" if t.get("override") else ""))
        bv = t.get("breathing_variation")
        if isinstance(bv, Mapping):
            lines.append("   breathing variation: " + "; ".join(
                f"{side_name(k).lower()} {breathing_side_words(v)}" for k, v in bv.items()))
    events = doc.get("adverse_events") or []
    lines.append("")
    lines.append(f"Adverse events: {len(events)}")
    for ev in events:
        lines.append(f" {fmt_clock(ev.get('t_s'))} {priority_label(ev.get('priority'))} {ev.get('title') or ev.get('kind')}"
                     f" {site_side_name(ev.get('site'), ev.get('side'))}")
        lt = ev.get("los_type")
        if isinstance(lt, dict) and lt.get("type"):
            lines.append(f"   LOS type {lt['type']}")
        for a in ev.get("troubleshooting") or []:
            lines.append(f"   {CHECK_LABELS.get(a.get('check'), a.get('check'))}: {a.get('answer')}")
    for st in doc.get("staging") or []:
        lines.append("")
        lines.append(f"Staging: {st.get('recommendation')}")
        if st.get("decision"):
            lines.append(f"   decision: {str(st['decision']).replace('_', ' ')} ({st.get('reason') or ''})")
    notes = doc.get("notes") or []
    if notes:
        lines.append("")
        lines.append("Notes:")
        for n in notes:
            lines.append(f" {fmt_clock(n.get('t_s'))} {n.get('text', n)}")
    j = doc.get("journal") or {}
    if j:
        lines.append("")
        lines.append(f"Journal: {j.get('entries')} entries, hash chain "
                     + ("verified" if j.get("verified") else f"NOT verified: {j.get('verify_problem')}"))
    return "\n".join(lines)
