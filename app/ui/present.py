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

May import: the standard library, ``app.format`` (every number and clinical word is
rounded and written there, as on the report) and ``app.model`` (sites, sides, steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app import format as fmt
from app.model import SIDES, Site, Step

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
    """Millimetres to pixels at ``dpi``."""
    return mm * dpi / MM_PER_INCH


def touch_target_px(dpi: float, mm: float = TOUCH_TARGET_MM) -> int:
    """Smallest touch target in whole pixels (never under ``mm``)."""
    return int(math.ceil(mm_to_px(mm, dpi)))


def font_px_for_cap(cap_mm: float, dpi: float) -> int:
    """The font size (px) whose capital letters are ``cap_mm`` high."""
    return int(math.ceil(mm_to_px(cap_mm, dpi) / CAP_HEIGHT_EM))


# ---------------------------------------------------------------- alarm presentation

Rgba = tuple[float, float, float, float]


@dataclass(frozen=True)
class PriorityStyle:
    """How an alarm priority looks (IEC 60601-1-8): colour, flashing, word and symbol."""

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
    "medium": PriorityStyle("medium", "MEDIUM", "!!", _rgb("#ffd200"), _rgb("#3d3300"), BLACK, _rgb("#ffd200"),
                            0.6, 0.5),
    # low = cyan (or yellow), steady
    "low": PriorityStyle("low", "LOW", "!", _rgb("#00c4de"), _rgb("#00c4de"), BLACK, BLACK, 0.0, 1.0),
}
# The UI's own indication that the engine does not answer: shown like a high-priority
# technical alarm (the UI cannot know whether the patient is monitored).
ENGINE_PRIORITY = "high"


def style(priority: str | None) -> PriorityStyle | None:
    """The visual style of an alarm priority (None for none)."""
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
    """'!!! HIGH' for a priority (the symbol and the word)."""
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


PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


def display_order(active: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Alarms as the banner and the list show them: highest priority first; within a
    priority the unacknowledged first, and the newest first (a new loss of signal is
    never hidden behind an older alarm of the same priority)."""
    def key(a: Mapping[str, Any]) -> tuple[int, int, float]:
        t = _finite(a.get("raised_t_s"))
        return (PRIORITY_RANK.get(str(a.get("priority")), 9), 1 if a.get("acknowledged") else 0,
                -(t if t is not None else -1e18))
    return sorted(active, key=key)


def alarm_state_words(alarm: Mapping[str, Any]) -> str:
    """An alarm's state in words (acknowledged, ended, escalated)."""
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

# the names come from the one vocabulary (app.model) and the one wording (app.format)
SIDE_NAMES = {side: fmt.side_word(side).upper() for side in SIDES}
SITE_NAMES = {**fmt.SITE_WORDS, Site.UNTAGGED.value: "untagged"}  # short on the monitor's buttons
# the steps with a button on the monitor (R2 proximal / distal are recorded from the mapping)
STEPS = tuple(s.value for s in Step if s not in (Step.R2P, Step.R2D))
STEP_SITE = {"V": Site.VAGUS.value, "S": Site.EBSLN.value, "R": Site.RLN.value}
FINDINGS = (("normal", "Normal"), ("paresis", "Paresis"), ("palsy", "Palsy"), ("not_examined", "Not examined"))
# the case record's words for vocal-fold mobility (app.record) shown as the API's words
FINDING_WORDS = {"normal": "normal", "paresis": "paresis", "palsy": "palsy", "not_examined": "not examined",
                 "reduced": "paresis", "immobile": "palsy", "not_assessed": "not examined"}

CHECK_LABELS = fmt.CHECK_WORDS
CONCLUSIONS = {**fmt.CONCLUSION_WORDS, "true_los": "TRUE LOSS OF SIGNAL"}  # the one said loudly


def side_name(side: str | None) -> str:
    """'LEFT' or 'RIGHT' ('-' for anything else)."""
    return SIDE_NAMES.get(str(side), "-")


def site_side_name(site: str | None, side: str | None) -> str:
    """'left vagus' from a site and a side."""
    if not site and not side:
        return ""
    s = SITE_NAMES.get(str(site), str(site or "")) if site else ""
    return f"{side_name(side).lower()} {s}".strip() if side else s


def step_site(step: str) -> str:
    """The site an INMSG step stimulates (V: vagus, R: RLN, S: EBSLN)."""
    return STEP_SITE.get(step[:1], "UNTAGGED")


# ---------------------------------------------------------------- numbers


def _finite(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


# Numbers are rounded and written by app.format, as on the report; the screen's own are
# "unknown" ("---"), the set current's one decimal on the buttons, and taking only real
# numbers from the stream (a number sent as text is nonsense, shown as unknown).
NONE = "---"


def fmt_amp(uV: Any) -> str:
    """An amplitude in whole µV, without the unit ('---' when unknown)."""
    return fmt.amp_text(_finite(uV), unit=False, none=NONE)


def fmt_lat(ms: Any) -> str:
    """A latency in ms with two decimals, without the unit ('---' when unknown)."""
    return fmt.lat_text(_finite(ms), unit=False, none=NONE)


def fmt_ma(mA: Any, digits: int = 2) -> str:
    """A current in mA, without the unit ('---' when unknown); ``digits`` 1 for a set current."""
    if digits == fmt.PRECISION["current_mA"]:
        return fmt.ma_text(_finite(mA), unit=False, none=NONE)
    x = fmt.round_value(_finite(mA), digits)
    return NONE if x is None else f"{x:.{digits}f}"


def fmt_pct(p: Any) -> str:
    """A percentage ('---' when unknown)."""
    return fmt.pct_text(_finite(p), none=NONE)


def fmt_countdown(s: Any) -> str:
    """A countdown as m:ss."""
    x = _finite(s)
    if x is None or x <= 0:
        return "0:00"
    x = int(math.ceil(x))
    return f"{x // 60}:{x % 60:02d}"


def fmt_duration(s: Any) -> str:
    """A duration in words: '5 s', '3 min 05 s', '1 h 02 min'."""
    return fmt.duration(_finite(s))


def fmt_clock(s: Any) -> str:
    """Case time as h:mm:ss."""
    return fmt.clock(_finite(s), none="--:--")


def delivered_words(set_mA: Any, delivered_mA: Any, tolerance_pct: float = 5.0) -> str:
    """'' when delivered current is as set; a warning phrase otherwise."""
    s, d = _finite(set_mA), _finite(delivered_mA)
    if s is None or d is None or s <= 0:
        return ""
    if d < s * (1 - tolerance_pct / 100.0):
        return "LOW: not delivered as set"
    return ""


def output_words(name: str, out: Mapping[str, Any] | None) -> str:
    """The on/off button of an output (``name``: "Probe", "APS") as the engine knows it:
    ``PROBE ON``, ``Probe off``, or ``Probe: UNKNOWN`` while the board's state is unknown
    (link down, board not accepted, its data not arriving): never the last command."""
    out = out or {}
    state = out.get("state") or ("on" if out.get("on") else "off")
    if state == "unknown":
        return f"{name}: UNKNOWN"
    return f"{name.upper()} ON" if state == "on" else f"{name} off"


def response_words(m: Mapping[str, Any] | None) -> str:
    """What the last stimulus of a side showed, in words."""
    if not m:
        return "no stimulus yet"
    if not m.get("valid", True):
        return f"not measured: {fmt.words(fmt.INVALID_WORDS, m.get('invalid_reason'), 'invalid')}"
    if m.get("response"):
        # only a lowered threshold makes it one: never a plain "RESPONSE" (under a loss of signal least of all)
        return "RESPONSE (lowered threshold)" if m.get("lowered_threshold") else "RESPONSE"
    return "NO RESPONSE, current delivered" if _finite(m.get("delivered_mA")) else "NO RESPONSE"


# ---------------------------------------------------------------- the continuous vagal percentage


def aps_percent(aps_side: Mapping[str, Any] | None,
                last_aps: tuple[float, float, float] | None) -> tuple[float | None, float | None]:
    """The side's continuous vagal amplitude and latency in % of baseline: the state's
    (``state.aps.<side>``) or, when the state has none although the baseline is set (it
    gives none while the probe stimulates the same side), the side's last vagal electrode
    stimulus from the measurement stream (``last_aps``: t, amplitude %, latency %)."""
    a = aps_side or {}
    if a.get("amplitude_pct") is not None:
        return _finite(a.get("amplitude_pct")), _finite(a.get("latency_pct"))
    if a.get("baseline_uV") is None or a.get("collecting") or last_aps is None:
        return None, None
    return _finite(last_aps[1]), _finite(last_aps[2])


# ---------------------------------------------------------------- the response tone, seen


def tone_of(m: Mapping[str, Any] | None, tolerance_pct: float = 5.0) -> str | None:
    """The feedback sound the engine plays for a probe stimulus (``app/outputs/sounds.py``,
    ``tone_for``): ``response`` (a bell, pitch by side), ``tick`` (delivered, no response),
    ``buzz`` (current NOT delivered as set) or None (no sound: vagal electrode stimuli,
    stimuli that could not be measured)."""
    if not m or m.get("source") != "PROBE":
        return None
    s, d = _finite(m.get("set_mA")), _finite(m.get("delivered_mA"))
    if s is not None and d is not None and d < s * (1 - tolerance_pct / 100.0):
        return "buzz"
    if not m.get("valid", True):
        return None
    return "response" if m.get("response") else "tick"


# the response tone per side: left B5 (988 Hz), right a fifth higher (F#6, 1480 Hz)
TONE_PITCH = {"L": "low", "R": "high"}


def tone_level(amplitude_uV: Any, threshold_uV: Any = 100.0) -> float:
    """How big the visible tone cue is, 0-1: logarithmic in the response amplitude, 0.25
    at the event threshold and 1 at 20 times it."""
    a, thr = _finite(amplitude_uV), _finite(threshold_uV) or 100.0
    if a is None or a <= 0:
        return 0.0
    return max(0.1, min(1.0, 0.25 + 0.75 * math.log(a / thr) / math.log(20.0)))


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
    "alarm_text": _rgb("#ff7b7b"),  # a high-priority line of text on the dark background
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
        values.append(f"wander {fmt.amp_text(d['wander_uV'])}")
    if _finite(d.get("modulation_pct")) is not None:
        values.append(f"modulation {fmt.pct_text(d['modulation_pct'])}")
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


def _case_lines(doc: Mapping[str, Any], clean: Callable[[Any], str]) -> list[str]:
    case = doc.get("case") or {}
    lines = [f"Case {case.get('case_id', '?')}   patient {case.get('patient_id', '?')}   {case.get('date', '')}"]
    proc = case.get("procedure") or "procedure not given"
    sides = " then ".join(side_name(s).lower() for s in case.get("planned_sides") or []) or "-"
    if case.get("surgeon"):
        surgeon = str(case["surgeon"])
    elif (doc.get("generated") or {}).get("pseudonymised"):
        surgeon = "not shown (the report is pseudonymised)"
    else:
        surgeon = "not entered"
    lines.append(f"{proc}; planned sides: {sides}; surgeon: {surgeon}")
    if case.get("duration_s") is not None:
        lines.append(f"Duration {fmt_duration(case.get('duration_s'))}"
                     + (f"; closing remark: {case.get('close_reason')}" if case.get("close_reason") else ""))
    if (case.get("board") or {}).get("simulated"):
        lines.append("SIMULATED BOARD: demonstration record, not patient data.")
    return lines


def _side_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
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
            extra.append(f"V2 = {fmt.pct_text(sd['v2_of_v1_pct'])} of V1")
        if sd.get("r2_reduction_pct") is not None:
            extra.append(f"R2 reduction {fmt.pct_text(sd['r2_reduction_pct'])}")
        missing = [m for m in sd.get("missing_steps") or [] if isinstance(m, Mapping)]
        if missing:  # the close-out: each step not done, with the reason given for it
            extra.append("not done: " + ", ".join(
                f"{m.get('step')} ({m.get('reason') or 'no reason given'})"
                for m in missing))
        if extra:
            lines.append("   " + "; ".join(extra))
    return lines


def _event_lines(doc: Mapping[str, Any], clean: Callable[[Any], str]) -> list[str]:
    lines = []
    tubes = doc.get("tube_check") or []
    if tubes:
        t = tubes[-1]
        lines.append("")
        lines.append(f"Tube check: {'PASSED' if t.get('passed') else 'FAILED'} ({clean(t.get('message', ''))})"
                     + (f"; override: {clean(t['override'])}" if t.get("override") else ""))
        bv = t.get("breathing_variation")
        if isinstance(bv, Mapping):
            lines.append("   breathing variation: " + "; ".join(
                f"{side_name(k).lower()} {breathing_side_words(v)}" for k, v in bv.items()))
    events = doc.get("adverse_events") or []
    lines.append("")
    lines.append(f"Adverse events: {len(events)}")
    for ev in events:
        lines.append(f" {fmt_clock(ev.get('t_s'))} {priority_label(ev.get('priority'))} "
                     f"{ev.get('title') or clean(ev.get('kind'))} {site_side_name(ev.get('site'), ev.get('side'))}")
        lt = ev.get("los_type")
        if isinstance(lt, dict) and lt.get("type"):
            lines.append(f"   LOS type {lt['type']}")
        for a in ev.get("troubleshooting") or []:
            lines.append(f"   {CHECK_LABELS.get(a.get('check'), clean(a.get('check')))}: {a.get('answer')}")
    for st in doc.get("staging") or []:
        lines.append("")
        lines.append(f"Staging: {clean(st.get('recommendation'))}")
        if st.get("decision"):
            lines.append(f"   decision: {str(st['decision']).replace('_', ' ')} ({st.get('reason') or ''})")
    return lines


def document_summary(doc: Mapping[str, Any], clean: Callable[[Any], str] = lambda x: str(x or "")) -> str:
    """The case documentation (``report.get``'s ``document``) as plain text lines for the
    on-screen preview: case, steps per side, tube check, adverse events, staging, notes.
    ``clean`` puts the engine's free texts in words (``app.ui.words.plain``)."""
    lines = _case_lines(doc, clean) + [""] + _side_lines(doc) + _event_lines(doc, clean)
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
                     + ("verified" if j.get("verified") else f"NOT verified: {clean(j.get('verify_problem'))}"))
    return "\n".join(lines)
