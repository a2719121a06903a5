"""Monitoring: live traces per side, the last response LARGE, stimulation controls,
INMSG step capture, continuous vagal (APS) baseline and trend, scales, threshold and volume.

Left: one panel per side: its last stimulus epoch at the scale the nurse chose (written
on the plot; fitted to the response only when asked) over the side's reference waveform
drawn faintly (V1, R1 or S1 for a probe stimulus at that site, the vagal baseline for the
continuous vagal electrode), its free-running EMG, the last response's amplitude and
latency in numbers readable from afar with the percentage of the reference beside them
(for a vagal stimulus after V1 that is the live V2/V1 ratio), the response in words, the
side's L1-V1-R1-R2-V2-L2 checklist, and a visible cue of the response tone (pitch by side,
size by amplitude; a tick, or a buzz when no current flowed). Under both: the APS trend
over the case, which a touch enlarges (with the events marked).

Right: three pages of controls: Probe (set and delivered current side by side with -/+,
on/off, site, side, step buttons V1 S1 R1 R2 S2 V2), Vagal (the continuous electrode:
on/off, side, current, baseline, amplitude and latency in % of baseline, new baseline)
and Display (waveform and EMG scales, fit once, event threshold, volume, snapshot).

Every control asks the engine; the engine decides (current limits and the confirmation
above ``stim.confirm_above_mA``, step attribution, settings ranges) and the screen shows
what the engine's state says, never what it assumed. The scales are this screen's own.
"""

from __future__ import annotations

import time
from typing import Any

from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.modalview import ModalView
from kivy.uix.widget import Widget

from app import format as fmt
from app.ui import present as P
from app.ui.data import SCALES_UV, choose_scale, decimate_xy
from app.ui.plots import EmgStrip, EpochPlot, SeriesPlot, nice_span  # noqa: F401  (kv classes)
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import confirm

EMG_SCALES_UV = (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
TONE_SHOW_S = 0.4  # how long the tone cue stays lit after a stimulus
TREND_EVERY_S = 5.0  # the case trend is drawn again at most this often
# events marked on the trend: rule kinds and their short names
TREND_MARKS = {"loss_of_signal": "LOS", "combined_event": "combined", "amplitude_decrease": "check tube",
               "signal_recovered": "recovered", "baseline_set": "baseline", "poor_baseline": "poor baseline"}


def current_step(mA: float, up: bool) -> float:
    """Next current for a +/- touch: 0.1 mA steps up to 2 mA, 0.5 mA above."""
    mA = round(mA, 2)
    if up:
        return round(mA + (0.1 if mA < 2.0 - 1e-9 else 0.5), 2)
    return round(max(0.0, mA - (0.1 if mA <= 2.0 + 1e-9 else 0.5)), 2)


def next_scale(scales: tuple[float, ...], now: float, up: bool) -> float:
    """The next larger (``up``) or smaller scale of ``scales``."""
    if up:
        return next((s for s in scales if s > now + 1e-9), scales[-1])
    return next((s for s in reversed(scales) if s < now - 1e-9), scales[0])


def minute_ticks(span_s: float) -> list[tuple[float, str]]:
    """Time marks for a trend over ``span_s`` seconds of the case: at most 8, at round minutes."""
    step = next((m for m in (1, 2, 5, 10, 15, 20, 30, 60, 120) if span_s / (m * 60) <= 8), 240)
    out = []
    for k in range(1, int(span_s // (step * 60)) + 1):
        minutes = k * step
        out.append((minutes * 60.0, f"{minutes // 60} h {minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"))
    return out


def checklist_markup(steps: dict[str, Any], pending: Any, side: str) -> str:
    """The side's L1-V1-R1-R2-V2-L2 checklist as one line of markup (done bright, to do dim)."""
    muted = "8d99a6"
    cells = []
    names = ["L1", "V1"] + (["S1"] if steps.get("S1") else []) + ["R1", "R2"] + (
        ["S2"] if steps.get("S2") else []) + ["V2", "L2"]
    for name in names:
        v = steps.get(name) or {}
        if isinstance(pending, dict) and pending.get("step") == name and pending.get("side") == side:
            cells.append(f"[b]{name}[/b] waiting")
        elif "finding" in v:
            cells.append(f"[b]{name}[/b] {P.FINDING_WORDS.get(str(v['finding']), str(v['finding']))}")
        elif v.get("amplitude_uV") is not None:
            cells.append(f"[b]{name}[/b] {P.fmt_amp(v['amplitude_uV'])}")
        else:
            cells.append(f"[color={muted}][b]{name}[/b] -[/color]")
    return "   ".join(cells) + f"   [color={muted}](µV)[/color]"


class ToneLamp(Widget):
    """The response tone made visible: lit for a moment after each probe stimulus, as
    high as the response is large, in the side's colour for a response tone, grey for the
    tick (no response), yellow for the buzz (no current); its word says which."""

    side = StringProperty("L")
    kind = StringProperty("")  # response | tick | buzz | "" (dark)
    level = NumericProperty(0.0)
    word = StringProperty("")


class SidePanel(BoxLayout):
    """One side: epoch over its reference, EMG strip, the large numbers, the checklist."""

    side = StringProperty("L")
    amplitude = StringProperty("---")
    latency = StringProperty("---")
    ratio = StringProperty("")
    words = StringProperty("no stimulus yet")
    caption = StringProperty("")
    checklist = StringProperty("")
    alert = BooleanProperty(False)
    fresh = BooleanProperty(False)

    def show(self, m: dict[str, Any] | None, now_s: float | None, ratio: str, caption: str) -> None:
        """The side's last measurement ``m`` (None: none yet)."""
        self.ratio = ratio
        self.caption = caption
        if not m:
            self.amplitude, self.latency, self.words = "---", "---", "no stimulus yet"
            self.fresh = self.alert = False
            return
        valid = m.get("valid", True)
        self.amplitude = P.fmt_amp(m.get("amplitude_uV")) if valid else "---"
        self.latency = P.fmt_lat(m.get("latency_ms")) if valid and m.get("response") else "---"
        self.alert = bool(valid and not m.get("response"))
        age = None if now_s is None or m.get("t_s") is None else now_s - float(m["t_s"])
        self.fresh = age is not None and age < 5.0
        words = P.response_words(m)
        self.words = words if age is None or age < 5.0 else f"{words} ({P.fmt_duration(age)} ago)"


def ratio_words(m: dict[str, Any] | None, ref_name: str, ref: dict[str, Any] | None,
                aps_pct: tuple[float | None, float | None] | None) -> str:
    """The live response as a percentage of its reference, in markup (two short lines)."""
    if not m or not m.get("valid", True):
        return ""
    if m.get("source") == "APS":
        if aps_pct is None or aps_pct[0] is None:
            return "baseline\nnot set yet"
        lat = "" if aps_pct[1] is None else f"\nlatency [b]{fmt.pct_text(aps_pct[1])}[/b]"
        return f"[b]{fmt.pct_text(aps_pct[0])}[/b] of baseline{lat}"
    if not ref_name:
        return ""
    base = None if ref is None else ref.get("amplitude_uV")
    amp = m.get("amplitude_uV")
    if not base or amp is None:
        return f"no {ref_name}\nyet"
    pct = 100.0 * float(amp) / float(base)
    if ref_name == "V1":
        return f"V2/V1 live\n[b]{fmt.pct_text(pct)}[/b]"
    return f"[b]{fmt.pct_text(pct)}[/b]\nof {ref_name}"


class TrendPlot(ButtonBehavior, SeriesPlot):
    """The small trend on the monitor: a touch enlarges it."""

    tid = StringProperty("")


class TrendView(ModalView):
    """The APS trend enlarged: amplitude and latency in % of baseline over the whole case,
    with the events marked and named; either side."""

    side = StringProperty("L")
    caption = StringProperty("")
    sides = ListProperty(["L", "R"])

    def __init__(self, screen: MonitorScreen, **kw: Any) -> None:
        self.screen = screen
        super().__init__(**kw)
        self.auto_dismiss = False
        plot: SeriesPlot = self.ids.plot
        plot.add_series("amp", P.PALETTE["trend_amp"], width=1.5)
        plot.add_series("lat", P.PALETTE["trend_lat"], dash=True)
        plot.references = [(50.0, "50 %"), (110.0, "110 %")]
        self.bind(size=lambda *_: self.draw(), side=lambda *_: self.draw())

    def draw(self) -> None:
        """Draw the side's whole trend with its events."""
        self.screen.draw_trend_into(self.ids.plot, self.side, labelled=True)
        self.caption = (f"Continuous vagal trend, {P.side_name(self.side).lower()} side: amplitude (solid) and "
                        "latency (dashed) in % of baseline; events marked")
        for s in ("L", "R"):
            self.ids[f"side_{s}"].state = "down" if s == self.side else "normal"


class MonitorScreen(LnmScreen):
    """The monitoring screen (see the module docstring)."""

    page = StringProperty("probe")
    probe_on = BooleanProperty(False)
    probe_text = StringProperty("Probe off")  # what the board is known to do (UNKNOWN while unknown)
    probe_set = StringProperty("---")
    probe_delivered = StringProperty("---")
    probe_warn = StringProperty("")
    site = StringProperty("VAGUS")
    side = StringProperty("L")
    aps_on = BooleanProperty(False)
    aps_text = StringProperty("APS off")
    aps_side = StringProperty("L")
    aps_set = StringProperty("---")
    aps_delivered = StringProperty("---")
    aps_baseline = StringProperty("")
    aps_amp_pct = StringProperty("---")
    aps_lat_pct = StringProperty("---")
    threshold = StringProperty("---")
    limits_text = StringProperty("")  # the protected limits relaxed, "" when none
    volume = StringProperty("---")
    trend_caption = StringProperty("")
    show_trend = BooleanProperty(False)
    case_open = BooleanProperty(False)
    probe_mA = NumericProperty(1.0)
    aps_mA = NumericProperty(1.0)
    scale_uV = NumericProperty(1000.0)  # the waveforms' scale: the nurse's choice (a response of about
    # 1000 µV peak-to-peak fills half the height; one of 27 µV stays a flat line, as it should)
    emg_scale_uV = NumericProperty(100.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._drawn: dict[str, Any] = {"epochs": -1, "emg": -1, "trend": -1, "refs": -1}
        self._asked: dict[str, tuple[float, float]] = {}
        self._trend_side = "L"
        self._tone_until = {"L": 0.0, "R": 0.0}
        self._tone_index = {"L": None, "R": None}
        self._trend_view: TrendView | None = None
        self._trend_t = 0.0
        trend: SeriesPlot = self.ids.trend
        trend.add_series("amp", P.PALETTE["trend_amp"], width=1.0)
        trend.add_series("lat", P.PALETTE["trend_lat"], dash=True)
        trend.references = [(50.0, "50 %"), (110.0, "110 %")]
        self.bind(scale_uV=self._apply_scales, emg_scale_uV=self._apply_scales)
        self.bind(scale_uV=lambda *_: self.update(self.app.state) if self.app and self.app.state else None)
        self._apply_scales()

    # ------------------------------------------------------------------ state

    def update(self, state: dict[str, Any]) -> None:
        self.case_open = state.get("case") is not None
        self._update_stim(state)
        self.threshold = P.fmt_amp(state.get("threshold_uV"))
        limits = [str(lim["text"]) for lim in state.get("limits") or [] if isinstance(lim, dict) and lim.get("text")]
        self.limits_text = ("LIMIT CHANGED: " + "; ".join(limits)) if limits else ""
        self.volume = "---" if state.get("volume_pct") is None else f"{state['volume_pct']:.0f}"
        self._update_panels(state)
        self._sync_toggles()
        self._update_steps(state)
        if self._trend_side != self.aps_side:
            self._drawn["trend"] = -1
        self._trend_side = self.aps_side
        self.show_trend = self.aps_on or self.app.trend.has_data(self._trend_side)
        self.trend_caption = (f"Vagal trend {P.side_name(self._trend_side).lower()}, % of baseline "
                              "(touch to enlarge)")
        span = nice_span(max(float(state.get("t_s") or 0.0), 60.0))
        if span != self.ids.trend.x_range[1]:
            self._drawn["trend"] = -1  # the time axis steps on

    def _update_stim(self, state: dict[str, Any]) -> None:
        stim = state.get("stim") or {}
        probe = stim.get("probe") or {}
        aps = stim.get("aps") or {}
        self.probe_on = bool(probe.get("on"))
        self.probe_text = P.output_words("Probe", probe)
        self.probe_mA = float(probe.get("current_mA") or 0.0)
        self.probe_set = P.fmt_ma(probe.get("current_mA"), 1)
        self.probe_delivered = P.fmt_ma(probe.get("delivered_mA"))
        self.probe_warn = P.delivered_words(probe.get("current_mA"), probe.get("delivered_mA"))
        self.site = str(probe.get("site") or "VAGUS")
        self.side = str(probe.get("side") or "L")
        self.aps_on = bool(aps.get("on"))
        self.aps_text = P.output_words("APS", aps)
        self.aps_side = str(aps.get("side") or "L")
        self.aps_mA = float(aps.get("current_mA") or 0.0)
        self.aps_set = P.fmt_ma(aps.get("current_mA"), 1)
        self.aps_delivered = P.fmt_ma(aps.get("delivered_mA"))
        apsd = (state.get("aps") or {}).get(self.aps_side) or {}
        if apsd.get("baseline_uV") is not None and not apsd.get("collecting"):
            self.aps_baseline = (f"Baseline {P.fmt_amp(apsd['baseline_uV'])} µV, "
                                 f"{P.fmt_lat(apsd.get('baseline_latency_ms'))} ms "
                                 f"({apsd.get('baseline_count')} stimuli)")
        else:
            self.aps_baseline = (f"Collecting the baseline: {apsd.get('baseline_count', 0)} of "
                                 f"{apsd.get('baseline_needed', 20)} stimuli")
        amp, lat = self.aps_pct(state, self.aps_side)
        self.aps_amp_pct = P.fmt_pct(amp)
        self.aps_lat_pct = P.fmt_pct(lat)

    def aps_pct(self, state: dict[str, Any], side: str) -> tuple[float | None, float | None]:
        """The side's last continuous vagal amplitude and latency in % of baseline
        (``present.aps_percent``: also while the probe stimulates the same side)."""
        return P.aps_percent((state.get("aps") or {}).get(side), self.app.trend.last(side))

    def _update_panels(self, state: dict[str, Any]) -> None:
        last = state.get("last") or {}
        steps = state.get("steps") or {}
        refs = self.app.refs
        for s in ("L", "R"):
            m = last.get(s)
            panel: SidePanel = self.ids[f"panel_{s}"]
            name, ref = ("", None) if not m else refs.for_epoch(s, m.get("site"), m.get("source"))
            ratio = ratio_words(m, name, ref, self.aps_pct(state, s) if m and m.get("source") == "APS" else None)
            panel.show(m, state.get("t_s"), ratio, f"±{self.scale_uV:.0f} µV, 50 ms · " + self._caption(m))
            panel.checklist = checklist_markup(steps.get(s) or {}, state.get("pending_step"), s)
            self._tone(s, m, state)

    @staticmethod
    def _caption(m: dict[str, Any] | None) -> str:
        if not m:
            return ""
        if m.get("source") == "APS":
            what = "vagal electrode"
        else:
            site = P.SITE_NAMES.get(str(m.get("site")), "site not given")
            what = f"{site} {m['step']}" if m.get("step") else site
        # (the reference is named beside the numbers; the delivered current is on the Probe
        # page: a caption that changes with every stimulus would cost a redraw)
        return what

    def _tone(self, side: str, m: dict[str, Any] | None, state: dict[str, Any]) -> None:
        if not m or m.get("index") == self._tone_index[side]:
            return
        self._tone_index[side] = m.get("index")
        tol = float(self.app.settings_values.get("stim.delivered_tolerance_pct") or 5.0)
        kind = P.tone_of(m, tol)
        lamp: ToneLamp = self.ids[f"panel_{side}"].ids.tone
        if kind is None:
            return
        lamp.kind = kind
        lamp.level = (P.tone_level(m.get("amplitude_uV"), state.get("threshold_uV")) if kind == "response"
                      else 0.35 if kind == "tick" else 1.0)
        lamp.word = {"response": P.TONE_PITCH[side], "tick": "tick", "buzz": "BUZZ"}[kind]
        self._tone_until[side] = time.monotonic() + TONE_SHOW_S

    def _sync_toggles(self) -> None:
        ids = self.ids
        for site in ("VAGUS", "RLN", "EBSLN"):
            ids[f"site_{site}"].state = "down" if self.site == site else "normal"
        for s in ("L", "R"):
            ids[f"side_{s}"].state = "down" if self.side == s else "normal"
            ids[f"aps_side_{s}"].state = "down" if self.aps_side == s else "normal"
        ids.probe_toggle.state = "down" if self.probe_on else "normal"
        ids.aps_toggle.state = "down" if self.aps_on else "normal"
        for p in ("probe", "vagal", "levels"):
            ids[f"page_{p}"].state = "down" if self.page == p else "normal"

    def _update_steps(self, state: dict[str, Any]) -> None:
        steps = (state.get("steps") or {}).get(self.side) or {}
        pending = state.get("pending_step")
        for step in P.STEPS:
            b = self.ids[f"step_{step}"]
            v = steps.get(step)
            if isinstance(pending, dict) and pending.get("step") == step and pending.get("side") == self.side:
                b.text = f"{step}\nwaiting"
            elif v and v.get("amplitude_uV") is not None:
                b.text = f"{step} done\n{P.fmt_amp(v.get('amplitude_uV'))} µV"
            else:
                b.text = f"{step}\n-"

    # ------------------------------------------------------------------ drawing

    def _apply_scales(self, *_: Any) -> None:
        for s in ("L", "R"):
            panel = self.ids[f"panel_{s}"]
            panel.ids.epoch.set_scale(self.scale_uV)
            panel.ids.emg.set_scale(self.emg_scale_uV)

    def frame(self) -> None:
        app = self.app
        if not app.link.health().ok:
            for s in ("L", "R"):
                panel = self.ids[f"panel_{s}"]
                panel.fresh = False
                panel.words = "NO CURRENT DATA: engine not responding"
                panel.alert = True
        now = time.monotonic()
        for s in ("L", "R"):
            lamp = self.ids[f"panel_{s}"].ids.tone
            if lamp.kind and now > self._tone_until[s]:
                lamp.kind, lamp.level, lamp.word = "", 0.0, ""
        if app.refs.version != self._drawn["refs"]:
            self._drawn["refs"] = app.refs.version
            self._drawn["epochs"] = -1
        if app.epochs.version != self._drawn["epochs"]:
            self._drawn["epochs"] = app.epochs.version
            for s in ("L", "R"):
                self._draw_epoch(s)
        if app.emg.version != self._drawn["emg"]:
            self._drawn["emg"] = app.emg.version
            for s, ch in (("L", "EMG L"), ("R", "EMG R")):
                strip: EmgStrip = self.ids[f"panel_{s}"].ids.emg
                lo, hi = app.emg.window(ch, strip.seconds, strip.columns())
                strip.set_envelope(lo, hi, app.emg.cautery)
        # the trend spans the case: drawn again every few seconds, not for every stimulus
        if app.trend.version != self._drawn["trend"] and (self._drawn["trend"] == -1
                                                           or now - self._trend_t >= TREND_EVERY_S):
            self._drawn["trend"] = app.trend.version
            self._trend_t = now
            self.draw_trend()

    def _draw_epoch(self, side: str) -> None:
        app = self.app
        key = (app.epochs.side_version[side], app.refs.version)
        if self._drawn.get(f"epoch_{side}") == key:
            return
        self._drawn[f"epoch_{side}"] = key
        ep = app.epochs.get(side)
        plot: EpochPlot = self.ids[f"panel_{side}"].ids.epoch
        if ep is None:
            plot.set_epoch(None, None)
            plot.set_reference(None, None)
            return
        _name, ref = app.refs.for_epoch(side, ep.get("site"), ep.get("source"))
        plot.set_reference(None if ref is None else ref.get("t_ms"), None if ref is None else ref.get("uV"))
        plot.set_epoch(ep["t_ms"], ep["uV"])

    def draw_trend(self) -> None:
        """Redraw the small trend (and the enlarged one when it is open)."""
        plot: SeriesPlot = self.ids.trend
        plot.caption = self.trend_caption
        self.draw_trend_into(plot, self._trend_side, labelled=False)
        if self._trend_view is not None:
            self._trend_view.draw()

    def draw_trend_into(self, plot: SeriesPlot, side: str, labelled: bool) -> None:
        """The side's APS trend over the case into ``plot``, with its events marked."""
        app = self.app
        a = app.trend.arrays(side)
        t = a["t"]
        now = app.state.get("t_s") if app.state else None
        end = max(float(t[-1]) if len(t) else 0.0, float(now or 0.0))
        span = nice_span(max(end, 60.0))
        plot.set_x_range(0.0, span)
        plot.x_label = f"0-{span / 60:.0f} min of the case" if labelled else ""
        cols = max(10, int(plot.area()[2] // 2))  # up to 2 points per 2 px: as much as can be seen
        x1, y1 = decimate_xy(t, a["amp_pct"], cols)
        x2, y2 = decimate_xy(t, a["lat_pct"], cols)
        plot.set_series("amp", x1, y1)
        plot.set_series("lat", x2, y2)
        marks = []
        for ev in app.events.events:
            name = TREND_MARKS.get(str(ev.get("kind")))
            if name and ev.get("category") == "rule" and ev.get("side") in (side, None):
                colour = (P.style(ev.get("priority")) or P.PRIORITY_STYLES["low"]).colour
                marks.append((float(ev.get("t_s") or 0.0), name, colour))
        plot.set_markers(marks, labelled=labelled)
        plot.set_ticks(minute_ticks(span) if labelled else [])
        plot.redraw()

    def open_trend(self) -> None:
        """The trend enlarged, over the whole screen."""
        view = TrendView(self, side=self._trend_side)
        view.bind(on_dismiss=lambda *_: setattr(self, "_trend_view", None))
        self._trend_view = view
        view.open(animation=False)
        view.draw()

    # ------------------------------------------------------------------ controls

    def show_page(self, page: str) -> None:
        """Show the Probe, Vagal or Display page of the controls."""
        self.page = page
        self.ids.pages.current = page
        self._sync_toggles()

    def change_scale(self, which: str, up: bool) -> None:
        """One step larger or smaller on the waveform (``epoch``) or EMG strip scale."""
        if which == "epoch":
            self.scale_uV = next_scale(SCALES_UV, self.scale_uV, up)
        else:
            self.emg_scale_uV = next_scale(EMG_SCALES_UV, self.emg_scale_uV, up)

    def step_level(self, which: str, up: bool) -> None:
        """A -/+ touch on the Display page: a scale, the event threshold or the volume."""
        if which == "scale":
            self.change_scale("epoch", up)
        elif which == "emg_scale":
            self.change_scale("emg", up)
        elif which == "threshold":
            self.change_threshold(up)
        elif which == "volume":
            self.change_volume(up)

    def fit_scale(self) -> None:
        """Autoscale once, on request: the smallest scale that holds both sides' last responses."""
        peak = max(self.app.epochs.peak.values() or [0.0])
        self.scale_uV = choose_scale(peak)
        self.app.notify(f"waveform scale ±{self.scale_uV:.0f} µV (it stays until changed)", "ok")

    def change_current(self, output: str, up: bool) -> None:
        """+/- on a stimulator current (quick repeated touches step on from the last asked)."""
        now = self.probe_mA if output == "probe" else self.aps_mA
        asked = self._asked.get(output)
        if asked is not None and time.monotonic() - asked[1] < 1.5:
            now = asked[0]
        new = current_step(now, up)
        self._asked[output] = (new, time.monotonic())
        self.app.set_stim_current(output, new, on_refused=lambda: self._asked.pop(output, None))

    def toggle_output(self, output: str) -> None:
        """Switch the probe or the vagal electrode on or off."""
        on = self.probe_on if output == "probe" else self.aps_on
        self.app.cmd("stim.output", output=output, on=not on,
                     ok_message=f"{'probe' if output == 'probe' else 'vagal electrode'} {'off' if on else 'on'}")
        self._sync_toggles()  # shows the engine's state until it changes

    def single_pulse(self) -> None:
        """One probe pulse."""
        self.app.cmd("stim.single", ok_message="single pulse sent")

    def select_site(self, site: str) -> None:
        """What the probe touches now."""
        self.app.cmd("probe.site", site=site, side=self.side)
        self.site = site
        self._sync_toggles()

    def select_side(self, side: str) -> None:
        """Which side the probe is on."""
        self.app.cmd("probe.site", site=self.site, side=side)
        self.side = side
        self._sync_toggles()
        if self.app.state:
            self._update_steps(self.app.state)

    def capture_step(self, step: str) -> None:
        """Record the last (or the next) response of the step's site on the probe's side."""
        side = self.side
        want_site = P.step_site(step)

        def recorded(r: dict[str, Any]) -> None:
            m = r.get("measurement") or r.get("value") or {}
            self.app.notify(f"{step} {P.side_name(side).lower()} recorded: {P.fmt_amp(m.get('amplitude_uV'))} µV, "
                            f"{P.fmt_lat(m.get('latency_ms'))} ms", "ok")

        def refused(reply: Any) -> bool:
            if reply.code != "bad_state":
                return False
            site = P.SITE_NAMES[want_site]
            confirm(f"No {site} response to record yet",
                    f"There is no response of the {P.side_name(side).lower()} {site} to record as {step} yet.\n\n"
                    f"Record the NEXT valid response at the {P.side_name(side).lower()} {site} as {step}?",
                    lambda: self.app.cmd("step.tag", step=step, side=side, which="next",
                                         ok_message=f"{step} will be taken from the next response"),
                    confirm_text="Use the next response")
            return True

        self.app.cmd("step.tag", on_ok=recorded, on_error=refused, step=step, side=side, which="last")

    def change_threshold(self, up: bool) -> None:
        """The event threshold 10 µV up or down."""
        now = float(self.app.state.get("threshold_uV") or 100.0)
        new = now + 10.0 if up else now - 10.0
        self.app.set_settings({"analysis.event_threshold_uV": round(new, 1)}, ask_pin=True,
                              ok_message=f"event threshold {new:.0f} µV")

    def change_volume(self, up: bool) -> None:
        """The loudspeaker volume 10 % up or down."""
        now = float(self.app.state.get("volume_pct") or 70.0)
        new = now + 10.0 if up else now - 10.0
        self.app.cmd("settings.set", changes={"audio.volume_pct": round(new, 1)}, ok_message=f"volume {new:.0f} %")

    def set_aps_side(self, side: str) -> None:
        """The side the continuous vagal electrode is on."""
        self.app.cmd("aps.side", side=side, ok_message=f"vagal electrode on the {P.side_name(side).lower()}")
        self.aps_side = side
        self._sync_toggles()

    def rebaseline(self) -> None:
        """Start a new continuous vagal baseline (after a confirmation)."""
        side = self.aps_side
        confirm("Take a new vagal baseline?",
                f"The next {self.app.settings_values.get('rules.aps_baseline_count', 20)} valid stimuli on the "
                f"{P.side_name(side).lower()} become the new baseline. Do this after the tube was moved or in long "
                "cases, never to silence a real decrease.",
                lambda: self.app.cmd("baseline.rebaseline", side=side, ok_message="collecting a new baseline"),
                confirm_text="New baseline")

    def snapshot(self) -> None:
        """Keep the current traces and values in the record."""
        self.app.cmd("snapshot", comment="snapshot from the touchscreen", ok_message="snapshot saved in the record")


load_kv(__file__)
