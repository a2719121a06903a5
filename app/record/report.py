"""The PDF case report: the INMSG case document laid out for a reader to take in at a glance.

Owns: ``write_pdf(doc, path, waveform_of)`` and the drawings (step waveforms, trends).
May import: the standard library, numpy, reportlab, ``app.record.document``,
``app.analysis.breathing`` (the tube check's breathing variation in words).

Layout (A4): header block (case data, software version, journal verification and last
hash); summary per side; tube check; per-side step table L1 V1 (S1) R1 R2 (S2) V2 L2 with
amplitude, latency, set and delivered current and a small waveform of each step's epoch;
amplitude and latency trends per side (APS and probe) with the baseline and the 50 % and
110 % lines; adverse events with what was done (acknowledgement, troubleshooting, LOS
type, recovery time, staging decision); the full event and alarm timeline; irritation
episodes; notes; signature lines; the settings in force. Every page carries the case id,
the patient's pseudonymous id and "page n of m".

``waveform_of(seq)`` returns the epoch entry's ``(samples_uV (channels, n),
sample_rate_hz, pre_samples, labels)`` or ``None``; the report draws the step's side.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np
from reportlab.graphics.shapes import Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    CondPageBreak,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from app.analysis.breathing import side_text
from app.record.entries import PROCEDURE_ORDER

WaveformFn = Callable[[int], "tuple[np.ndarray, float, int, list[str]] | None"]

_styles = getSampleStyleSheet()
H1 = ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=15, spaceAfter=4, spaceBefore=0)
H2 = ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=11.5, spaceBefore=8, spaceAfter=3)
BODY = ParagraphStyle("body", parent=_styles["BodyText"], fontSize=8.5, leading=10.5)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=7.5, leading=9, alignment=TA_LEFT)
CELL = ParagraphStyle("cell", parent=BODY, fontSize=7.5, leading=9)
BAD = colors.HexColor("#b00020")
GOOD = colors.HexColor("#1b7f3b")
GRID = colors.HexColor("#999999")
HEAD_BG = colors.HexColor("#e8edf3")
SIDE_COLOURS = {"L": colors.HexColor("#1f5fbf"), "R": colors.HexColor("#c0392b")}

CORE_STEPS = ("L1", "V1", "R1", "R2", "V2", "L2")


def _p(text: Any, style: ParagraphStyle = CELL) -> Paragraph:
    return Paragraph(escape("" if text is None else str(text)), style)


def _num(x: Any, fmt: str = "{:.0f}", none: str = "-") -> str:
    if x is None:
        return none
    try:
        return fmt.format(float(x))
    except (TypeError, ValueError):
        return str(x)


def hms(t_s: Any) -> str:
    """Case time as h:mm:ss."""
    if t_s is None:
        return "-"
    t = int(round(float(t_s)))
    return f"{t // 3600}:{(t % 3600) // 60:02d}:{t % 60:02d}"


def _wall_time(wall: Any) -> str:
    return str(wall)[11:19] if wall else "-"


def _table(rows: list[list[Any]], widths: Sequence[float], header_rows: int = 1,
           extra: list[tuple] | None = None) -> Table:
    t = Table(rows, colWidths=widths, repeatRows=header_rows, hAlign="LEFT")
    style = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
        ("FONT", (0, 0), (-1, header_rows - 1), "Helvetica-Bold", 7.5),
        ("BACKGROUND", (0, 0), (-1, header_rows - 1), HEAD_BG),
        ("GRID", (0, 0), (-1, -1), 0.3, GRID),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
    t.setStyle(TableStyle(style + (extra or [])))
    return t


# ----------------------------------------------------------------------------- drawings


def _minmax_decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n <= max_points:
        return x, y
    bins = max_points // 2
    edges = np.linspace(0, n, bins + 1).astype(int)
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        seg = y[a:b]
        i, j = int(np.argmin(seg)), int(np.argmax(seg))
        for k in sorted((i, j)):
            xs.append(x[a + k])
            ys.append(seg[k])
    return np.asarray(xs), np.asarray(ys)


def waveform_drawing(samples: np.ndarray, fs: float, pre: int, width: float = 52 * mm,
                     height: float = 13 * mm, colour: Any = colors.black) -> Drawing:
    """A small trace of one epoch with the stimulus onset marked and a scale label."""
    d = Drawing(width, height)
    y = np.asarray(samples, dtype=float)
    n = len(y)
    if n < 2:
        d.add(String(2, height / 2, "no waveform", fontSize=6))
        return d
    t_ms = (np.arange(n) - pre) / fs * 1000.0
    # blank the stimulus artifact (first 1.5 ms) for scaling, as the analysis does
    win = (t_ms >= 1.5) & (t_ms <= 50.0)
    ref = y[win] if np.any(win) else y
    span = float(np.max(ref) - np.min(ref)) or 1.0
    mid = float(np.max(ref) + np.min(ref)) / 2.0
    scale = (height - 4) / (span * 1.15)
    x0, x1 = t_ms[0], t_ms[-1]
    px = (t_ms - x0) / (x1 - x0) * (width - 2) + 1
    py = np.clip((y - mid) * scale + height / 2, 0, height)
    px, py = _minmax_decimate(px, py, 400)
    d.add(Rect(0, 0, width, height, strokeColor=colors.HexColor("#cccccc"), fillColor=None, strokeWidth=0.3))
    onset = (0 - x0) / (x1 - x0) * (width - 2) + 1
    d.add(Line(onset, 0, onset, height, strokeColor=colors.HexColor("#aaaaaa"), strokeWidth=0.3,
               strokeDashArray=[1, 1]))
    d.add(PolyLine(list(np.column_stack([px, py]).ravel()), strokeColor=colour, strokeWidth=0.5))
    d.add(String(width - 1, 1.5, f"{span:.0f} uV p-p / {x1:.0f} ms", fontSize=5, textAnchor="end",
                 fillColor=colors.HexColor("#666666")))
    return d


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def trend_drawing(series: list[dict[str, Any]], baselines: list[tuple[float, float, float]], pct: float | None,
                  pct_label: str, ylabel: str, t_range: tuple[float, float], width: float = 174 * mm,
                  height: float = 42 * mm, above: bool = False) -> Drawing:
    """One trend plot. ``series``: {label, t, y, colour, marker}. ``baselines``: (t_from,
    t_to, value) segments drawn solid, with ``pct`` % of each drawn dashed."""
    d = Drawing(width, height)
    left, bottom, right, top = 14 * mm, 6 * mm, 3 * mm, 4 * mm
    pw, ph = width - left - right, height - bottom - top
    t0, t1 = t_range
    if t1 <= t0:
        t1 = t0 + 1.0
    values = [v for s in series for v in s["y"] if v is not None]
    values += [b[2] for b in baselines] + ([b[2] * pct / 100.0 for b in baselines] if pct else [])
    if not values:
        d.add(String(left, height / 2, f"no {ylabel} data", fontSize=7))
        return d
    lo, hi = min(0.0, min(values)), max(values) * 1.1 or 1.0
    d.add(Rect(left, bottom, pw, ph, strokeColor=colors.HexColor("#888888"), fillColor=None, strokeWidth=0.4))

    def X(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * pw

    def Y(v: float) -> float:
        return bottom + (v - lo) / (hi - lo) * ph

    for v in _nice_ticks(lo, hi, 4):
        if lo <= v <= hi:
            d.add(Line(left, Y(v), left + pw, Y(v), strokeColor=colors.HexColor("#e2e2e2"), strokeWidth=0.3))
            d.add(String(left - 1.5, Y(v) - 2, f"{v:g}", fontSize=5.5, textAnchor="end"))
    span_min = (t1 - t0) / 60.0
    for tm in _nice_ticks(t0 / 60.0, t1 / 60.0, 8):
        tt = tm * 60.0
        if t0 <= tt <= t1:
            d.add(Line(X(tt), bottom, X(tt), bottom - 1.2, strokeColor=colors.black, strokeWidth=0.3))
            d.add(String(X(tt), bottom - 4, f"{tm:g}", fontSize=5.5, textAnchor="middle"))
    d.add(String(left + pw, 1, "case time (min)" if span_min > 0 else "", fontSize=5.5, textAnchor="end"))
    d.add(String(1, bottom + ph + 1, ylabel, fontSize=6.5))
    for b0, b1, v in baselines:
        d.add(Line(X(b0), Y(v), X(b1), Y(v), strokeColor=colors.HexColor("#2e7d32"), strokeWidth=0.7))
        if pct:
            d.add(Line(X(b0), Y(v * pct / 100.0), X(b1), Y(v * pct / 100.0), strokeColor=colors.HexColor("#e65100"),
                       strokeWidth=0.7, strokeDashArray=[2, 1.5]))
    if baselines:
        d.add(String(left + 2, bottom + ph - 6, "baseline", fontSize=5.5, fillColor=colors.HexColor("#2e7d32")))
        if pct:
            d.add(String(left + 28, bottom + ph - 6, pct_label, fontSize=5.5, fillColor=colors.HexColor("#e65100")))
    lx = left + pw - 2
    for s in reversed(series):
        pts = [(t, v) for t, v in zip(s["t"], s["y"]) if v is not None]
        if not pts:
            continue
        tx = np.array([p[0] for p in pts], dtype=float)
        vy = np.array([p[1] for p in pts], dtype=float)
        px, py = _minmax_decimate(np.array([X(t) for t in tx]), np.array([Y(v) for v in vy]), 900)
        if s.get("marker"):
            for x, y in zip(px[:400], py[:400]):
                d.add(Rect(x - 0.6, y - 0.6, 1.2, 1.2, strokeColor=None, fillColor=s["colour"]))
        elif len(px) > 1:
            d.add(PolyLine(list(np.column_stack([px, py]).ravel()), strokeColor=s["colour"], strokeWidth=0.5))
        d.add(String(lx, bottom + ph + 1, s["label"], fontSize=5.5, textAnchor="end", fillColor=s["colour"]))
        lx -= 6 + 3.0 * len(s["label"])
    return d


# ----------------------------------------------------------------------------- page frame


class _NumberedCanvas(rl_canvas.Canvas):
    """Two passes so that every page can say "page n of m"."""

    header = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._saved: list[dict] = []

    def showPage(self) -> None:  # noqa: N802 (reportlab's name)
        self._saved.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._saved)
        for state in self._saved:
            self.__dict__.update(state)
            self._frame(total)
            super().showPage()
        super().save()

    def _frame(self, total: int) -> None:
        w, h = A4
        self.setFont("Helvetica", 7)
        self.setFillColor(colors.HexColor("#444444"))
        self.drawString(15 * mm, h - 10 * mm, self.header)
        self.drawRightString(w - 15 * mm, h - 10 * mm, f"page {self._pageNumber} of {total}")
        self.setStrokeColor(colors.HexColor("#bbbbbb"))
        self.line(15 * mm, h - 11.5 * mm, w - 15 * mm, h - 11.5 * mm)
        self.drawString(15 * mm, 8 * mm, self.footer)
        self.drawRightString(w - 15 * mm, 8 * mm, f"page {self._pageNumber} of {total}")


# ----------------------------------------------------------------------------- the report


def write_pdf(doc: Mapping[str, Any], path: Any, waveform_of: WaveformFn | None = None) -> None:
    case = doc.get("case") or {}
    journal = doc.get("journal") or {}
    case_id = case.get("case_id") or "?"
    header = f"LNM neuromonitoring record   case {case_id}   patient {case.get('patient_id') or '?'}"
    last_hash = journal.get("last_hash") or ""
    footer = (f"journal: {journal.get('entries')} entries, last hash {last_hash[:16]}...   "
              f"LNM {case.get('software_version') or ''}")

    class Canvas(_NumberedCanvas):
        pass

    Canvas.header = header
    Canvas.footer = footer
    story: list[Any] = []
    story += _header_block(doc)
    story += _summary(doc)
    story += _tube_check(doc)
    for side in ("L", "R"):
        story += _side_steps(doc, side, waveform_of)
    story += _trends(doc)
    story += _adverse(doc)
    story += _timeline(doc)
    story += _irritation(doc)
    story += _notes(doc)
    story += _reader_messages(doc)
    story += _signatures(doc)
    story += _settings(doc)
    pdf = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=14 * mm, title=f"LNM case {case_id}", author="LNM",
                            subject="Intraoperative neuromonitoring case documentation (INMSG)")
    pdf.build(story, canvasmaker=Canvas)


def _header_block(doc: Mapping[str, Any]) -> list[Any]:
    case, journal = doc.get("case") or {}, doc.get("journal") or {}
    tube = case.get("tube") or {}
    tube_text = ", ".join(x for x in [
        str(tube.get("type")) if tube.get("type") else "",
        f"size {tube['size_mm']} mm" if tube.get("size_mm") is not None else "",
        f"depth {tube['depth_cm']} cm" if tube.get("depth_cm") is not None else ""] if x) or "-"
    verified = journal.get("verified")
    if verified is True:
        vtext, vcol = "hash chain intact", GOOD
    elif verified is False:
        vtext, vcol = f"ALTERED: {journal.get('verify_problem')}", BAD
    else:
        vtext, vcol = "not verified", colors.black
    surgeon = case.get("surgeon") if case.get("surgeon") else ("(pseudonymised)" if (doc.get("generated") or {}).get(
        "pseudonymised") else "-")
    rows = [
        ["Patient (pseudonym)", case.get("patient_id") or "-", "Case id", case.get("case_id") or "-"],
        ["Date", case.get("date") or "-", "Procedure", _p(case.get("procedure") or "-")],
        ["Planned sides", " then ".join(case.get("planned_sides") or []) or "-", "Surgeon", surgeon],
        ["Tube", _p(tube_text), "Software", f"LNM {case.get('software_version') or '?'}"],
        ["Case opened (UTC)", (case.get("opened") or "-")[:19].replace("T", " "),
         "Case closed (UTC)", (case.get("closed") or "still open")[:19].replace("T", " ")],
        ["Duration", hms(case.get("duration_s")), "Journal entries", str(journal.get("entries") or 0)],
        ["Journal", _p(vtext), "Last entry hash", _p(journal.get("last_hash") or "-", SMALL)],
    ]
    t = _table(rows, [34 * mm, 52 * mm, 28 * mm, 66 * mm], header_rows=0, extra=[
        ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 7.5), ("FONT", (2, 0), (2, -1), "Helvetica-Bold", 7.5),
        ("BACKGROUND", (0, 0), (0, -1), HEAD_BG), ("BACKGROUND", (2, 0), (2, -1), HEAD_BG),
        ("TEXTCOLOR", (1, 6), (1, 6), vcol)])
    title = Paragraph("Neuromonitoring case documentation (INMSG)", H1)
    return [title, t, Spacer(1, 3 * mm)]


def _step_text(v: Mapping[str, Any] | None) -> str:
    if not v:
        return "-"
    if "finding" in v:
        return str(v.get("finding") or "-")
    if v.get("response") is False:
        return f"no response ({_num(v.get('amplitude_uV'))} uV)"
    return f"{_num(v.get('amplitude_uV'))} uV / {_num(v.get('latency_ms'), '{:.2f}')} ms"


def _summary(doc: Mapping[str, Any]) -> list[Any]:
    sides = doc.get("sides") or {}
    rows = [["Side", "L1", "V1", "R1", "R2", "V2", "L2", "V2/V1", "events"]]
    for side in ("L", "R"):
        s = sides.get(side) or {}
        steps = s.get("steps") or {}
        label = {"L": "Left", "R": "Right"}[side] + ("" if s.get("planned") else " (not planned)")
        rows.append([label] + [_p(_step_text(steps.get(k))) for k in ("L1", "V1", "R1", "R2", "V2", "L2")] +
                    [_num(s.get("v2_of_v1_pct"), "{:.0f} %"), str(s.get("episodes") or 0)])
    extra = []
    for r, side in enumerate(("L", "R"), start=1):
        if (sides.get(side) or {}).get("episodes"):
            extra.append(("TEXTCOLOR", (8, r), (8, r), BAD))
    return [Paragraph("Summary", H2), _table(rows, [24 * mm, 16 * mm, 23 * mm, 23 * mm, 23 * mm, 23 * mm, 16 * mm,
                                                   14 * mm, 18 * mm], extra=extra)]


def _tube_check(doc: Mapping[str, Any]) -> list[Any]:
    checks = doc.get("tube_check") or []
    out: list[Any] = [Paragraph("Tube placement check", H2)]
    if not checks:
        return out + [_p("No tube check recorded.", BODY)]
    rows = [["Time", "Result", "Impedances (kOhm)", _p("Imbalance L / R (kOhm)"), "Lead off",
             _p("Breathing variation"), "Override"]]
    extra = []
    for i, c in enumerate(checks, start=1):
        imp = c.get("impedances_ohm") or {}
        imp_text = ", ".join(f"{k} {'off' if v is not None and v < 0 else _num((v or 0) / 1000.0, '{:.1f}')}"
                             for k, v in imp.items())
        imb = c.get("imbalance_ohm") or {}
        imb_text = " / ".join(_num(None if imb.get(s) is None else imb[s] / 1000.0, "{:.2f}") for s in ("L", "R"))
        bv = c.get("breathing_variation")
        bv_text = "<br/>".join(escape(f"{k}: {side_text(v)}") for k, v in bv.items()) if isinstance(bv, dict) else (
            "not measured" if bv is None else escape(side_text(bv)))
        ov = c.get("override")
        ov_text = f"{ov.get('who') or ''}: {ov.get('reason') or ''}" if isinstance(ov, dict) else "-"
        rows.append([hms(c.get("t_s")), "passed" if c.get("passed") else "FAILED", _p(imp_text),
                     imb_text, ", ".join(c.get("lead_off") or []) or "none", Paragraph(bv_text, CELL), _p(ov_text)])
        extra.append(("TEXTCOLOR", (1, i), (1, i), GOOD if c.get("passed") else BAD))
    out.append(_table(rows, [14 * mm, 14 * mm, 50 * mm, 22 * mm, 16 * mm, 38 * mm, 26 * mm], extra=extra))
    if checks[-1].get("message"):
        out.append(_p(checks[-1]["message"], SMALL))
    return out


def _side_steps(doc: Mapping[str, Any], side: str, waveform_of: WaveformFn | None) -> list[Any]:
    s = (doc.get("sides") or {}).get(side) or {}
    steps = s.get("steps") or {}
    name = {"L": "Left", "R": "Right"}[side]
    title = f"{name} side: INMSG steps" + ("" if s.get("planned") else " (side not planned)")
    rows = [["Step", "Time", "Amplitude (uV)", "Latency (ms)", "Set (mA)", "Delivered (mA)", "Response", "Waveform"]]
    extra = []
    for step in PROCEDURE_ORDER:
        v = steps.get(step)
        if v is None and step not in CORE_STEPS:
            continue
        r = len(rows)
        if step in ("L1", "L2"):
            finding = (v or {}).get("finding")
            rows.append([step, hms((v or {}).get("t_s")), _p(f"laryngoscopy: {finding or 'not recorded'}"), "", "", "",
                         "", ""])
            extra.append(("SPAN", (2, r), (7, r)))
            if finding in ("paresis", "palsy", "reduced", "immobile"):
                extra.append(("TEXTCOLOR", (2, r), (2, r), BAD))
            continue
        if v is None:
            rows.append([step, "-", "not recorded", "", "", "", "", ""])
            extra.append(("SPAN", (2, r), (7, r)))
            extra.append(("TEXTCOLOR", (2, r), (2, r), colors.HexColor("#777777")))
            continue
        wave: Any = ""
        seq = v.get("stimulus_seq")
        if waveform_of is not None and seq is not None:
            got = waveform_of(int(seq))
            if got is not None:
                samples, fs, pre, labels = got
                ch = labels.index(f"EMG {side}") if f"EMG {side}" in labels else 0
                wave = waveform_drawing(samples[min(ch, samples.shape[0] - 1)], fs, pre,
                                        colour=SIDE_COLOURS.get(side, colors.black))
        delivered = v.get("delivered_mA")
        resp = v.get("response")
        rows.append([step, hms(v.get("t_s")), _num(v.get("amplitude_uV")), _num(v.get("latency_ms"), "{:.2f}"),
                     _num(v.get("set_mA"), "{:.2f}"), _num(delivered, "{:.2f}", "not measured"),
                     "yes" if resp else ("NO" if resp is False else "-"), wave])
        if resp is False:
            extra.append(("TEXTCOLOR", (6, r), (6, r), BAD))
        if delivered is not None and v.get("set_mA") and delivered < 0.95 * float(v["set_mA"]):
            extra.append(("TEXTCOLOR", (5, r), (5, r), BAD))
    t = _table(rows, [11 * mm, 15 * mm, 20 * mm, 18 * mm, 14 * mm, 20 * mm, 15 * mm, 56 * mm], extra=extra)
    notes = []
    if s.get("v2_of_v1_pct") is not None:
        notes.append(f"V2 amplitude is {s['v2_of_v1_pct']:.0f} % of V1.")
    if s.get("r2_reduction_pct") is not None:
        notes.append(f"R2 proximal vs distal reduction: {s['r2_reduction_pct']:.0f} %.")
    out: list[Any] = [CondPageBreak(60 * mm), Paragraph(title, H2), t]
    if notes:
        out.append(_p(" ".join(notes), SMALL))
    return out


def _baseline_segments(baselines: list[Mapping[str, Any]], key: str, t_end: float) -> list[tuple[float, float, float]]:
    segs = []
    bl = [b for b in baselines if b.get(key) is not None]
    for i, b in enumerate(bl):
        end = bl[i + 1]["t_s"] if i + 1 < len(bl) else t_end
        segs.append((float(b["t_s"]), float(end), float(b[key])))
    return segs


def _trends(doc: Mapping[str, Any]) -> list[Any]:
    trends = doc.get("trends") or {}
    settings = ((doc.get("settings") or {}).get("values") or {})
    amp_pct = float(settings.get("rules.combined_amplitude_pct", 50.0))
    lat_pct = float(settings.get("rules.combined_latency_pct", 110.0))
    out: list[Any] = [CondPageBreak(120 * mm), Paragraph("Amplitude and latency trends", H2)]
    t_end = float((doc.get("case") or {}).get("duration_s") or 0.0)
    anything = False
    for side in ("L", "R"):
        tr = trends.get(side) or {}
        series_amp, series_lat = [], []
        aps = tr.get("aps")
        ts_all: list[float] = []
        if aps:
            series_amp.append({"label": "APS vagus", "t": aps["t_s"], "y": aps["amplitude_uV"],
                               "colour": SIDE_COLOURS[side]})
            series_lat.append({"label": "APS vagus", "t": aps["t_s"], "y": aps["latency_ms"],
                               "colour": SIDE_COLOURS[side]})
            ts_all += aps["t_s"]
        probe_colours = {"VAGUS": colors.HexColor("#6a1b9a"), "RLN": colors.HexColor("#00838f"),
                         "EBSLN": colors.HexColor("#8d6e63")}
        for site, ser in (tr.get("probe") or {}).items():
            series_amp.append({"label": f"probe {site}", "t": ser["t_s"], "y": ser["amplitude_uV"],
                               "colour": probe_colours.get(site, colors.grey), "marker": True})
            series_lat.append({"label": f"probe {site}", "t": ser["t_s"], "y": ser["latency_ms"],
                               "colour": probe_colours.get(site, colors.grey), "marker": True})
            ts_all += ser["t_s"]
        if not ts_all:
            continue
        anything = True
        t_range = (0.0, max(t_end, max(ts_all)))
        baselines = tr.get("baselines") or []
        name = {"L": "Left", "R": "Right"}[side]
        amp = trend_drawing(series_amp, _baseline_segments(baselines, "amplitude_uV", t_range[1]), amp_pct,
                            f"{amp_pct:g} % of baseline", f"{name}: amplitude (uV p-p)", t_range)
        lat = trend_drawing(series_lat, _baseline_segments(baselines, "latency_ms", t_range[1]), lat_pct,
                            f"{lat_pct:g} % of baseline", f"{name}: latency (ms)", t_range, above=True)
        out.append(KeepTogether([amp, Spacer(1, 2 * mm), lat, Spacer(1, 3 * mm)]))
    if not anything:
        out.append(_p("No valid stimuli recorded.", BODY))
    return out


def _adverse(doc: Mapping[str, Any]) -> list[Any]:
    eps = doc.get("adverse_events") or []
    out: list[Any] = [CondPageBreak(40 * mm), Paragraph("Adverse events and what was done", H2)]
    if not eps:
        return out + [_p("No loss of signal, combined event or amplitude decrease.", BODY)]
    rows = [["Time", "Side / site", "Event", "Acknowledged", "Troubleshooting", "LOS type", "Recovery",
             "Staging decision"]]
    for ep in eps:
        ack = ep.get("acknowledged")
        ack_text = f"{hms(ack['t_s'])} by {ack.get('who') or '?'} (+{_num(ack.get('after_s'), '{:.0f}')} s)" \
            if ack else "not acknowledged"
        ts = "; ".join(f"{x['check'].replace('_', ' ')}: {x['answer']}" for x in ep.get("troubleshooting") or []) or "-"
        if ep.get("mapping"):
            ts += "; mapping: " + ", ".join(f"{m['position_mm']} mm {'+' if m['response'] else '-'}"
                                           for m in ep["mapping"])
        lt = ep.get("los_type")
        lt_text = f"type {lt['type']} ({'segmental' if lt['type'] == 1 else 'global'})" if lt else "-"
        rec = f"after {hms(ep['recovery_s'])}" if ep.get("recovery_s") is not None else "NOT recovered"
        st = ep.get("staging") or []
        decided = [x for x in st if x.get("decision")]
        st_text = (f"{decided[-1]['decision'].replace('_', ' ')}: {decided[-1].get('reason') or ''}" if decided
                   else (st[-1]["recommendation"] + " (undecided)" if st else "-"))
        rows.append([hms(ep.get("t_s")), f"{ep.get('side')} {ep.get('site')}", _p(ep.get("title")), _p(ack_text),
                     _p(ts), _p(lt_text), _p(rec), _p(st_text)])
    out.append(_table(rows, [13 * mm, 16 * mm, 22 * mm, 22 * mm, 45 * mm, 17 * mm, 17 * mm, 28 * mm]))
    return out


def _timeline(doc: Mapping[str, Any]) -> list[Any]:
    items = doc.get("timeline") or []
    out: list[Any] = [CondPageBreak(40 * mm), Paragraph("Event and alarm timeline", H2)]
    if not items:
        return out + [_p("Nothing recorded.", BODY)]
    rows = [["Case time", "UTC", "Side", "What", "Who"]]
    extra = []
    for i, it in enumerate(items, start=1):
        rows.append([hms(it.get("t_s")), _wall_time(it.get("wall")), it.get("side") or "", _p(it.get("text")),
                     _p(it.get("who") or "")])
        if it.get("type") == "rule_event" and it.get("priority") == "high" or (
                it.get("type") == "alarm" and it.get("transition") in ("raised", "raise", "escalated")):
            extra.append(("TEXTCOLOR", (3, i), (3, i), BAD))
        elif it.get("type") == "storage":
            extra.append(("TEXTCOLOR", (3, i), (3, i), BAD))
    out.append(_table(rows, [16 * mm, 14 * mm, 9 * mm, 118 * mm, 23 * mm], extra=extra))
    return out


def _irritation(doc: Mapping[str, Any]) -> list[Any]:
    eps = doc.get("irritation") or []
    out: list[Any] = [CondPageBreak(30 * mm), Paragraph("Irritation episodes (free-running EMG)", H2)]
    cau = (doc.get("cautery") or {}).get("episodes") or 0
    if not eps:
        out.append(_p("No irritation episodes recorded.", BODY))
    else:
        rows = [["Onset", "Side", "Kind", "Duration (s)", "Peak (uV)"]]
        for e in eps:
            rows.append([hms(e.get("onset_s")), e.get("side"), e.get("kind") or "-", _num(e.get("duration_s"), "{:.1f}"),
                         _num(e.get("peak_uV"))])
        out.append(_table(rows, [18 * mm, 12 * mm, 25 * mm, 22 * mm, 22 * mm]))
    out.append(_p(f"Electrocautery periods detected: {cau}.", SMALL))
    return out


def _notes(doc: Mapping[str, Any]) -> list[Any]:
    notes = doc.get("notes") or []
    out: list[Any] = [Paragraph("Notes", H2)]
    if not notes:
        return out + [_p("No notes.", BODY)]
    for n in notes:
        who = f" ({n['who']})" if n.get("who") else ""
        out.append(Paragraph(f"<b>{hms(n.get('t_s'))}</b>{escape(who)}: {escape(str(n.get('text')))}", BODY))
    return out


def _reader_messages(doc: Mapping[str, Any]) -> list[Any]:
    """The remote reader's messages and interpretations, with the OR's acknowledgement (none: no section)."""
    msgs = doc.get("reader_messages") or []
    if not msgs:
        return []
    out: list[Any] = [Paragraph("Remote neuromonitoring: the reader's messages", H2)]
    for m in msgs:
        what = "Interpretation" if m.get("kind") == "interpretation" else "Message"
        ack = (f"acknowledged at {hms(m['acknowledged_t_s'])} by {m.get('acknowledged_by') or 'the OR'}"
               if m.get("acknowledged_t_s") is not None else "not acknowledged")
        out.append(Paragraph(f"<b>{hms(m.get('t_s'))}</b> {what} from {escape(str(m.get('from')))}: "
                             f"{escape(str(m.get('text')))} ({escape(ack)})", BODY))
    return out


def _signatures(doc: Mapping[str, Any]) -> list[Any]:
    rows = []
    for s in doc.get("signatures") or []:
        rows.append([s.get("role"), s.get("name") or "", "Signature: ______________________",
                     "Date: ____________"])
    t = Table(rows, colWidths=[48 * mm, 40 * mm, 58 * mm, 34 * mm], rowHeights=[12 * mm] * len(rows), hAlign="LEFT")
    t.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 8), ("VALIGN", (0, 0), (-1, -1), "BOTTOM")]))
    return [KeepTogether([Paragraph("Signatures", H2), t])]


def _settings(doc: Mapping[str, Any]) -> list[Any]:
    st = doc.get("settings") or {}
    values = st.get("values") or {}
    out: list[Any] = [CondPageBreak(50 * mm), Paragraph("Settings in force at the start of the case", H2)]
    if not values:
        return out + [_p("No settings recorded.", BODY)]
    keys = [k for k in sorted(values) if k != "ui.settings_pin"]
    half = (len(keys) + 1) // 2
    rows = [["Setting", "Value", "Setting", "Value"]]
    for i in range(half):
        a = keys[i]
        b = keys[i + half] if i + half < len(keys) else None
        rows.append([a, str(values[a]), b or "", "" if b is None else str(values[b])])
    out.append(_table(rows, [58 * mm, 30 * mm, 58 * mm, 34 * mm]))
    if st.get("source"):
        out.append(_p(f"Source: {st['source']}" + (f", profile {st['profile']}" if st.get("profile") else ""), SMALL))
    changes = st.get("changes") or []
    if changes:
        rows = [["Case time", "Setting", "Old", "New", "Who"]]
        for c in changes:
            rows.append([hms(c.get("t_s")), c.get("key"), str(c.get("old")), f"{c.get('new')} {c.get('unit') or ''}",
                         c.get("who") or ""])
        out += [Paragraph("Setting changes during the case", H2), _table(rows, [18 * mm, 62 * mm, 30 * mm, 40 * mm,
                                                                               30 * mm])]
    return out
