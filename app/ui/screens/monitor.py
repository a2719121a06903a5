"""Monitoring: live traces per side, the last response LARGE, stimulation controls,
INMSG step capture, continuous vagal (APS) baseline and trend, threshold and volume.

Left: one panel per side (its last stimulus epoch, its free-running EMG, and the last
response's amplitude and latency in numbers readable from 2 m, with the response in
words) and the APS trend over the case. Right: three pages of controls: Probe (set and
delivered current side by side with -/+, on/off, site, side, step buttons V1 S1 R1 R2
S2 V2), Vagal (the continuous electrode: on/off, side, current, baseline, amplitude and
latency in % of baseline, new baseline) and Levels (event threshold, volume, snapshot).

Every control asks the engine; the engine decides (current limits and the confirmation
above ``stim.confirm_above_mA``, step attribution, settings ranges) and the screen shows
what the engine's state says, never what it assumed.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import present as P
from app.ui.plots import EmgStrip, EpochPlot, SeriesPlot, nice_span  # noqa: F401  (kv classes)
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import confirm


def current_step(mA: float, up: bool) -> float:
    """Next current for a +/- touch: 0.1 mA steps up to 2 mA, 0.5 mA above."""
    mA = round(mA, 2)
    if up:
        return round(mA + (0.1 if mA < 2.0 - 1e-9 else 0.5), 2)
    return round(max(0.0, mA - (0.1 if mA <= 2.0 + 1e-9 else 0.5)), 2)


class SidePanel(BoxLayout):
    """One side: epoch, EMG strip, and the large numbers."""

    side = StringProperty("L")
    amplitude = StringProperty("---")
    latency = StringProperty("---")
    words = StringProperty("no stimulus yet")
    where = StringProperty("")
    age = StringProperty("")
    pct = StringProperty("")
    alert = BooleanProperty(False)
    fresh = BooleanProperty(False)

    def show(self, m: dict[str, Any] | None, now_s: float | None, aps: dict[str, Any] | None) -> None:
        if not m:
            self.amplitude, self.latency, self.words, self.where, self.age = "---", "---", "no stimulus yet", "", ""
            self.fresh = False
            self.alert = False
            self.pct = ""
            return
        valid = m.get("valid", True)
        self.amplitude = P.fmt_amp(m.get("amplitude_uV")) if valid else "---"
        self.latency = P.fmt_lat(m.get("latency_ms")) if valid and m.get("response") else "---"
        self.words = P.response_words(m)
        self.alert = bool(valid and not m.get("response"))
        src = "vagal electrode (APS)" if m.get("source") == "APS" else "probe"
        site = P.SITE_NAMES.get(str(m.get("site")), str(m.get("site") or ""))
        step = f" {m['step']}" if m.get("step") else ""
        self.where = f"{site}{step} - {src} - {P.fmt_ma(m.get('delivered_mA'))} mA delivered"
        age = None if now_s is None or m.get("t_s") is None else now_s - float(m["t_s"])
        self.fresh = age is not None and age < 5.0
        self.age = "" if age is None or age < 5.0 else f"({P.fmt_duration(age)} ago)"
        self.pct = ""
        if m.get("source") == "APS" and aps and aps.get("amplitude_pct") is not None:
            self.pct = (f"APS: amplitude {P.fmt_pct(aps.get('amplitude_pct'))}, "
                        f"latency {P.fmt_pct(aps.get('latency_pct'))} of baseline")


class MonitorScreen(LnmScreen):
    page = StringProperty("probe")
    probe_on = BooleanProperty(False)
    probe_set = StringProperty("---")
    probe_delivered = StringProperty("---")
    probe_warn = StringProperty("")
    site = StringProperty("VAGUS")
    side = StringProperty("L")
    aps_on = BooleanProperty(False)
    aps_side = StringProperty("L")
    aps_set = StringProperty("---")
    aps_delivered = StringProperty("---")
    aps_baseline = StringProperty("")
    aps_amp_pct = StringProperty("---")
    aps_lat_pct = StringProperty("---")
    threshold = StringProperty("---")
    volume = StringProperty("---")
    trend_caption = StringProperty("")
    show_trend = BooleanProperty(False)
    case_open = BooleanProperty(False)
    probe_mA = NumericProperty(1.0)
    aps_mA = NumericProperty(1.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._drawn = {"epochs": -1, "emg": -1, "trend": -1}
        self._asked: dict[str, tuple[float, float]] = {}
        self._trend_side = "L"
        trend: SeriesPlot = self.ids.trend
        trend.add_series("amp", P.PALETTE["trend_amp"], width=1.0)
        trend.add_series("lat", P.PALETTE["trend_lat"], dash=True)
        trend.references = [(50.0, "50 %"), (110.0, "110 %")]

    # ------------------------------------------------------------------ state

    def update(self, state: dict[str, Any]) -> None:
        self.case_open = state.get("case") is not None
        stim = state.get("stim") or {}
        probe = stim.get("probe") or {}
        aps = stim.get("aps") or {}
        self.probe_on = bool(probe.get("on"))
        self.probe_mA = float(probe.get("current_mA") or 0.0)
        self.probe_set = P.fmt_ma(probe.get("current_mA"), 1)
        self.probe_delivered = P.fmt_ma(probe.get("delivered_mA"))
        self.probe_warn = P.delivered_words(probe.get("current_mA"), probe.get("delivered_mA"))
        self.site = str(probe.get("site") or "VAGUS")
        self.side = str(probe.get("side") or "L")
        self.aps_on = bool(aps.get("on"))
        self.aps_side = str(aps.get("side") or "L")
        self.aps_mA = float(aps.get("current_mA") or 0.0)
        self.aps_set = P.fmt_ma(aps.get("current_mA"), 1)
        self.aps_delivered = P.fmt_ma(aps.get("delivered_mA"))
        apsd = (state.get("aps") or {}).get(self.aps_side) or {}
        if apsd.get("baseline_uV") is not None and not apsd.get("collecting"):
            self.aps_baseline = (f"Baseline {P.fmt_amp(apsd['baseline_uV'])} µV, "
                                 f"{P.fmt_lat(apsd.get('baseline_latency_ms'))} ms ({apsd.get('baseline_count')} stimuli)")
        else:
            self.aps_baseline = (f"Collecting baseline: {apsd.get('baseline_count', 0)} of "
                                 f"{apsd.get('baseline_needed', 20)} stimuli")
        self.aps_amp_pct = P.fmt_pct(apsd.get("amplitude_pct"))
        self.aps_lat_pct = P.fmt_pct(apsd.get("latency_pct"))
        self.threshold = P.fmt_amp(state.get("threshold_uV"))
        self.volume = "---" if state.get("volume_pct") is None else f"{state['volume_pct']:.0f}"
        last = state.get("last") or {}
        apss = state.get("aps") or {}
        for s in ("L", "R"):
            self.ids[f"panel_{s}"].show(last.get(s), state.get("t_s"), apss.get(s))
        self._sync_toggles()
        self._update_steps(state)
        if self._trend_side != self.aps_side:
            self._drawn["trend"] = -1
        self._trend_side = self.aps_side
        self.show_trend = self.aps_on or self.app.trend.has_data(self._trend_side)
        self.trend_caption = (f"APS {P.side_name(self._trend_side)}, % of baseline: amplitude solid, "
                              "latency dashed")
        span = nice_span(max(float(state.get("t_s") or 0.0), 60.0))
        if span != self.ids.trend.x_range[1]:
            self._drawn["trend"] = -1  # the time axis steps on

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

    def frame(self) -> None:
        app = self.app
        if not app.link.health().ok:
            for s in ("L", "R"):
                panel = self.ids[f"panel_{s}"]
                panel.fresh = False
                panel.words = "NO CURRENT DATA: engine not responding"
                panel.alert = True
        if app.epochs.version != self._drawn["epochs"]:
            self._drawn["epochs"] = app.epochs.version
            for s in ("L", "R"):
                if app.epochs.side_version[s] == self._drawn.get(f"epoch_{s}"):
                    continue
                self._drawn[f"epoch_{s}"] = app.epochs.side_version[s]
                ep = app.epochs.get(s)
                plot: EpochPlot = self.ids[f"panel_{s}"].ids.epoch
                if ep is None:
                    plot.set_epoch(None, None, plot.scale)
                else:
                    plot.set_epoch(ep["t_ms"], ep["uV"], app.epochs.scale[s])
        if app.emg.version != self._drawn["emg"]:
            self._drawn["emg"] = app.emg.version
            for s, ch in (("L", "EMG L"), ("R", "EMG R")):
                strip: EmgStrip = self.ids[f"panel_{s}"].ids.emg
                lo, hi = app.emg.window(ch, strip.seconds, strip.columns())
                strip.set_envelope(lo, hi, app.emg.cautery)
        if app.trend.version != self._drawn["trend"]:
            self._drawn["trend"] = app.trend.version
            self.draw_trend()

    def draw_trend(self) -> None:
        app = self.app
        plot: SeriesPlot = self.ids.trend
        a = app.trend.arrays(self._trend_side)
        t = a["t"]
        now = app.state.get("t_s") if app.state else None
        end = max(float(t[-1]) if len(t) else 0.0, float(now or 0.0))
        span = nice_span(max(end, 60.0))
        plot.set_x_range(0.0, span)
        plot.caption = f"{self.trend_caption}, 0-{span / 60:.0f} min"
        from app.ui.data import decimate_xy

        cols = max(10, int(plot.area()[2] // 2))  # up to 2 points per 2 px: as much as can be seen
        x1, y1 = decimate_xy(t, a["amp_pct"], cols)
        x2, y2 = decimate_xy(t, a["lat_pct"], cols)
        plot.set_series("amp", x1, y1)
        plot.set_series("lat", x2, y2)
        plot.redraw()

    # ------------------------------------------------------------------ controls

    def show_page(self, page: str) -> None:
        self.page = page
        self.ids.pages.current = page
        self._sync_toggles()

    def change_current(self, output: str, up: bool) -> None:
        # quick repeated touches step on from the value just asked for, not from a state
        # that has not caught up yet
        now = self.probe_mA if output == "probe" else self.aps_mA
        asked = self._asked.get(output)
        if asked is not None and time.monotonic() - asked[1] < 1.5:
            now = asked[0]
        new = current_step(now, up)
        self._asked[output] = (new, time.monotonic())
        self.app.set_stim_current(output, new, on_refused=lambda: self._asked.pop(output, None))

    def toggle_output(self, output: str) -> None:
        on = self.probe_on if output == "probe" else self.aps_on
        self.app.cmd("stim.output", output=output, on=not on,
                     ok_message=f"{'probe' if output == 'probe' else 'vagal electrode'} {'off' if on else 'on'}")
        self._sync_toggles()  # shows the engine's state until it changes

    def single_pulse(self) -> None:
        self.app.cmd("stim.single", ok_message="single pulse sent")

    def select_site(self, site: str) -> None:
        self.app.cmd("probe.site", site=site, side=self.side)
        self.site = site
        self._sync_toggles()

    def select_side(self, side: str) -> None:
        self.app.cmd("probe.site", site=self.site, side=side)
        self.side = side
        self._sync_toggles()
        if self.app.state:
            self._update_steps(self.app.state)

    def capture_step(self, step: str) -> None:
        side = self.side
        want_site = P.step_site(step)

        def recorded(r: dict[str, Any]) -> None:
            m = r.get("measurement") or r.get("value") or {}
            self.app.notify(f"{step} {P.side_name(side).lower()} recorded: {P.fmt_amp(m.get('amplitude_uV'))} µV, "
                            f"{P.fmt_lat(m.get('latency_ms'))} ms", "ok")

        def refused(reply: Any) -> bool:
            if reply.code != "bad_state":
                return False
            confirm(f"No {P.SITE_NAMES[want_site]} response to record yet",
                    f"{reply.message}\n\nRecord the NEXT valid response at the {P.side_name(side).lower()} "
                    f"{P.SITE_NAMES[want_site]} as {step}?",
                    lambda: self.app.cmd("step.tag", step=step, side=side, which="next",
                                         ok_message=f"{step} will be taken from the next response"),
                    confirm_text=f"Use the next response")
            return True

        self.app.cmd("step.tag", on_ok=recorded, on_error=refused, step=step, side=side, which="last")

    def change_threshold(self, up: bool) -> None:
        now = float(self.app.state.get("threshold_uV") or 100.0)
        new = now + 10.0 if up else now - 10.0
        self.app.set_settings({"analysis.event_threshold_uV": round(new, 1)}, ask_pin=True,
                              ok_message=f"event threshold {new:.0f} µV")

    def change_volume(self, up: bool) -> None:
        now = float(self.app.state.get("volume_pct") or 70.0)
        new = now + 10.0 if up else now - 10.0
        self.app.cmd("settings.set", changes={"audio.volume_pct": round(new, 1)}, ok_message=f"volume {new:.0f} %")

    def set_aps_side(self, side: str) -> None:
        self.app.cmd("aps.side", side=side, ok_message=f"vagal electrode on the {P.side_name(side).lower()}")
        self.aps_side = side
        self._sync_toggles()

    def rebaseline(self) -> None:
        side = self.aps_side
        confirm("Take a new vagal baseline?",
                f"The next {self.app.settings_values.get('rules.aps_baseline_count', 20)} valid stimuli on the "
                f"{P.side_name(side).lower()} become the new baseline. Do this after the tube was moved or in long "
                "cases, never to silence a real decrease.",
                lambda: self.app.cmd("baseline.rebaseline", side=side, ok_message="collecting a new baseline"),
                confirm_text="New baseline")

    def snapshot(self) -> None:
        self.app.cmd("snapshot", comment="snapshot from the touchscreen", ok_message="snapshot saved in the record")


load_kv(__file__)
