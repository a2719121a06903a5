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
from typing import Any, Sequence

import numpy as np
from kivy.app import App
from kivy.graphics import Color, InstructionGroup, Line, Rectangle
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.label import Label

from app.ui import present as P
from app.ui.data import choose_scale

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
    """The last epoch of one side: -5 to 50 ms after the stimulus, auto-scaled."""

    side = StringProperty("L")
    t_min = NumericProperty(-5.0)
    t_max = NumericProperty(50.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.scale = 500.0
        self._t = np.zeros(0)
        self._y = np.zeros(0)
        self._color = Color(*PAL[f"side_{self.side}"])
        self._line = Line(points=[], width=1)
        self._data.add(self._color)
        self._data.add(self._line)
        self.bind(side=lambda *_: setattr(self._color, "rgba", PAL[f"side_{self.side}"]))

    def build_static(self) -> None:
        x0, y0, w, h = self.area()
        g = self._bg
        g.add(Color(*PAL["grid"]))
        every = 10 if w > 12 * _fs() * 2.2 else 20  # tick labels that do not collide
        for t in range(0, int(self.t_max) + 1, 10):
            x = x0 + (t - self.t_min) / (self.t_max - self.t_min) * w
            g.add(Line(points=[x, y0, x, y0 + h], width=1))
            if t % every == 0 and t < self.t_max - every / 2:
                self._label(f"{t}", x + 2, y0 + _fs() * 0.6)
        self._label(f"{int(self.t_max)} ms", x0 + w - 2, y0 + _fs() * 0.6, anchor="right")
        g.add(Color(*PAL["line"]))
        g.add(Line(points=[x0, y0 + h / 2, x0 + w, y0 + h / 2], width=1))
        self._label(f"±{self.scale:.0f} µV", x0 + 3, y0 + h - _fs() * 0.6)

    def set_epoch(self, t_ms: np.ndarray | None, uV: np.ndarray | None, scale: float) -> None:
        rebuild = scale != self.scale
        self.scale = scale
        self._t = np.zeros(0) if t_ms is None else t_ms
        self._y = np.zeros(0) if uV is None else uV
        if rebuild:
            self._relayout()
        else:
            self.redraw()

    def redraw(self) -> None:
        if not len(self._t):
            self._line.points = []
            return
        x0, y0, w, h = self.area()
        keep = (self._t >= self.t_min) & (self._t <= self.t_max)
        t, y = self._t[keep], self._y[keep]
        step = max(1, int(len(t) // max(1, 2 * w)))
        t, y = t[::step], y[::step]
        xs = x0 + (t - self.t_min) / (self.t_max - self.t_min) * w
        ys = y0 + h / 2 + np.clip(y / self.scale, -1.0, 1.0) * (h / 2 - 1)
        pts = np.empty(2 * len(xs), dtype=np.float64)
        pts[0::2], pts[1::2] = xs, ys
        self._line.points = pts.tolist()
        self.frames_drawn += 1


class EmgStrip(_Plot):
    """Free-running EMG of one channel as a min/max envelope, the last ``seconds``."""

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
        return max(8, int(self.area()[2] // 2))

    def build_static(self) -> None:
        x0, y0, w, h = self.area()
        self._bg.add(Color(*PAL["line"]))
        self._bg.add(Line(points=[x0, y0 + h / 2, x0 + w, y0 + h / 2], width=1))
        self._label(f"EMG ±{self.scale:.0f} µV, {self.seconds:g} s", x0 + 3, y0 + h - _fs() * 0.6)
        self._cautery_label.font_size = _fs()
        self._cautery_label.pos = (x0 + w * 0.45, y0 + 2)

    def set_envelope(self, lo: np.ndarray, hi: np.ndarray, cautery: bool = False) -> None:
        peak = float(max(np.max(np.abs(lo)) if len(lo) else 0.0, np.max(np.abs(hi)) if len(hi) else 0.0))
        scale = choose_scale(peak, self.scale)
        self._lo, self._hi = lo, hi
        text = "CAUTERY: EMG sound muted" if cautery else ""
        if text != self._cautery_label.text:
            self._cautery_label.text = text
            self._cautery_label.texture_update()
            self._cautery_label.size = self._cautery_label.texture_size
        if scale != self.scale:
            self.scale = scale
            self._relayout()
        else:
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

    def __init__(self, **kw: Any) -> None:
        self._series: dict[str, dict[str, Any]] = {}
        self.x_range = (0.0, 60.0)
        super().__init__(**kw)
        self.bind(references=self._relayout, y_min=self._relayout, y_max=self._relayout, x_label=self._relayout)

    def add_series(self, name: str, color: Sequence[float], width: float = 1.5, dash: bool = False) -> None:
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
        self._label(f"{self.y_max:g} {self.y_unit}", x0 + 3, y0 + h - _fs() * 0.6)
        self._label(f"{self.y_min:g}", x0 + 3, y0 + _fs() * 0.6)
        if self.x_label:
            self._label(self.x_label, x0 + 4, y0 - _fs() * 0.62)

    def set_x_range(self, lo: float, hi: float) -> None:
        self.x_range = (float(lo), float(max(hi, lo + 1e-6)))

    def set_series(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
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
