"""The PDF case report: the INMSG case document laid out for a surgeon to take in at a glance.

Owns: ``write_pdf(doc, path, waveform_of)`` (returns the layout problems found, none
expected), ``layout_problems`` (a cell's text or drawing wider than its column), and the
drawings (step waveforms with a scale bar, overlays, trends with event markers).
May import: the standard library, numpy, reportlab, ``app.format`` (every number and word),
``app.settings`` (defaults and units of the clinical settings), ``app.record.document``,
``app.analysis.breathing`` (the tube check's breathing variation in words).

Page 1 answers "how did each nerve end the case?": case data with anaesthesia and tube,
then per side the final signal status compared with L2, V2 as % of V1, the events by
priority and the INMSG steps still missing with the reason given at close; the step
values of both sides; the summary of every event of the case. Then: the tube check; per
side the step table (amplitude, latency, set and delivered current, a thumbnail of each
step's epoch with an amplitude scale bar and its values as in the table) and V2 drawn
over V1; the trends of amplitude and latency per side with the baseline, the 50 % /
110 % lines and a marker at every event; the adverse events with what was done, each
with its waveform drawn over the baseline of its site; the mapping with the lesion
location; the timeline of events, alarms and operator actions in words; irritation;
notes; the close-out; signatures; the clinical settings in force (wiring, devices and
link timing are left out: they are in the case JSON). Every page carries the case id,
the patient's pseudonymous id and "page n of m". No internal key or enum value is
printed: ``app.format`` words them.

``waveform_of(seq)`` returns the epoch entry's ``(samples_uV (channels, n),
sample_rate_hz, pre_samples, labels)`` or ``None``; the report draws the step's side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from reportlab.graphics.shapes import Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from app import format as F
from app.analysis.breathing import side_text
from app.record.entries import PROCEDURE_ORDER

WaveformFn = Callable[[int], "tuple[np.ndarray, float, int, list[str]] | None"]

_styles = getSampleStyleSheet()
H1 = ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=15, spaceAfter=4, spaceBefore=0)
H2 = ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=11.5, spaceBefore=8, spaceAfter=3)
BODY = ParagraphStyle("body", parent=_styles["BodyText"], fontSize=8.5, leading=10.5)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=7.5, leading=9, alignment=TA_LEFT)
CELL = ParagraphStyle("cell", parent=BODY, fontSize=7.5, leading=9)
CELL_B = ParagraphStyle("cell_b", parent=CELL, fontName="Helvetica-Bold")
CELL_BIG = ParagraphStyle("cell_big", parent=CELL, fontSize=9, leading=11)
BAD = colors.HexColor("#b00020")
WARN = colors.HexColor("#a05a00")
GOOD = colors.HexColor("#1b7f3b")
GREY = colors.HexColor("#777777")
GRID = colors.HexColor("#999999")
HEAD_BG = colors.HexColor("#e8edf3")
SIDE_COLOURS = {"L": colors.HexColor("#1f5fbf"), "R": colors.HexColor("#c0392b")}
BASELINE_GREY = colors.HexColor("#9a9a9a")
PRIORITY_COLOURS = {"high": BAD, "medium": WARN, "low": colors.HexColor("#00838f"), "info": GREY}
STATUS_COLOURS = {"lost": BAD, "decreased": WARN, "recovered": GOOD, "intact": GOOD, "unknown": WARN,
                  "not_monitored": GREY, "postponed": GREY}
STATUS_WORDS = {"lost": "LOSS OF SIGNAL", "decreased": "SIGNAL DECREASED", "recovered": "RECOVERED",
                "intact": "SIGNAL INTACT", "unknown": "UNCLEAR", "not_monitored": "NOT MONITORED",
                "postponed": "NOT OPERATED (POSTPONED)"}
EVENT_LETTERS = {"loss_of_signal": "L", "combined_event": "C", "amplitude_decrease": "D", "signal_recovered": "R",
                 "no_current": "N", "poor_baseline": "P", "nonrecurrent_nerve_suspected": "NR"}
CORE_STEPS = ("L1", "V1", "R1", "R2", "V2", "L2")
FRAME_WIDTH = A4[0] - 30 * mm - 12  # the page frame less its own padding (498 pt)
PAD = 2 * 3.0  # left + right cell padding (reportlab's default 3 pt each)


def _p(text: Any, style: ParagraphStyle = CELL) -> Paragraph:
    return Paragraph(escape("" if text is None else str(text)), style)


def _cell(x: Any, style: ParagraphStyle = CELL) -> Any:
    """Every text cell is a Paragraph (it wraps inside its column); drawings stay as they are."""
    if isinstance(x, (Flowable, list)):
        return x
    return _p(x, style)


def _table(rows: list[list[Any]], widths: Sequence[float], header_rows: int = 1,
           extra: list[tuple] | None = None, head_style: ParagraphStyle = CELL_B) -> Table:
    cells = [[_cell(x, head_style if r < header_rows else CELL) for x in row] for r, row in enumerate(rows)]
    t = Table(cells, colWidths=list(widths), repeatRows=header_rows, hAlign="LEFT")
    style = [
        ("GRID", (0, 0), (-1, -1), 0.3, GRID),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), PAD / 2),
        ("RIGHTPADDING", (0, 0), (-1, -1), PAD / 2),
    ] + ([("BACKGROUND", (0, 0), (-1, header_rows - 1), HEAD_BG)] if header_rows else [])
    t.setStyle(TableStyle(style + (extra or [])))
    return t


def _colour_cell(t_extra: list[tuple], col: int, row: int, colour: Any) -> None:
    t_extra.append(("TEXTCOLOR", (col, row), (col, row), colour))


def _coloured(text: str, colour: Any, bold: bool = False) -> str:
    inner = f"<b>{escape(text)}</b>" if bold else escape(text)
    return f'<font color="{colour.hexval()}">{inner}</font>'


# ----------------------------------------------------------------------------- layout check


def layout_problems(flowables: Iterable[Any]) -> list[str]:
    """Cells whose content cannot fit their column (a word, or a drawing, wider than it),
    and flowables wider than the page frame. Empty for a sound report."""
    out: list[str] = []
    for f in flowables:
        if isinstance(f, KeepTogether):
            out += layout_problems(f._content)
            continue
        if isinstance(f, Table):
            widths = f._colWidths
            for r, row in enumerate(f._cellvalues):
                for c, cell in enumerate(row):
                    w = widths[c] if c < len(widths) else None
                    if not isinstance(w, (int, float)):
                        continue
                    if _spanned(f, r, c):
                        w = sum(x for x in widths[c:_span_end(f, r, c) + 1] if isinstance(x, (int, float)))
                    need = _min_width(cell)
                    try:
                        cs = f._cellStyles[r][c]
                        pad = float(cs.leftPadding) + float(cs.rightPadding)
                    except (AttributeError, IndexError):
                        pad = PAD
                    if need > w - pad + 0.01:
                        out.append(f"table cell ({r}, {c}) needs {need:.0f} pt, column {w:.0f} pt: "
                                   f"{_cell_text(cell)[:60]!r}")
            if sum(x for x in widths if isinstance(x, (int, float))) > FRAME_WIDTH + 0.5:
                out.append(f"table wider than the page frame: {sum(widths):.0f} pt")
        elif isinstance(f, Drawing) and f.width > FRAME_WIDTH + 0.5:
            out.append(f"drawing wider than the page frame: {f.width:.0f} pt")
    return out


def _spanned(t: Table, r: int, c: int) -> bool:
    return any(a[0] == c and a[1] == r for a, _b in _spans(t))


def _span_end(t: Table, r: int, c: int) -> int:
    for a, b in _spans(t):
        if a == (c, r):
            return b[0]
    return c


def _spans(t: Table) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    out = []
    nc, nr = len(t._colWidths), len(t._cellvalues)
    for cmd in getattr(t, "_spanCmds", []):
        (c0, r0), (c1, r1) = cmd[1], cmd[2]
        out.append(((c0 % nc, r0 % nr), (c1 % nc, r1 % nr)))
    return out


def _min_width(cell: Any) -> float:
    if isinstance(cell, Paragraph):
        return float(cell.minWidth())
    if isinstance(cell, Drawing):
        return float(cell.width)
    if isinstance(cell, list):
        return max((_min_width(x) for x in cell), default=0.0)
    if isinstance(cell, Table):
        return float(sum(x for x in cell._colWidths if isinstance(x, (int, float))))
    return 0.0


def _cell_text(cell: Any) -> str:
    if isinstance(cell, Paragraph):
        return cell.getPlainText()
    return type(cell).__name__


# ----------------------------------------------------------------------------- drawings


def _minmax_decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n <= max_points:
        return x, y
    bins = max_points // 2
    edges = np.linspace(0, n, bins + 1).astype(int)
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        seg = y[a:b]
        i, j = int(np.argmin(seg)), int(np.argmax(seg))
        for k in sorted((i, j)):
            xs.append(x[a + k])
            ys.append(seg[k])
    return np.asarray(xs), np.asarray(ys)


def _scale_uV(span: float) -> float:
    """A round amplitude for the scale bar: about a third to two thirds of the trace's span."""
    target = max(span, 1.0) / 2.0
    best = 10.0
    for exp in range(0, 6):
        for m in (1, 2, 5):
            v = m * 10.0**exp
            if v <= target * 1.3:
                best = v
    return best


def _window(t_ms: np.ndarray, y: np.ndarray) -> np.ndarray:
    win = (t_ms >= 1.5) & (t_ms <= 50.0)  # the stimulus artifact (first 1.5 ms) left out of the scale
    return y[win] if np.any(win) else y


def waveform_drawing(traces: Sequence[tuple[np.ndarray, Any, float]], fs: float, pre: int, width: float = 52 * mm,
                     height: float = 15 * mm, caption: str = "", legend: Sequence[tuple[str, Any]] = ()) -> Drawing:
    """Epoch traces on one amplitude scale (``traces``: (samples, colour, stroke width)),
    the stimulus onset dashed, an amplitude scale bar and a 10 ms time bar; ``caption``
    bottom left (the values of the table), ``legend`` top left."""
    d = Drawing(width, height)
    d.add(Rect(0, 0, width, height, strokeColor=colors.HexColor("#cccccc"), fillColor=None, strokeWidth=0.3))
    ys = [np.asarray(t[0], dtype=float) for t in traces if t[0] is not None and len(t[0]) >= 2]
    if not ys:
        d.add(String(2, height / 2, "no waveform", fontSize=6))
        return d
    n = max(len(y) for y in ys)
    t_ms = (np.arange(n) - pre) / fs * 1000.0
    refs = np.concatenate([_window(t_ms[: len(y)], y) for y in ys])
    lo, hi = float(np.min(refs)), float(np.max(refs))
    span = (hi - lo) or 1.0
    mid = (hi + lo) / 2.0
    top, bottom = 7.0 if legend else 2.0, 7.5
    plot_h = height - top - bottom
    scale = plot_h / (span * 1.1)
    x0, x1 = t_ms[0], t_ms[-1]
    left, right = 1.0, width - 9.0

    def px(t: np.ndarray) -> np.ndarray:
        return (t - x0) / (x1 - x0) * (right - left) + left

    cy = bottom + plot_h / 2.0
    onset = float(px(np.array([0.0]))[0])
    d.add(Line(onset, bottom, onset, height - top, strokeColor=colors.HexColor("#aaaaaa"), strokeWidth=0.3,
               strokeDashArray=[1, 1]))
    for y, (_, colour, sw) in zip(ys, [t for t in traces if t[0] is not None and len(t[0]) >= 2], strict=True):
        xx = px(t_ms[: len(y)])
        yy = np.clip((y - mid) * scale + cy, 0.5, height - top + 1.0)  # the artifact stays out of the legend
        xx, yy = _minmax_decimate(xx, yy, 400)
        d.add(PolyLine(list(np.column_stack([xx, yy]).ravel()), strokeColor=colour, strokeWidth=sw))
    bar = _scale_uV(span)
    bar_h = bar * scale
    bx = width - 4.0
    d.add(Line(bx, cy - bar_h / 2, bx, cy + bar_h / 2, strokeColor=colors.black, strokeWidth=0.8))
    d.add(String(bx - 1.0, cy + bar_h / 2 + 1.0, f"{bar:g} {F.UV}", fontSize=4.8, textAnchor="end"))
    ms10 = 10.0 / (x1 - x0) * (right - left)
    d.add(Line(right - ms10, 2.0, right, 2.0, strokeColor=colors.black, strokeWidth=0.8))
    d.add(String(right - ms10 / 2, 3.2, "10 ms", fontSize=4.8, textAnchor="middle"))
    if caption:
        d.add(String(2.0, 1.8, caption, fontSize=5.6, fillColor=colors.HexColor("#333333")))
    lx = 2.0
    for text, colour in legend:
        d.add(String(lx, height - 5.5, text, fontSize=5.2, fillColor=colour))
        lx += stringWidth(text, "Helvetica", 5.2) + 6.0
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
                  height: float = 42 * mm, above: bool = False,
                  events: Sequence[Mapping[str, Any]] = ()) -> Drawing:
    """One trend plot. ``series``: {label, t, y, colour, marker}. ``baselines``: (t_from,
    t_to, value) segments drawn solid, with ``pct`` % of each drawn dashed. ``events``:
    {t_s, kind, priority}: a marker line with the event's letter at its time."""
    d = Drawing(width, height)
    left, bottom, right, top = 14 * mm, 6 * mm, 3 * mm, 7 * mm
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
    for tm in _nice_ticks(t0 / 60.0, t1 / 60.0, 8):
        tt = tm * 60.0
        if t0 <= tt <= t1:
            d.add(Line(X(tt), bottom, X(tt), bottom - 1.2, strokeColor=colors.black, strokeWidth=0.3))
            d.add(String(X(tt), bottom - 4, f"{tm:g}", fontSize=5.5, textAnchor="middle"))
    d.add(String(left + pw, 1, "case time (min)", fontSize=5.5, textAnchor="end"))
    d.add(String(1, bottom + ph + 3.5, ylabel, fontSize=6.5))
    _trend_baselines(d, baselines, pct, pct_label, X, Y, left, bottom, ph)
    for ev in events:
        t = ev.get("t_s")
        if t is None or not t0 <= float(t) <= t1:
            continue
        colour = PRIORITY_COLOURS.get(str(ev.get("priority")), GREY)
        x = X(float(t))
        d.add(Line(x, bottom, x, bottom + ph, strokeColor=colour, strokeWidth=0.6, strokeDashArray=[1.5, 1]))
        d.add(String(x, bottom + ph + 0.8, EVENT_LETTERS.get(str(ev.get("kind")), "E"), fontSize=5.5,
                     textAnchor="middle", fillColor=colour))
    _trend_series(d, series, X, Y, left + pw - 2, bottom + ph + 3.5)
    return d


def _trend_series(d: Drawing, series: list[dict[str, Any]], X: Callable[[float], float],
                  Y: Callable[[float], float], lx: float, label_y: float) -> None:
    for s in reversed(series):
        pts = [(t, v) for t, v in zip(s["t"], s["y"], strict=True) if v is not None]
        if not pts:
            continue
        tx = np.array([p[0] for p in pts], dtype=float)
        vy = np.array([p[1] for p in pts], dtype=float)
        px, py = _minmax_decimate(np.array([X(t) for t in tx]), np.array([Y(v) for v in vy]), 900)
        if s.get("marker"):
            for x, y in zip(px[:400], py[:400], strict=True):
                d.add(Rect(x - 0.6, y - 0.6, 1.2, 1.2, strokeColor=None, fillColor=s["colour"]))
        elif len(px) > 1:
            d.add(PolyLine(list(np.column_stack([px, py]).ravel()), strokeColor=s["colour"], strokeWidth=0.5))
        d.add(String(lx, label_y, s["label"], fontSize=5.5, textAnchor="end", fillColor=s["colour"]))
        lx -= 6 + stringWidth(s["label"], "Helvetica", 5.5)


def _trend_baselines(d: Drawing, baselines: list[tuple[float, float, float]], pct: float | None, pct_label: str,
                     X: Callable[[float], float], Y: Callable[[float], float], left: float, bottom: float,
                     ph: float) -> None:
    for b0, b1, v in baselines:
        d.add(Line(X(b0), Y(v), X(b1), Y(v), strokeColor=colors.HexColor("#2e7d32"), strokeWidth=0.7))
        if pct:
            d.add(Line(X(b0), Y(v * pct / 100.0), X(b1), Y(v * pct / 100.0), strokeColor=colors.HexColor("#e65100"),
                       strokeWidth=0.7, strokeDashArray=[2, 1.5]))
    if baselines:
        d.add(String(left + 2, bottom + ph - 6, "baseline", fontSize=5.5, fillColor=colors.HexColor("#2e7d32")))
        if pct:
            d.add(String(left + 28, bottom + ph - 6, pct_label, fontSize=5.5, fillColor=colors.HexColor("#e65100")))


# ----------------------------------------------------------------------------- page frame


class _NumberedCanvas(rl_canvas.Canvas):
    """Two passes so that every page can say "page n of m"."""

    header = ""
    footer = ""

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


SECTIONS = ("How each nerve ended the case", "Steps of both sides", "Events of the case", "Tube placement check",
            "INMSG steps", "Amplitude and latency trends", "Adverse events and what was done", "Nerve mapping",
            "Event, alarm and operator timeline", "Irritation episodes", "Notes", "Close-out", "Signatures",
            "Clinical settings in force")


def write_pdf(doc: Mapping[str, Any], path: Any, waveform_of: WaveformFn | None = None) -> list[str]:
    """Write the report; returns the layout problems (cells too narrow for their content),
    an empty list for a sound layout."""
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
    story += _conclusions(doc)
    story += _summary(doc)
    story += _events_summary(doc)
    story += _tube_check(doc)
    for side in ("L", "R"):
        story += _side_steps(doc, side, waveform_of)
    story += _trends(doc)
    story += _adverse(doc, waveform_of)
    story += _mapping(doc)
    story += _timeline(doc)
    story += _irritation(doc)
    story += _notes(doc)
    story += _closeout(doc)
    story += _signatures(doc)
    story += _settings(doc)
    problems = layout_problems(story)
    pdf = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=14 * mm, title=f"LNM case {case_id}", author="LNM",
                            subject="Intraoperative neuromonitoring case documentation (INMSG)")
    pdf.build(story, canvasmaker=Canvas)
    return problems


def _hash_lines(h: str) -> str:
    return f"{h[:32]}<br/>{h[32:]}" if len(h) > 32 else (h or "-")


def _header_block(doc: Mapping[str, Any]) -> list[Any]:
    case, journal = doc.get("case") or {}, doc.get("journal") or {}
    tube = case.get("tube") or {}
    tube_text = ", ".join(x for x in [
        str(tube.get("type")) if tube.get("type") else "",
        f"size {tube['size_mm']:g} mm" if isinstance(tube.get("size_mm"), (int, float)) else "",
        f"depth {tube['depth_cm']:g} cm at the teeth" if isinstance(tube.get("depth_cm"), (int, float)) else ""]
        if x) or "not recorded"
    an = case.get("anaesthesia") or {}
    relaxant = an.get("relaxant")
    an_parts = [f"relaxant {relaxant}" if relaxant else "relaxant not recorded"]
    if an.get("relaxant_time"):
        an_parts.append(f"given at {an['relaxant_time']}")
    tof = []
    if an.get("tof_count") is not None:
        tof.append(f"count {an['tof_count']}/4")
    if an.get("tof_ratio_pct") is not None:
        tof.append(f"ratio {F.pct_text(an['tof_ratio_pct'])}")
    an_parts.append("train-of-four " + (", ".join(tof) if tof else "not recorded"))
    verified = journal.get("verified")
    if verified is True:
        vtext, vcol = "hash chain intact", GOOD
    elif verified is False:
        vtext, vcol = f"ALTERED: {journal.get('verify_problem')}", BAD
    else:
        vtext, vcol = "not verified", colors.black
    surgeon = case.get("surgeon") if case.get("surgeon") else ("(pseudonymised)" if (doc.get("generated") or {}).get(
        "pseudonymised") else "not recorded")
    sides = " then ".join(F.side_word(s) for s in case.get("planned_sides") or []) or "not recorded"
    b = lambda text: _p(text, CELL_B)  # noqa: E731 - the labels of the header block
    rows = [
        ["Patient (pseudonym)", case.get("patient_id") or "-", "Case id", case.get("case_id") or "-"],
        ["Date", case.get("date") or "-", "Procedure", case.get("procedure") or "not recorded"],
        ["Planned sides", sides, "Surgeon", surgeon],
        ["Anaesthesia", "; ".join(an_parts), "Tube", tube_text],
        ["Case opened (UTC)", (case.get("opened") or "-")[:19].replace("T", " "),
         "Case closed (UTC)", (case.get("closed") or "still open")[:19].replace("T", " ")],
        ["Duration", F.clock(case.get("duration_s")), "Software", f"LNM {case.get('software_version') or '?'}"],
        ["Journal", Paragraph(_coloured(vtext, vcol), CELL), "Last entry hash",
         Paragraph(_hash_lines(journal.get("last_hash") or ""), SMALL)],
    ]
    rows = [[b(r[0]), r[1], b(r[2]), r[3]] for r in rows]
    t = _table(rows, [30 * mm, 58 * mm, 26 * mm, 61 * mm], header_rows=0, extra=[
        ("BACKGROUND", (0, 0), (0, -1), HEAD_BG), ("BACKGROUND", (2, 0), (2, -1), HEAD_BG)])
    return [Paragraph("Neuromonitoring case documentation (INMSG)", H1), t, Spacer(1, 2 * mm)]


def _events_words(counts: Mapping[str, Any], with_info: bool = True) -> str:
    """``2 high (loss of signal 2); 1 medium (no stimulus current 1)``, or ``none``."""
    by_kind = counts.get("by_kind") or {}
    parts = []
    for prio in F.PRIORITY_ORDER:
        n = (counts.get("by_priority") or {}).get(prio) or 0
        if not n or (prio == "info" and not with_info):
            continue
        kinds = [f"{F.event_title(k).split(' (')[0].lower()} {c}" for k, c in by_kind.items()
                 if _priority_of(k) == prio]
        parts.append(f"{n} {F.words(F.PRIORITY_WORDS, prio)}" + (f" ({', '.join(kinds)})" if kinds else ""))
    return "; ".join(parts) or "none"


_KIND_PRIORITY = {"loss_of_signal": "high", "combined_event": "high", "amplitude_decrease": "medium",
                  "no_current": "medium", "poor_baseline": "low", "signal_recovered": "info",
                  "nonrecurrent_nerve_suspected": "info", "baseline_set": "info",
                  "neuromuscular_blockade_suspected": "medium", "nmb_suspected": "medium"}


def _priority_of(kind: str) -> str:
    return _KIND_PRIORITY.get(kind, "info")


def _missing_words(missing: Sequence[Mapping[str, Any]], asked: bool) -> str:
    """``R2, V2: not done; L2: after extubation``: the missing steps grouped by their reason."""
    if not missing:
        return "none"
    groups: dict[str, list[str]] = {}
    for m in missing:
        reason = m.get("reason") or ("no reason given" if asked else "not asked at close")
        groups.setdefault(reason, []).append(str(m["step"]))
    return "; ".join(f"{', '.join(steps)}: {reason}" for reason, steps in groups.items())


def _conclusions(doc: Mapping[str, Any]) -> list[Any]:
    sides = doc.get("sides") or {}
    closeout = doc.get("closeout") or {}
    rows = [["Side", "Final signal status (compared with L2)", "V2 / V1", "Events (by priority)",
             "INMSG steps missing (reason)"]]
    extra: list[tuple] = []
    order = [s for s in (doc.get("case") or {}).get("planned_sides") or [] if s in ("L", "R")]
    order += [s for s in ("L", "R") if s not in order and (sides.get(s) or {}).get("has_data")]
    for side in order or ["L", "R"]:
        s = sides.get(side) or {}
        c = s.get("conclusion") or {}
        status = c.get("status") or "unknown"
        colour = STATUS_COLOURS.get(status, colors.black)
        label = F.side_word(side).capitalize() + ("" if s.get("planned") else " (not planned)")
        text = Paragraph(_coloured(STATUS_WORDS.get(status, status.upper()), colour, bold=True) + "<br/>"
                         + escape(c.get("text") or ""), CELL)
        events = s.get("events") or {}
        rows.append([Paragraph(f"<b>{escape(label)}</b>", CELL_BIG), text,
                     F.pct_text(s.get("v2_of_v1_pct"), none="not available"), _events_words(events),
                     _missing_words(s.get("missing_steps") or [], bool(closeout.get("asked")))])
        if (events.get("by_priority") or {}).get("high"):
            _colour_cell(extra, 3, len(rows) - 1, BAD)
    t = _table(rows, [16 * mm, 72 * mm, 16 * mm, 34 * mm, 37 * mm], extra=extra)
    return [Paragraph("How each nerve ended the case", H2), t]


def _step_text(v: Mapping[str, Any] | None) -> str:
    if not v:
        return "not recorded"
    if "finding" in v:
        return F.finding_text(v.get("finding"))
    cur = F.ma_text(v.get("set_mA"))
    if v.get("delivered_mA") is not None:
        cur += f" (delivered {F.ma_text(v.get('delivered_mA'))})"
    if v.get("response") is False:
        return f"NO response ({F.amp_text(v.get('amplitude_uV'))}) at {cur}"
    return f"{F.amp_text(v.get('amplitude_uV'))}, {F.lat_text(v.get('latency_ms'))} at {cur}"


def _summary(doc: Mapping[str, Any]) -> list[Any]:
    sides = doc.get("sides") or {}
    rows = [["Side", *CORE_STEPS]]
    extra: list[tuple] = []
    for side in ("L", "R"):
        s = sides.get(side) or {}
        steps = s.get("steps") or {}
        label = F.side_word(side).capitalize() + ("" if s.get("planned") else " (not planned)")
        rows.append([label] + [_step_text(steps.get(k)) for k in CORE_STEPS])
        for c, k in enumerate(CORE_STEPS, start=1):
            v = steps.get(k)
            if v is None:
                _colour_cell(extra, c, len(rows) - 1, GREY)
            elif v.get("response") is False or v.get("finding") in F.FINDING_IMPAIRED:
                _colour_cell(extra, c, len(rows) - 1, BAD)
    t = _table(rows, [16 * mm, 21 * mm, 29 * mm, 29 * mm, 29 * mm, 29 * mm, 22 * mm], extra=extra)
    return [Paragraph("Steps of both sides", H2), t,
            _p("Amplitude peak-to-peak, latency to the first major peak, at the set current with the current the "
               "stimulator measured as delivered.", SMALL)]


def _events_summary(doc: Mapping[str, Any]) -> list[Any]:
    counts = doc.get("events") or {}
    st = doc.get("stimuli") or {}
    rows = [["", "Events"]]
    rows.append(["All events", f"{counts.get('total', 0)}: {_events_words(counts)}"])
    for side in ("L", "R"):
        rows.append([F.side_word(side).capitalize(),
                     _events_words(((doc.get("sides") or {}).get(side) or {}).get("events") or {})])
    rows.append(["Stimuli", f"{st.get('total', 0)} ({st.get('valid', 0)} measured, {st.get('invalid', 0)} not "
                            f"measurable, {st.get('responses', 0)} responses; probe {st.get('PROBE', 0)}, continuous "
                            f"vagal {st.get('APS', 0)})"])
    cau = (doc.get("cautery") or {}).get("episodes") or 0
    rows.append(["Electrocautery", f"{cau} periods detected (stimuli meanwhile not measured)"])
    return [Paragraph("Events of the case", H2), _table(rows, [28 * mm, 147 * mm])]


def _tube_check(doc: Mapping[str, Any]) -> list[Any]:
    checks = doc.get("tube_check") or []
    out: list[Any] = [CondPageBreak(30 * mm), Paragraph("Tube placement check", H2)]
    if not checks:
        return out + [_p("No tube check recorded.", BODY)]
    rows = [["Time", "Result", "Impedances (kOhm)", "Imbalance L / R (kOhm)", "Lead off", "Breathing variation",
             "Accepted despite failure"]]
    extra: list[tuple] = []
    for i, c in enumerate(checks, start=1):
        imp = c.get("impedances_ohm") or {}
        imp_text = ", ".join(f"{_electrode(k)} {'off' if v is not None and v < 0 else f'{(v or 0) / 1000.0:.1f}'}"
                             for k, v in imp.items())
        imb = c.get("imbalance_ohm") or {}
        imb_text = " / ".join("-" if imb.get(s) is None else f"{imb[s] / 1000.0:.2f}" for s in ("L", "R"))
        bv = c.get("breathing_variation")
        bv_text = "<br/>".join(escape(f"{k}: {side_text(v)}") for k, v in bv.items()) \
            if isinstance(bv, dict) else ("not measured" if bv is None else escape(side_text(bv)))
        ov = c.get("override")
        ov_text = f"{ov.get('who') or ''}: {ov.get('reason') or ''}" if isinstance(ov, dict) else "-"
        rows.append([F.clock(c.get("t_s")), "passed" if c.get("passed") else "FAILED", imp_text, imb_text,
                     ", ".join(_electrode(x) for x in c.get("lead_off") or []) or "none", Paragraph(bv_text, CELL),
                     ov_text])
        _colour_cell(extra, 1, i, GOOD if c.get("passed") else BAD)
    out.append(_table(rows, [13 * mm, 13 * mm, 44 * mm, 20 * mm, 16 * mm, 42 * mm, 27 * mm], extra=extra))
    if checks[-1].get("message"):
        out.append(_p(checks[-1]["message"], SMALL))
    return out


_ELECTRODES = {"L_POS": "left +", "L_NEG": "left -", "R_POS": "right +", "R_NEG": "right -", "GROUND": "ground",
               "STIM_RETURN": "stimulus return"}


def _electrode(key: Any) -> str:
    return _ELECTRODES.get(str(key), F.words({}, key))


def _epoch(waveform_of: WaveformFn | None, seq: Any, side: str) -> tuple[np.ndarray, float, int] | None:
    if waveform_of is None or seq is None:
        return None
    got = waveform_of(int(seq))
    if got is None:
        return None
    samples, fs, pre, labels = got
    ch = labels.index(f"EMG {side}") if f"EMG {side}" in labels else 0
    return samples[min(ch, samples.shape[0] - 1)], float(fs), int(pre)


def _caption(v: Mapping[str, Any]) -> str:
    if v.get("response") is False:
        return f"no response, {F.amp_text(v.get('amplitude_uV'))} p-p"
    return f"{F.amp_text(v.get('amplitude_uV'))} p-p, {F.lat_text(v.get('latency_ms'))}"


def _side_steps(doc: Mapping[str, Any], side: str, waveform_of: WaveformFn | None) -> list[Any]:
    s = (doc.get("sides") or {}).get(side) or {}
    steps = s.get("steps") or {}
    name = F.side_word(side).capitalize()
    title = f"INMSG steps, {name.lower()} side" + ("" if s.get("planned") else " (side not planned)")
    if not s.get("planned") and not s.get("has_data"):
        return [Paragraph(title, H2), _p("Not planned, and nothing was recorded on this side.", BODY)]
    rows = [["Step", "Time", "Amplitude", "Latency", "Current set (delivered)", "Response", "Waveform"]]
    extra: list[tuple] = []
    colour = SIDE_COLOURS.get(side, colors.black)
    for step in PROCEDURE_ORDER:
        v = steps.get(step)
        if v is None and step not in CORE_STEPS:
            continue
        r = len(rows)
        label = Paragraph(f"<b>{step}</b><br/>{escape(F.STEP_WORDS.get(step, ''))}", SMALL)
        if step in ("L1", "L2"):
            finding = (v or {}).get("finding")
            rows.append([label, F.clock((v or {}).get("t_s")), f"laryngoscopy: {F.finding_text(finding)}", "", "", "",
                         ""])
            extra.append(("SPAN", (2, r), (6, r)))
            if finding in F.FINDING_IMPAIRED:
                _colour_cell(extra, 2, r, BAD)
            continue
        if v is None:
            rows.append([label, "-", "not recorded", "", "", "", ""])
            extra.append(("SPAN", (2, r), (6, r)))
            _colour_cell(extra, 2, r, GREY)
            continue
        ep = _epoch(waveform_of, v.get("stimulus_seq"), side)
        wave: Any = ""
        if ep is not None:
            wave = waveform_drawing([(ep[0], colour, 0.5)], ep[1], ep[2], caption=_caption(v))
        resp = v.get("response")
        rows.append([label, F.clock(v.get("t_s")), F.amp_text(v.get("amplitude_uV")), F.lat_text(v.get("latency_ms")),
                     F.current_text(v.get("set_mA"), v.get("delivered_mA")),
                     "yes" if resp else ("NO" if resp is False else "-"), wave])
        if resp is False:
            _colour_cell(extra, 5, r, BAD)
        if F.delivered_low(v.get("set_mA"), v.get("delivered_mA")):
            _colour_cell(extra, 4, r, BAD)
    t = _table(rows, [22 * mm, 13 * mm, 17 * mm, 15 * mm, 26 * mm, 16 * mm, 56 * mm], extra=extra)
    notes = []
    if s.get("v2_of_v1_pct") is not None:
        notes.append(f"V2 amplitude is {F.pct_text(s['v2_of_v1_pct'])} of V1.")
    if s.get("r2_reduction_pct") is not None:
        notes.append(f"R2 proximal against distal: {F.pct_text(s['r2_reduction_pct'])} lower.")
    out: list[Any] = [CondPageBreak(60 * mm), Paragraph(title, H2), t]
    if notes:
        out.append(_p(" ".join(notes), SMALL))
    v1, v2 = steps.get("V1"), steps.get("V2")
    e1 = _epoch(waveform_of, (v1 or {}).get("stimulus_seq"), side)
    e2 = _epoch(waveform_of, (v2 or {}).get("stimulus_seq"), side)
    if e1 is not None and e2 is not None:
        overlay = waveform_drawing([(e1[0], BASELINE_GREY, 0.6), (e2[0], colour, 0.6)], e1[1], e1[2],
                                   width=90 * mm, height=26 * mm,
                                   legend=[(f"V1 {F.amp_text(v1.get('amplitude_uV'))}", BASELINE_GREY),
                                           (f"V2 {F.amp_text(v2.get('amplitude_uV'))}", colour)])
        out += [Spacer(1, 1.5 * mm), KeepTogether([_p(f"V2 drawn over V1, {name.lower()} vagus (same scale)", SMALL),
                                                   overlay])]
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
    probe_colours = {"VAGUS": colors.HexColor("#6a1b9a"), "RLN": colors.HexColor("#00838f"),
                     "EBSLN": colors.HexColor("#8d6e63")}
    for side in ("L", "R"):
        tr = trends.get(side) or {}
        series_amp, series_lat = [], []
        aps = tr.get("aps")
        ts_all: list[float] = []
        if aps:
            for series, key in ((series_amp, "amplitude_uV"), (series_lat, "latency_ms")):
                series.append({"label": "continuous vagal", "t": aps["t_s"], "y": aps[key],
                               "colour": SIDE_COLOURS[side]})
            ts_all += aps["t_s"]
        for site, ser in (tr.get("probe") or {}).items():
            for series, key in ((series_amp, "amplitude_uV"), (series_lat, "latency_ms")):
                series.append({"label": f"probe {F.words(F.SITE_WORDS, site)}", "t": ser["t_s"], "y": ser[key],
                               "colour": probe_colours.get(site, colors.grey), "marker": True})
            ts_all += ser["t_s"]
        if not ts_all:
            continue
        anything = True
        t_range = (0.0, max(t_end, max(ts_all)))
        baselines = tr.get("baselines") or []
        events = tr.get("events") or []
        name = F.side_word(side).capitalize()
        amp = trend_drawing(series_amp, _baseline_segments(baselines, "amplitude_uV", t_range[1]), amp_pct,
                            f"{amp_pct:g} % of baseline", f"{name}: amplitude ({F.UV} peak-to-peak)", t_range,
                            events=events)
        lat = trend_drawing(series_lat, _baseline_segments(baselines, "latency_ms", t_range[1]), lat_pct,
                            f"{lat_pct:g} % of baseline", f"{name}: latency (ms)", t_range, above=True, events=events)
        out.append(KeepTogether([amp, Spacer(1, 2 * mm), lat, Spacer(1, 3 * mm)]))
    if not anything:
        out.append(_p("No valid stimuli recorded.", BODY))
    else:
        out.append(_p("Event markers: " + ", ".join(f"{v} {F.event_title(k).split(' (')[0].lower()}"
                                                    for k, v in EVENT_LETTERS.items())
                      + "; red high, amber medium priority.", SMALL))
    return out


def _adverse(doc: Mapping[str, Any], waveform_of: WaveformFn | None) -> list[Any]:
    eps = doc.get("adverse_events") or []
    out: list[Any] = [CondPageBreak(40 * mm), Paragraph("Adverse events and what was done", H2)]
    if not eps:
        return out + [_p("No loss of signal, combined event, amplitude decrease or neuromuscular blockade.", BODY)]
    rows = [["Time", "Where", "Event", "Acknowledged", "Troubleshooting", "Recovery", "Staging decision"]]
    for ep in eps:
        ack = ep.get("acknowledged")
        ack_text = f"{F.clock(ack['t_s'])} by {ack.get('who') or 'unknown'} (after {F.duration(ack.get('after_s'))})" \
            if ack else "not acknowledged"
        ts = "; ".join(f"{F.words(F.CHECK_WORDS, x['check'])}: {F.words(F.ANSWER_WORDS, x['answer'])}"
                       + (" (monitor)" if x.get("who") == "monitor" else "")
                       for x in ep.get("troubleshooting") or []) or "none"
        lt = ep.get("los_type")
        if lt:
            ts += f"; {F.LOS_TYPE_WORDS.get(lt['type'], '')}"
        rec = f"after {F.duration(ep['recovery_s'])}" if ep.get("recovery_s") is not None else "NOT recovered"
        gaps = ep.get("interruptions") or []
        if gaps:
            rec += "; interrupted " + ", ".join(f"{F.clock(g.get('ended_t_s'))}-{F.clock(g.get('resumed_t_s'))}"
                                                for g in gaps)
        st = ep.get("staging") or []
        decided = [x for x in st if x.get("decision")]
        st_text = (f"{F.words(F.DECISION_WORDS, decided[-1]['decision'])}: {decided[-1].get('reason') or ''}"
                   if decided else ("recommended, not decided" if st else "-"))
        d = ep.get("detail") or {}
        what = ep.get("title") or F.event_title(ep.get("kind"))
        if ep.get("kind") == "loss_of_signal":
            cur = F.current_text(d.get("set_mA"), d.get("delivered_mA"))
            what += f" ({F.amp_text(d.get('amplitude_uV'))} at {cur})"
        where = "both sides" if len(ep.get("sides") or []) > 1 else F.site_side(ep.get("site"), ep.get("side"))
        rows.append([F.clock(ep.get("t_s")), where, what, ack_text, ts, rec, st_text])
    out.append(_table(rows, [13 * mm, 16 * mm, 30 * mm, 24 * mm, 44 * mm, 18 * mm, 30 * mm]))
    overlays = []
    for ep in eps:
        cur = _epoch(waveform_of, ep.get("stimulus_seq"), ep.get("side"))
        base = ep.get("baseline") or {}
        ref = _epoch(waveform_of, base.get("stimulus_seq"), ep.get("side"))
        if cur is None or ref is None:
            continue
        colour = SIDE_COLOURS.get(ep.get("side"), colors.black)
        label = F.event_title(ep.get("kind")).split(" (")[0]
        mean = " mean" if base.get("source") == "APS" else ""
        d = waveform_drawing([(ref[0], BASELINE_GREY, 0.6), (cur[0], colour, 0.6)], ref[1], ref[2], width=84 * mm,
                             height=26 * mm,
                             legend=[(f"baseline {F.clock(base.get('t_s'))},{mean} "
                                      f"{F.amp_text(base.get('amplitude_uV'))}", BASELINE_GREY),
                                     (f"{label.lower()} {F.clock(ep.get('t_s'))}", colour)])
        overlays.append([_p(f"{label}, {F.site_side(ep.get('site'), ep.get('side'))}: the stimulus that completed "
                            "it drawn over the site's baseline", SMALL), d])
    if overlays:
        grid = [overlays[i:i + 2] + [""] * (2 - len(overlays[i:i + 2])) for i in range(0, len(overlays), 2)]
        t = Table(grid, colWidths=[87 * mm, 87 * mm], hAlign="LEFT")
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
        out += [Spacer(1, 2 * mm), t]
    return out


def _mapping(doc: Mapping[str, Any]) -> list[Any]:
    sides = doc.get("sides") or {}
    mapped = [s for s in ("L", "R") if ((sides.get(s) or {}).get("mapping") or {}).get("points")]
    out: list[Any] = [CondPageBreak(35 * mm), Paragraph("Nerve mapping", H2)]
    if not mapped:
        return out + [_p("No nerve mapping recorded.", BODY)]
    for side in mapped:
        m = sides[side]["mapping"]
        rows = [["Distance from the laryngeal entry", "Response", "Amplitude", "Latency", "Current", "Label",
                 "Time"]]
        extra: list[tuple] = []
        for pt in m["points"]:
            rows.append([F.mm_text(pt.get("position_mm")), "yes" if pt.get("response") else "NO",
                         F.amp_text(pt.get("amplitude_uV"), none="not measured"), F.lat_text(pt.get("latency_ms")),
                         F.current_text(pt.get("set_mA"), pt.get("delivered_mA")), pt.get("label") or "",
                         F.clock(pt.get("t_s"))])
            if not pt.get("response"):
                _colour_cell(extra, 1, len(rows) - 1, BAD)
        between = m.get("lesion_between_mm")
        lesion = (f"Lesion between {F.mm_text(between[0])} and {F.mm_text(between[1])} from the laryngeal entry"
                  if between else m.get("text") or "")
        out += [_p(f"{F.side_word(side).capitalize()} RLN: {F.LOS_TYPE_WORDS.get(m.get('type'), 'type not determined')}"
                   f". {lesion}", BODY),
                _table(rows, [30 * mm, 17 * mm, 19 * mm, 17 * mm, 40 * mm, 30 * mm, 16 * mm], extra=extra),
                Spacer(1, 2 * mm)]
    return out


def _timeline(doc: Mapping[str, Any]) -> list[Any]:
    items = doc.get("timeline") or []
    out: list[Any] = [CondPageBreak(40 * mm), Paragraph("Event, alarm and operator timeline", H2)]
    if not items:
        return out + [_p("Nothing recorded.", BODY)]
    rows = [["Case time", "UTC", "What", "Who"]]
    extra: list[tuple] = []
    for i, it in enumerate(items, start=1):
        who = it.get("who") or ""
        rows.append([F.clock(it.get("t_s")), _wall_time(it.get("wall")), it.get("text"),
                     "monitor" if who in ("rules", "engine", "system", "resume") else who])
        high = (it.get("type") == "rule_event" and it.get("priority") == "high") or (
            it.get("type") == "alarm" and it.get("transition") in ("raised", "raise", "escalated"))
        if high or it.get("type") == "storage":
            _colour_cell(extra, 2, i, BAD)
        elif it.get("type") == "operator":
            _colour_cell(extra, 2, i, colors.HexColor("#333333"))
    out.append(_table(rows, [15 * mm, 14 * mm, 124 * mm, 22 * mm], extra=extra))
    return out


def _wall_time(wall: Any) -> str:
    return str(wall)[11:19] if wall else "-"


def _irritation(doc: Mapping[str, Any]) -> list[Any]:
    eps = doc.get("irritation") or []
    out: list[Any] = [CondPageBreak(30 * mm), Paragraph("Irritation episodes (free-running EMG)", H2)]
    cau = (doc.get("cautery") or {}).get("episodes") or 0
    if not eps:
        out.append(_p("No irritation episodes recorded.", BODY))
    else:
        rows = [["Onset", "Side", "Pattern", "Duration", "Peak"]]
        for e in eps:
            rows.append([F.clock(e.get("onset_s")), F.side_word(e.get("side")), F.words({}, e.get("kind")),
                         f"{e['duration_s']:.1f} s" if e.get("duration_s") is not None else "-",
                         F.amp_text(e.get("peak_uV"))])
        out.append(_table(rows, [18 * mm, 14 * mm, 25 * mm, 22 * mm, 22 * mm]))
    out.append(_p(f"Electrocautery periods detected: {cau}.", SMALL))
    return out


def _notes(doc: Mapping[str, Any]) -> list[Any]:
    notes = doc.get("notes") or []
    out: list[Any] = [Paragraph("Notes", H2)]
    if not notes:
        return out + [_p("No notes.", BODY)]
    for n in notes:
        who = f" ({n['who']})" if n.get("who") else ""
        out.append(Paragraph(f"<b>{F.clock(n.get('t_s'))}</b>{escape(who)}: {escape(str(n.get('text')))}", BODY))
    return out


def _closeout(doc: Mapping[str, Any]) -> list[Any]:
    co = doc.get("closeout") or {}
    missing = co.get("missing") or []
    out: list[Any] = [CondPageBreak(30 * mm), Paragraph("Close-out: INMSG steps still missing", H2)]
    if not missing:
        return out + [_p("Every INMSG step (L1, V1, R1, R2, V2, L2) of the planned sides is recorded.", BODY)]
    rows = [["Side", "Step", "What", "Reason given at close"]]
    for m in missing:
        reason = m.get("reason") or ("no reason given" if co.get("asked") else "not asked (closed without the "
                                                                               "close-out)")
        rows.append([F.side_word(m.get("side")), m.get("step"), m.get("what") or F.STEP_WORDS.get(m.get("step"), ""),
                     reason])
    return out + [_table(rows, [16 * mm, 14 * mm, 55 * mm, 90 * mm])]


def _signatures(doc: Mapping[str, Any]) -> list[Any]:
    rows = []
    for s in doc.get("signatures") or []:
        rows.append([s.get("role"), s.get("name") or "", "Signature: ______________________",
                     "Date: ____________"])
    t = Table(rows, colWidths=[45 * mm, 40 * mm, 56 * mm, 34 * mm], rowHeights=[12 * mm] * len(rows), hAlign="LEFT")
    t.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 8), ("VALIGN", (0, 0), (-1, -1), "BOTTOM")]))
    return [KeepTogether([Paragraph("Signatures", H2), t])]


def _settings(doc: Mapping[str, Any]) -> list[Any]:
    from app.settings import SCHEMA

    st = doc.get("settings") or {}
    values = st.get("values") or {}
    out: list[Any] = [CondPageBreak(50 * mm), Paragraph("Clinical settings in force at the start of the case", H2)]
    if not values:
        return out + [_p("No settings recorded.", BODY)]
    keys = [k for k in F.SETTING_WORDS if k in values]
    rows = [["Setting", "Value", "Setting", "Value"]]
    half = (len(keys) + 1) // 2

    def val(k: str) -> str:
        spec = SCHEMA.get(k)
        text = F.setting_value(values[k], spec.unit if spec else "")
        return text + (" (changed from the default)" if spec is not None and values[k] != spec.default else "")

    for i in range(half):
        a = keys[i]
        b = keys[i + half] if i + half < len(keys) else None
        rows.append([F.setting_name(a), val(a), F.setting_name(b) if b else "", val(b) if b else ""])
    out.append(_table(rows, [54 * mm, 33 * mm, 54 * mm, 34 * mm]))
    src = st.get("source")
    profile = f", surgeon profile {st['profile']}" if st.get("profile") else ""
    source = f"Source: {src}{profile}. " if src else ""
    out.append(_p(source + "Wiring, devices and link timing are left out here; they are in the case JSON "
                  "(service).", SMALL))
    changes = st.get("changes") or []
    if changes:
        rows = [["Case time", "Setting", "From", "To", "Who"]]
        for c in changes:
            unit = c.get("unit") or ""
            rows.append([F.clock(c.get("t_s")), F.setting_name(c.get("key") or ""), F.setting_value(c.get("old"), unit),
                         F.setting_value(c.get("new"), unit), c.get("who") or ""])
        out += [Paragraph("Setting changes during the case", H2), _table(rows, [18 * mm, 67 * mm, 30 * mm, 30 * mm,
                                                                               30 * mm])]
    return out
