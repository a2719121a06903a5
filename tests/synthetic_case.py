"""A synthetic, clinically plausible case written into a journal: a fixture for the tests of
the case record and its documentation, and for the record benchmark (``bench/record.py``).

Owns: ``write_case``, ``emg_noise`` and ``response``. A test or benchmark helper, not
product code: the values are made up here, never measured.
May import: the standard library, numpy, ``app.model``, ``app.settings``,
``app.record.entries``.

The case (planned sides R then L, total thyroidectomy):
L1 normal; tube check passed; right side by probe only: V1, R1, then a loss of signal at
R2 (two probe stimuli without response at 1 mA delivered), alarm raised and acknowledged,
INMSG troubleshooting answered, mapping, type 1 LOS, the staging recommendation and the
surgeon's decision to proceed; V2 R weak. Left side with the continuous vagal electrode
(APS) at ``aps_rate_hz``: baseline after 20 stimuli, a traction combined event that
recovers within minutes, V1 R1 R2 V2 by probe. L2: right paresis. Untagged probing at
``probe_rate_hz`` fills the rest of the dissection time. Waveforms are biphasic responses
in Gaussian noise; ``emg`` adds the free-running stream (``emg_block`` entries of 1 s).

This is not physiology (the virtual board is): it is a believable record, fast to make.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.model import EventKind, Measurement, Priority, RuleEvent, Side, Site, Source, Step, Stimulus
from app.record import entries as E
from app.settings import Settings

FS = 20000
PRE = 200  # 10 ms
POST = 1000  # 50 ms


def emg_noise(rng: np.random.Generator, n: int, rms_uV: float = 4.0, channels: int = 2) -> np.ndarray:
    """Band-limited EMG background: white noise smoothed over ~0.2 ms plus slow breathing wander."""
    white = rng.normal(0.0, 1.0, (channels, n + 4))
    k = np.array([0.25, 0.5, 0.75, 0.5, 0.25])
    smooth = np.stack([np.convolve(w, k, mode="valid") for w in white])[:, :n]
    smooth *= rms_uV / np.sqrt(np.sum(k ** 2))
    return smooth


def response(amp_uV: float, lat_ms: float, fs: int = FS, pre: int = PRE, post: int = POST) -> np.ndarray:
    """A biphasic compound muscle response of peak-to-peak ``amp_uV`` at ``lat_ms``."""
    t = (np.arange(pre + post) - pre) / fs * 1000.0
    sig = 0.5 * amp_uV * (np.exp(-((t - lat_ms) / 0.6) ** 2) - np.exp(-((t - lat_ms - 1.6) / 0.7) ** 2))
    return sig


class _Writer:
    def __init__(self, journal: Any, case_id: str, rng: np.random.Generator, waveforms: bool) -> None:
        self.j, self.cid, self.rng, self.waveforms = journal, case_id, rng, waveforms
        self.index = 0
        self.count = 0
        self.by_second: dict[int, list[tuple[float, Side, float, float, float]]] = {}

    def add(self, kind: str, payload: dict, blob: bytes | None = None, t_s: float | None = None) -> None:
        self.j.append(self.cid, kind, payload, blob, t_s=t_s)
        self.count += 1

    def stim(self, t: float, side: Side, site: Site, source: Source, amp: float | None, lat: float,
             step: Step | None = None, set_mA: float = 1.0, delivered: float | None = 0.98) -> Measurement:
        valid = amp is not None
        a = None if amp is None else max(0.0, amp * (1 + self.rng.normal(0, 0.04)) + self.rng.normal(0, 8))
        resp = bool(a is not None and a >= 100.0)
        la = lat * (1 + self.rng.normal(0, 0.01)) if resp else None
        stim = Stimulus(self.index, t, site, side, source, set_mA, delivered, 100, step)
        m = Measurement(stim, side.channel, valid, None, resp, a, la, (la - 0.9) if la else None)
        self.index += 1
        self.by_second.setdefault(int(t), []).append((t, side, a or 0.0, lat, set_mA))
        epoch = None
        if self.waveforms:
            epoch = emg_noise(self.rng, PRE + POST)
            if a is not None and a > 0:
                epoch[0 if side is Side.L else 1] += response(a, lat)
            # stimulus artifact on both channels
            epoch[:, PRE:PRE + 20] += set_mA * 300.0 * np.exp(-np.arange(20) / 4.0)
        payload, blob = E.stimulus(m, epoch, FS, PRE) if epoch is not None else (m.to_json(), None)
        self.add("stimulus", payload, blob, t_s=t)
        return m

    def event(self, t: float, kind: EventKind, side: Side, site: Site, priority: Priority, idx: int | None,
              detail: dict | None = None) -> None:
        self.add("rule_event", RuleEvent(t, kind, side, site, priority, idx, detail or {}).to_json(), t_s=t)

    def alarm(self, t: float, transition: str, kind: str, key: str, priority: str, who: str = "engine",
              message: str | None = None) -> None:
        self.add("alarm", {"t": t, "alarm_id": f"{kind}:{key}", "transition": transition, "who": who,
                           "kind": kind, "priority": priority, "detail": {"message": message} if message else {}},
                 t_s=t)


# one case as a script, read top to bottom: its closures are the case's episodes
def write_case(journal: Any, *, duration_s: float = 3 * 3600.0, seed: int = 1, waveforms: bool = True,  # noqa: C901
               emg: tuple[float, float] | None = None, probe_rate_hz: float = 4.0, aps_rate_hz: float = 1.0,
               probing_fraction: float = 0.15, patient_id: str = "PSN-2026-0042",
               surgeon: str = "Dr. A. Example") -> tuple[str, int]:
    """Write the case; returns ``(case_id, entries written)``. ``emg=(t0, t1)`` stores the
    free-running stream between those case times (1 s blocks, both channels)."""
    rng = np.random.default_rng(seed)
    cid = journal.open_case({"patient_id": patient_id, "planned_sides": ["R", "L"], "surgeon": surgeon,
                             "procedure": "total thyroidectomy",
                             "tube": {"type": "EMG endotracheal tube", "size_mm": 7.0, "depth_cm": 20.5},
                             "board": {"firmware_version": "sim", "board_id": "virtual", "simulated": True}})
    w = _Writer(journal, cid, rng, waveforms)
    s = Settings()
    w.add("settings", E.settings(s, "config/default.toml"), t_s=0.5)
    w.add("engine", {"event": "started", "version": "0.1.0"}, t_s=0.6)
    w.add("link", {"event": "connected", "detail": {"board_id": "virtual"}}, t_s=1.0)
    w.add("tube_check", E.tube_check({"L_POS": 1800, "L_NEG": 2100, "R_POS": 1900, "R_NEG": 2300, "GROUND": 900,
                                      "STIM_RETURN": 1100}, 5.0, 1.0, {"L": True, "R": True}), t_s=60.0)
    w.add("laryngoscopy", {"step": "L1", "left": "normal", "right": "normal", "who": "anaesthetist"}, t_s=90.0)
    D = float(duration_s)
    # time plan as fractions of the case
    plan = {"v1r": 0.08, "r1r": 0.14, "r2r": 0.24, "v2r": 0.36, "aps": 0.40, "v1l": 0.42, "r1l": 0.50,
            "traction": 0.58, "r2l": 0.70, "v2l": 0.85, "end_aps": 0.88, "l2": 0.97}
    T = {k: v * D for k, v in plan.items()}

    def burst(t0: float, n: int, side: Side, site: Site, amp: float | None, lat: float, step: Step | None,
              delivered: float | None = 0.98) -> tuple[float, Measurement]:
        m = None
        t = t0
        for _ in range(n):
            m = w.stim(t, side, site, Source.PROBE, amp, lat, step, delivered=delivered)
            t += 1.0 / probe_rate_hz
        return t, m  # type: ignore[return-value]

    def step_entry(t: float, side: Side, step: Step, m: Measurement) -> None:
        w.add("step", E.step(side.value, step.value, m, who="surgeon"), t_s=t)

    # untagged probing (dissection) between steps, at the probe rate
    probe_total = probing_fraction * D
    probe_windows = [(T["r1r"] + 30, T["r2r"] - 30, Side.R), (T["r1l"] + 30, T["r2l"] - 30, Side.L)]
    per_window = probe_total / len(probe_windows)

    events: list[tuple[float, int, Any]] = []  # (t, order, callable)

    def at(t: float, fn: Any) -> None:
        events.append((t, len(events), fn))

    # --- right side (probe only) ---
    def probe_step(key: str, side: Side, site: Site, amp: float, lat: float, step: Step) -> None:
        """12 probe stimuli of a step at its planned time, and the step entry 3 s later."""
        at(T[key], lambda: step_entry(T[key] + 3, side, step, burst(T[key], 12, side, site, amp, lat, step)[1]))

    probe_step("v1r", Side.R, Site.VAGUS, 650, 6.1, Step.V1)
    probe_step("r1r", Side.R, Site.RLN, 820, 3.7, Step.R1)
    for (a, b, side) in probe_windows:
        n = int(per_window * probe_rate_hz)
        span = max(b - a, 1.0)
        times = np.sort(rng.uniform(a, a + span, max(n // 12, 1)))
        for tt in times:
            at(float(tt), lambda tt=tt, side=side: burst(float(tt), 12, side, Site.UNTAGGED,
                                                         float(rng.choice([0.0, 60.0, 750.0])), 3.8, None))

    def r2_right() -> None:
        t = T["r2r"]
        t, _ = burst(t, 8, Side.R, Site.RLN, 780, 3.8, Step.R2)
        w.stim(t, Side.R, Site.RLN, Source.PROBE, 40, 3.8, Step.R2)
        m2 = w.stim(t + 0.25, Side.R, Site.RLN, Source.PROBE, 35, 3.8, Step.R2)
        te = t + 0.30
        w.event(te, EventKind.LOSS_OF_SIGNAL, Side.R, Site.RLN, Priority.HIGH, m2.stimulus.index,
                {"source": "PROBE", "amplitude_uV": m2.amplitude_uV, "baseline_uV": 780.0,
                 "message": "Loss of signal: no response with current delivered. Start troubleshooting."})
        w.alarm(te, "raised", "loss_of_signal", "RLN-R", "high",
                message="Loss of signal: no response with current delivered. Start troubleshooting.")
        w.alarm(te + 6.0, "acknowledged", "loss_of_signal", "RLN-R", "high", who="surgeon")
        answers = [("current_delivered", "yes"), ("leads_ok", "yes"), ("field_dry", "yes"),
                   ("laryngeal_twitch", "no"), ("contralateral_vagus", "yes"), ("tube_position_ok", "yes")]
        for i, (check, ans) in enumerate(answers):
            w.add("troubleshooting", {"check": check, "answer": ans, "side": "R", "who": "surgeon"},
                  t_s=te + 20 + 15 * i)
        for i, (pos, resp) in enumerate([(0.0, True), (5.0, True), (10.0, False), (15.0, False)]):
            w.stim(te + 130 + 10 * i, Side.R, Site.RLN, Source.PROBE, 700 if resp else 30, 3.5)
            w.add("mapping", {"side": "R", "position_mm": pos, "response": resp}, t_s=te + 131 + 10 * i)
        w.add("los_type", {"side": "R", "los_type": 1, "who": "surgeon", "detail": "injury between 5 and 10 mm"},
              t_s=te + 180)
        w.add("staging", {"recommendation": "Consider postponing the second side (INMSG 2018)", "side": "R",
                          "who": "system"}, t_s=te + 181)
        w.add("staging", {"recommendation": "Consider postponing the second side (INMSG 2018)", "side": "R",
                          "decision": "proceed_second_side",
                          "reason": "left dissection with continuous vagal monitoring; discussed with anaesthesia",
                          "who": "surgeon"}, t_s=te + 300)
        w.alarm(te + 400, "reset", "loss_of_signal", "RLN-R", "high", who="surgeon")
        step_entry(te + 1, Side.R, Step.R2, m2)

    at(T["r2r"], r2_right)
    probe_step("v2r", Side.R, Site.VAGUS, 230, 6.3, Step.V2)

    # --- left side: APS + probe ---
    probe_step("v1l", Side.L, Site.VAGUS, 600, 7.9, Step.V1)
    probe_step("r1l", Side.L, Site.RLN, 900, 3.6, Step.R1)
    probe_step("r2l", Side.L, Site.RLN, 880, 3.6, Step.R2)
    probe_step("v2l", Side.L, Site.VAGUS, 570, 7.9, Step.V2)
    t_aps = T["aps"]
    n_aps = int((T["end_aps"] - T["aps"]) * aps_rate_hz)
    trac0, trac1 = T["traction"], T["traction"] + 240.0
    state = {"baseline": None, "combined": False, "run": 0, "rec": 0}

    def aps_stim(t: float) -> None:
        if t < trac0:
            amp, lat = 560.0, 7.9
        elif t < trac0 + 60:
            f = (t - trac0) / 60.0
            amp, lat = 560.0 * (1 - 0.65 * f), 7.9 * (1 + 0.16 * f)
        elif t < trac1:
            f = (t - trac0 - 60) / (trac1 - trac0 - 60)
            amp, lat = 560.0 * (0.35 + 0.6 * f), 7.9 * (1.16 - 0.15 * f)
        else:
            amp, lat = 545.0, 7.95
        m = w.stim(t, Side.L, Site.VAGUS, Source.APS, amp, lat, None)
        idx = m.stimulus.index
        if state["baseline"] is None:
            state.setdefault("acc", []).append((m.amplitude_uV, m.latency_ms))
            if len(state["acc"]) == 20:
                a = float(np.mean([x[0] for x in state["acc"]]))
                la = float(np.mean([x[1] for x in state["acc"]]))
                state["baseline"] = (a, la)
                w.event(t + 0.05, EventKind.BASELINE_SET, Side.L, Site.VAGUS, Priority.INFO, idx,
                        {"source": "APS", "amplitude_uV": round(a, 2), "latency_ms": round(la, 3), "count": 20,
                         "number": 1})
            return
        a0, l0 = state["baseline"]
        bad = (m.amplitude_uV or 0) < 0.5 * a0 and (m.latency_ms or 0) > 1.1 * l0
        if not state["combined"]:
            state["run"] = state["run"] + 1 if bad else 0
            if state["run"] == 3:
                state["combined"] = True
                state["rec"] = 0
                w.event(t + 0.05, EventKind.COMBINED_EVENT, Side.L, Site.VAGUS, Priority.HIGH, idx,
                        {"source": "APS", "amplitude_uV": m.amplitude_uV, "latency_ms": m.latency_ms,
                         "baseline_amplitude_uV": round(a0, 2), "baseline_latency_ms": round(l0, 3),
                         "message": "Combined event: amplitude down and latency up. Release traction."})
                w.alarm(t + 0.05, "raised", "combined_event", "VAGUS-L", "high",
                        message="Combined event: release traction.")
                w.alarm(t + 4.0, "acknowledged", "combined_event", "VAGUS-L", "high", who="surgeon")
                w.add("operator", {"action": "traction_released", "who": "surgeon"}, t_s=t + 5.0)
        else:
            state["rec"] = state["rec"] + 1 if (m.amplitude_uV or 0) >= 0.5 * a0 else 0
            if state["rec"] == 3:
                state["combined"] = False
                state["run"] = 0
                w.event(t + 0.05, EventKind.SIGNAL_RECOVERED, Side.L, Site.VAGUS, Priority.INFO, idx,
                        {"source": "APS", "amplitude_uV": m.amplitude_uV})
                w.alarm(t + 0.05, "cleared", "combined_event", "VAGUS-L", "high")

    for i in range(n_aps):
        t = t_aps + i / aps_rate_hz
        at(t, lambda t=t: aps_stim(t))

    # irritation, cautery, notes, marks
    for k in range(6):
        t = float(rng.uniform(T["r1l"], T["r2l"]))
        side = "L" if k % 2 else "R"
        at(t, lambda t=t, side=side: w.add("irritation", {"side": side, "onset_s": t,
                                                          "duration_s": float(rng.uniform(0.3, 4.0)),
                                                          "peak_uV": float(rng.uniform(150, 900)),
                                                          "kind": "burst", "channel": f"EMG {side}"}, t_s=t + 4))
    for _ in range(20):
        t = float(rng.uniform(0.05 * D, 0.9 * D))
        at(t, lambda t=t: (w.add("cautery", {"state": "start", "onset_s": t}, t_s=t),
                           w.add("cautery", {"state": "end", "onset_s": t, "duration_s": 2.5}, t_s=t + 2.5)))
    at(0.2 * D, lambda: w.add("note", {"text": "Right upper pole: EBSLN not identified.", "who": "surgeon"},
                              t_s=0.2 * D))
    at(0.62 * D, lambda: w.add("snapshot", {"label": "traction at Berry's ligament", "who": "surgeon"},
                               t_s=0.62 * D))
    at(0.3 * D, lambda: w.add("setting_changed", E.setting_changed("analysis.event_threshold_uV", 100.0, 100.0,
                                                                  "surgeon"), t_s=0.3 * D))
    events.sort(key=lambda x: (x[0], x[1]))

    # the free-running stream, 1 s blocks, interleaved by time
    emg_times = []
    if emg is not None:
        t0, t1 = emg
        emg_times = [float(t) for t in np.arange(t0, t1, 1.0)]
    stream_state = {"i": 0}

    def write_emg_until(t_limit: float) -> None:
        while stream_state["i"] < len(emg_times) and emg_times[stream_state["i"]] + 1.0 <= t_limit:
            tb = emg_times[stream_state["i"]]
            block = emg_noise(rng, FS)
            for sec in (int(tb) - 1, int(tb)):
                for (ts, side, a, lat, mA) in w.by_second.get(sec, []):
                    off = int(round((ts - tb) * FS))
                    if -(PRE + POST) < off < FS:
                        wave = response(a, lat) if a > 0 else np.zeros(PRE + POST)
                        wave[PRE:PRE + 20] += mA * 300.0 * np.exp(-np.arange(20) / 4.0)
                        lo, hi = max(off - PRE, 0), min(off + POST, FS)
                        block[0 if side is Side.L else 1, lo:hi] += wave[lo - (off - PRE):hi - (off - PRE)]
            payload, blob = E.emg_block(tb, int(round(tb * FS)), FS, block, res_uV=0.5)
            w.add("emg_block", payload, blob, t_s=tb + 1.0)
            stream_state["i"] += 1

    for t, _order, fn in events:
        write_emg_until(t)
        fn()
    write_emg_until(float("inf"))
    w.add("laryngoscopy", {"step": "L2", "left": "normal", "right": "paresis", "who": "anaesthetist"}, t_s=T["l2"])
    w.add("note", {"text": "Right vocal fold paresis at L2; speech therapy referral.", "who": "surgeon"},
          t_s=T["l2"] + 30)
    journal.close_case(cid, {"reason": "end of surgery", "who": "nurse"})
    return cid, w.count + 2
