"""Live plots drawn with Kivy vertex instructions updated in place.

Owns: ``EpochPlot`` (the last stimulus epoch of one side), ``EmgStrip`` (free-running
EMG min/max envelope) and ``SeriesPlot`` (trend and recovery plots with reference
lines). Each plot builds its background, grid and ``Line`` instructions once (again only
when its size changes) and then only assigns new ``points`` to the same ``Line``: no
canvas is cleared per frame, no widget is created per sample, and the number of points
never exceeds about two per pixel column.
May import: Kivy, numpy, ``app.ui.data``, ``app.ui.present``.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import numpy as np
from kivy.app import App
from kivy.graphics import Color, InstructionGroup, Line
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.label import Label

from app.ui import present as P

PAL = P.PALETTE


def _fs() -> float:
    app = App.get_running_app()
    return float(getattr(app, "fs_small", 14))


class _Plot(FloatLayout):
    """Background + grid (rebuilt on resize) and data lines (points replaced in place)."""

    caption = StringProperty("")
    pad_left = NumericProperty(0)
    pad_bottom = NumericProperty(0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._bg = InstructionGroup()
        self._data = InstructionGroup()
        self.canvas.before.add(self._bg)
        self.canvas.add(self._data)
        self._labels: list[Label] = []
        self._caption = Label(text=self.caption, font_size=_fs(), color=PAL["muted"], size_hint=(None, None),
                              halign="left", valign="top")
        self.add_widget(self._caption)
        self.bind(pos=self._relayout, size=self._relayout, caption=self._relayout)
        self.frames_drawn = 0

    # plot area in window coordinates (below the caption, above an axis label)
    def area(self) -> tuple[float, float, float, float]:
        top = _fs() * 1.25 if self.caption else 2.0
        bottom = self.pad_bottom + (_fs() * 1.25 if getattr(self, "x_label", "") else 0.0)
        x0 = self.x + self.pad_left
        y0 = self.y + bottom
        return x0, y0, max(1.0, self.width - self.pad_left - 2), max(1.0, self.height - bottom - top)

    def _label(self, text: str, x: float, y: float, color: Sequence[float] | None = None, anchor: str = "left") -> None:
        lab = Label(text=text, font_size=_fs(), color=color or PAL["muted"], size_hint=(None, None))
        lab.texture_update()
        lab.size = lab.texture_size
        lab.y = y - lab.height / 2
        lab.x = x if anchor == "left" else x - lab.width
        self.add_widget(lab)
        self._labels.append(lab)

    def _relayout(self, *_: Any) -> None:
        for lab in self._labels:
            self.remove_widget(lab)
        self._labels = []
        self._bg.clear()  # no filled background: drawn on its parent's colour (less to fill per frame)
        self._caption.text = self.caption
        self._caption.font_size = _fs()
        self._caption.texture_update()
        self._caption.size = self._caption.texture_size
        self._caption.pos = (self.x + self.pad_left + 4, self.top - self._caption.height - 2)
        self.build_static()
        self.redraw()

    def build_static(self) -> None:  # grid, reference lines, axis labels
        pass

    def redraw(self) -> None:
        pass


class EpochPlot(_Plot):
    """The last epoch of one side, -5 to 50 ms after the stimulus, at the scale the nurse
    chose (always written on the plot), with the side's reference waveform drawn faintly
    under it. A trace beyond the scale is marked "beyond scale" (never silently clipped)."""

    side = StringProperty("L")
    t_min = NumericProperty(-5.0)
    t_max = NumericProperty(50.0)
    beyond = BooleanProperty(False)
    show_labels = BooleanProperty(True)  # False: the scale is written next to the plot instead

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.scale = 500.0
        self._t = np.zeros(0)
        self._y = np.zeros(0)
        self._rt: np.ndarray | None = None
        self._ry: np.ndarray | None = None
        rgba = PAL[f"side_{self.side}"]
        self._ref_color = Color(rgba[0], rgba[1], rgba[2], 0.38)
        self._ref_line = Line(points=[], width=1)
        self._color = Color(*rgba)
        self._line = Line(points=[], width=1)
        for ins in (self._ref_color, self._ref_line, self._color, self._line):
            self._data.add(ins)
        self._beyond_label = Label(text="", font_size=_fs(), bold=True, color=PAL["warn"], size_hint=(None, None))
        self.add_widget(self._beyond_label)
        self.bind(side=self._recolour)

    def _recolour(self, *_: Any) -> None:
        r, g, b, _a = PAL[f"side_{self.side}"]
        self._color.rgba = (r, g, b, 1.0)
        self._ref_color.rgba = (r, g, b, 0.38)

    def build_static(self) -> None:
        x0, y0, w, h = self.area()
        g = self._bg
        g.add(Color(*PAL["grid"]))
        for t in range(0, int(self.t_max) + 1, 10):  # a line every 10 ms from the stimulus
            x = x0 + (t - self.t_min) / (self.t_max - self.t_min) * w
            g.add(Line(points=[x, y0, x, y0 + h], width=1))
        g.add(Color(*PAL["line"]))
        g.add(Line(points=[x0, y0 + h / 2, x0 + w, y0 + h / 2], width=1))
        if self.show_labels:
            self._label(f"±{self.scale:.0f} µV", x0 + 3, y0 + h - _fs() * 0.6, color=PAL["text"])
            self._label(f"{int(self.t_max)} ms", x0 + w - 2, y0 + _fs() * 0.6, anchor="right")
        self._beyond_label.font_size = _fs()
        self._beyond_label.texture_update()
        self._beyond_label.size = self._beyond_label.texture_size
        self._beyond_label.pos = (x0 + w - self._beyond_label.width - 2, y0 + 1)
        self._draw_reference()

    def set_scale(self, scale: float) -> None:
        """Draw at ``scale`` µV (half the height of the plot)."""
        if scale != self.scale:
            self.scale = float(scale)
            self._relayout()

    def set_epoch(self, t_ms: np.ndarray | None, uV: np.ndarray | None) -> None:
        """The live epoch (None: nothing to show)."""
        self._t = np.zeros(0) if t_ms is None else t_ms
        self._y = np.zeros(0) if uV is None else uV
        self.redraw()

    def set_reference(self, t_ms: np.ndarray | None, uV: np.ndarray | None) -> None:
        """The reference waveform drawn faintly under the live one (None: none)."""
        self._rt, self._ry = t_ms, uV
        self._draw_reference()

    def _points(self, t: np.ndarray, y: np.ndarray) -> tuple[list[float], bool]:
        x0, y0, w, h = self.area()
        keep = (t >= self.t_min) & (t <= self.t_max)
        t, y = t[keep], y[keep]
        step = max(1, int(len(t) // max(1, 2 * w)))
        t, y = t[::step], y[::step]
        rel = y / self.scale
        after = rel[t >= 2.0]  # (the stimulus artifact of the first 2 ms is always beyond any scale)
        beyond = bool(len(after) and float(np.max(np.abs(after))) > 1.0)
        pts = np.empty(2 * len(t), dtype=np.float64)
        pts[0::2] = x0 + (t - self.t_min) / (self.t_max - self.t_min) * w
        pts[1::2] = y0 + h / 2 + np.clip(rel, -1.0, 1.0) * (h / 2 - 1)
        return pts.tolist(), beyond

    def _draw_reference(self) -> None:
        if self._rt is None or self._ry is None or not len(self._rt):
            self._ref_line.points = []
            return
        self._ref_line.points = self._points(self._rt, self._ry)[0]

    def redraw(self) -> None:
        if not len(self._t):
            self._line.points = []
            beyond = False
        else:
            self._line.points, beyond = self._points(self._t, self._y)
            self.frames_drawn += 1
        if beyond != self.beyond:
            self.beyond = beyond
            self._beyond_label.text = "beyond scale" if beyond else ""
            self._beyond_label.texture_update()
            self._beyond_label.size = self._beyond_label.texture_size
            self._beyond_label.x = self.area()[0] + self.area()[2] - self._beyond_label.width - 2


class EmgStrip(_Plot):
    """Free-running EMG of one channel as a min/max envelope, the last ``seconds``, at the
    scale the nurse chose (written on the strip)."""

    side = StringProperty("L")
    seconds = NumericProperty(3.0)
    cautery = BooleanProperty(False)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.scale = 100.0
        self._lo = np.zeros(0)
        self._hi = np.zeros(0)
        self._color = Color(*PAL[f"side_{self.side}"])
        self._line = Line(points=[], width=1)
        self._data.add(self._color)
        self._data.add(self._line)
        self._cautery_label = Label(text="", font_size=_fs(), bold=True, color=PAL["warn"], size_hint=(None, None))
        self.add_widget(self._cautery_label)
        self.bind(side=lambda *_: setattr(self._color, "rgba", PAL[f"side_{self.side}"]))

    def columns(self) -> int:
        """Envelope columns the strip shows (one per 2 px)."""
        return max(8, int(self.area()[2] // 2))

    def set_scale(self, scale: float) -> None:
        """Draw at ``scale`` µV (half the height of the strip)."""
        if scale != self.scale:
            self.scale = float(scale)
            self._relayout()

    def build_static(self) -> None:
        x0, y0, w, h = self.area()
        self._bg.add(Color(*PAL["line"]))
        self._bg.add(Line(points=[x0, y0 + h / 2, x0 + w, y0 + h / 2], width=1))
        self._label(f"EMG ±{self.scale:.0f} µV, {self.seconds:g} s", x0 + 3, y0 + h - _fs() * 0.6, color=PAL["text"])
        self._cautery_label.font_size = _fs()
        self._cautery_label.pos = (x0 + w * 0.45, y0 + 2)

    def set_envelope(self, lo: np.ndarray, hi: np.ndarray, cautery: bool = False) -> None:
        """The envelope to show (the scale stays as chosen)."""
        self._lo, self._hi = lo, hi
        text = "CAUTERY: EMG sound muted" if cautery else ""
        if text != self._cautery_label.text:
            self._cautery_label.text = text
            self._cautery_label.texture_update()
            self._cautery_label.size = self._cautery_label.texture_size
        self.redraw()

    def redraw(self) -> None:
        n = len(self._lo)
        if n == 0:
            self._line.points = []
            return
        x0, y0, w, h = self.area()
        xs = x0 + np.arange(n, dtype=np.float64) * (w / max(1, n - 1))
        half = h / 2 - 1
        lo = y0 + h / 2 + np.clip(self._lo / self.scale, -1, 1) * half
        hi = y0 + h / 2 + np.clip(self._hi / self.scale, -1, 1) * half
        pts = np.empty(4 * n, dtype=np.float64)
        pts[0::4], pts[1::4], pts[2::4], pts[3::4] = xs, lo, xs, hi
        self._line.points = pts.tolist()
        self.frames_drawn += 1


class SeriesPlot(_Plot):
    """Several y(x) series over a shared x range with labelled horizontal reference lines."""

    y_min = NumericProperty(0.0)
    y_max = NumericProperty(150.0)
    x_label = StringProperty("")
    y_unit = StringProperty("%")
    references = ListProperty([])  # [(y, label), ...]
    axis_labels = BooleanProperty(True)  # the y range written at the top and bottom left

    def __init__(self, **kw: Any) -> None:
        self._series: dict[str, dict[str, Any]] = {}
        self.x_range = (0.0, 60.0)
        self._markers: list[tuple[float, str, Sequence[float]]] = []
        self._ticks: list[tuple[float, str]] = []
        self._marker_labels: list[Label] = []
        self.label_markers = False
        super().__init__(**kw)
        self._marks = InstructionGroup()
        self.canvas.before.add(self._marks)
        self.bind(references=self._relayout, y_min=self._relayout, y_max=self._relayout, x_label=self._relayout)

    def set_ticks(self, ticks: Sequence[tuple[float, str]]) -> None:
        """Labelled marks along the x axis (drawn with the markers)."""
        ticks = list(ticks)
        if ticks != self._ticks:
            self._ticks = ticks
            self._draw_markers()

    def set_markers(self, markers: Sequence[tuple[float, str, Sequence[float]]], labelled: bool = False) -> None:
        """Events as vertical lines at x (their short names written when ``labelled``)."""
        markers = list(markers)
        if markers == self._markers and labelled == self.label_markers:
            return
        self._markers, self.label_markers = markers, labelled
        self._draw_markers()

    def _draw_markers(self) -> None:
        if not hasattr(self, "_marks"):
            return
        self._marks.clear()
        for lab in self._marker_labels:
            self.remove_widget(lab)
        self._marker_labels = []
        x0, y0, w, h = self.area()
        lo, hi = self.x_range
        for x, text in self._ticks:
            if not (lo <= x <= hi):
                continue
            xx = x0 + (x - lo) / (hi - lo) * w
            self._marks.add(Color(*PAL["grid"]))
            self._marks.add(Line(points=[xx, y0, xx, y0 + h], width=1))
            lab = Label(text=text, font_size=_fs() * 0.85, color=PAL["muted"], size_hint=(None, None))
            lab.texture_update()
            lab.size = lab.texture_size
            lab.pos = (min(xx + 2, x0 + w - lab.width - 2), y0 + 2)
            self.add_widget(lab)
            self._marker_labels.append(lab)
        last_label_x = -1e9
        for x, text, rgba in self._markers:
            if not (lo <= x <= hi):
                continue
            xx = x0 + (x - lo) / (hi - lo) * w
            self._marks.add(Color(*rgba))
            self._marks.add(Line(points=[xx, y0, xx, y0 + h], width=1, dash_length=3, dash_offset=3))
            if self.label_markers and text and xx - last_label_x > _fs() * 4:
                lab = Label(text=text, font_size=_fs() * 0.9, color=rgba, size_hint=(None, None))
                lab.texture_update()
                lab.size = lab.texture_size
                lab.pos = (min(xx + 2, x0 + w - lab.width), y0 + h - lab.height - 2 - _fs() * (len(
                    self._marker_labels) % 2))
                self.add_widget(lab)
                self._marker_labels.append(lab)
                last_label_x = xx

    def add_series(self, name: str, color: Sequence[float], width: float = 1.5, dash: bool = False) -> None:
        """A named line (its points come with ``set_series``)."""
        c = Color(*color)
        line = Line(points=[], width=width) if not dash else Line(points=[], width=1, dash_length=6, dash_offset=4)
        self._data.add(c)
        self._data.add(line)
        self._series[name] = {"line": line, "x": np.zeros(0), "y": np.zeros(0)}

    def build_static(self) -> None:
        x0, y0, w, h = self.area()
        g = self._bg
        for y, text in self.references:
            if not (self.y_min <= y <= self.y_max):
                continue
            yy = y0 + (y - self.y_min) / (self.y_max - self.y_min) * h
            g.add(Color(*PAL["threshold"]))
            g.add(Line(points=[x0, yy, x0 + w, yy], width=1, dash_length=4, dash_offset=4))
            self._label(text, x0 + w - 2, yy + _fs() * 0.6, anchor="right")
        g.add(Color(*PAL["line"]))
        g.add(Line(rectangle=(x0, y0, w, h), width=1))
        if self.axis_labels:
            self._label(f"{self.y_max:g} {self.y_unit}", x0 + 3, y0 + h - _fs() * 0.6)
            self._label(f"{self.y_min:g}", x0 + 3, y0 + _fs() * 0.6)
        if self.x_label:
            self._label(self.x_label, x0 + 4, y0 - _fs() * 0.62)
        self._draw_markers()

    def set_x_range(self, lo: float, hi: float) -> None:
        """The x values at the left and right edges."""
        rng = (float(lo), float(max(hi, lo + 1e-6)))
        if rng != self.x_range:
            self.x_range = rng
            self._draw_markers()

    def set_series(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """The points of a series (drawn on ``redraw``)."""
        s = self._series[name]
        s["x"], s["y"] = x, y

    def redraw(self) -> None:
        x0, y0, w, h = self.area()
        lo, hi = self.x_range
        for s in self._series.values():
            x, y = s["x"], s["y"]
            keep = np.isfinite(x) & np.isfinite(y)
            if not keep.any():
                s["line"].points = []
                continue
            x, y = x[keep], y[keep]
            xs = x0 + (x - lo) / (hi - lo) * w
            ys = y0 + (np.clip(y, self.y_min, self.y_max) - self.y_min) / (self.y_max - self.y_min) * h
            pts = np.empty(2 * len(xs), dtype=np.float64)
            pts[0::2], pts[1::2] = xs, ys
            if len(xs) == 1:  # a single point: a short tick so it shows
                pts = np.array([xs[0] - 2, ys[0], xs[0] + 2, ys[0]])
            s["line"].points = pts.tolist()
        self.frames_drawn += 1


def nice_span(seconds: float) -> float:
    """A round time span >= ``seconds`` for a trend's x axis (1, 2, 5, 10, ... minutes)."""
    for minutes in (1, 2, 5, 10, 15, 20, 30, 60, 90, 120, 180, 240, 360, 480, 720):
        if seconds <= minutes * 60:
            return minutes * 60.0
    return math.ceil(seconds / 3600.0) * 3600.0
