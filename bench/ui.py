"""Benchmark: UI frame time while drawing both live traces and the trend plot.

The monitoring screen at 800x480 on a virtual display (Xvfb + Mesa llvmpipe, started
here unless DISPLAY is set), with both sides' reference waveforms, checklists and tone
cues, fed by a stream shaped like the engine's: state at 5 Hz,
free-running EMG envelopes (1000 bins/s per channel in 10 messages/s), probe epochs at
4 Hz and continuous vagal (APS) epochs and measurements at 1 Hz, on top of a two-hour APS
trend preloaded into the trend plot. Frames are paced at 30 per second (the product's
frame rate); each frame's time is the work of one ``EventLoop.idle()`` (clock callbacks
including the engine pump, input, layout, drawing and the buffer swap). The UI gathers
what arrived and redraws at most ``app.ui.main.DISPLAY_HZ`` times a second, so most
frames only run the clock; "frames that redrew the window" counts the others. A run in
which the UI caught an unexpected error fails (status 1) and prints it.

Prints the figures, then the last line exactly:
``UI frame_p50_ms=X frame_p99_ms=X cpu_per_s=X`` (target: p99 under 33 ms).
Runs about 25 s (``LNM_BENCH_UI_SECONDS`` changes the measured 20 s;
``LNM_BENCH_UI_FORCE=1`` makes every frame a full redraw, the worst case).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECONDS = float(os.environ.get("LNM_BENCH_UI_SECONDS", "20"))
FPS = 30.0


class FeedLink:
    """An ``EngineLink`` stand-in producing the engine's stream at real-time rates."""

    def __init__(self) -> None:
        from app.ui.link import Health

        self.t0 = time.monotonic()
        self.t_case = 7200.0  # two hours into the case
        self._health = Health("connected", "bench feed", self.t0)
        self.history: list = []
        self.hello = {"simulated": True}
        self.rng = np.random.default_rng(1)
        self.next = {"state": 0.0, "emg": 0.0, "probe": 0.0, "aps": 0.0}
        self.index = 0
        self.seq = 0
        t = np.arange(300) / 5000.0 * 1000.0 - 10.0
        self.t_ms = t
        self.shape = np.where(t > 3, np.sin((t - 3) / 2.0 * math.pi) * np.exp(-(t - 3) / 3.0), 0.0)
        self.emg_msgs = 0
        self.pending: list[dict] = [{"type": "connection", "connected": True, "hello": self.hello}]

    # EngineLink interface
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def health(self):
        return self._health

    def send(self, cmd, on_done=None, /, **args) -> None:
        from app.ui.link import Reply

        if on_done is None:
            return
        if cmd == "trend.get":
            n = 7200
            t = np.linspace(0, self.t_case, n)
            amp = 100 - 40 * np.clip((t - 5000) / 1500, 0, 1) + self.rng.normal(0, 3, n)
            lat = 100 + 12 * np.clip((t - 5000) / 1500, 0, 1) + self.rng.normal(0, 1, n)
            result = {"series": [{"side": "L", "site": "VAGUS", "source": "APS", "t_s": t.tolist(),
                                  "amplitude_pct": amp.round(1).tolist(), "latency_pct": lat.round(1).tolist(),
                                  "amplitude_uV": (amp * 6.5).tolist(), "latency_ms": (lat * 0.079).tolist()}]}
            self.pending_reply = (on_done, Reply(cmd, True, result=result))
        else:
            self.pending_reply = (on_done, Reply(cmd, True, result={}))
        on_done(self.pending_reply[1])

    def waiting(self) -> int:
        return 0

    def pump(self, max_messages: int = 2000, on_error=None) -> list[dict]:
        now = time.monotonic() - self.t0
        out, self.pending = self.pending, []
        tc = self.t_case + now
        if now >= self.next["state"]:
            self.next["state"] = now + 0.2
            out.append(self._state(tc))
        while now >= self.next["emg"]:
            self.next["emg"] += 0.1
            lo = self.rng.normal(-8, 3, (2, 100)).round(1)
            hi = (lo + self.rng.uniform(5, 20, (2, 100))).round(1)
            out.append({"type": "emg", "t_s": tc, "bin_hz": 1000.0, "cautery": False,
                        "channels": {"EMG L": {"min": lo[0].tolist(), "max": hi[0].tolist()},
                                     "EMG R": {"min": lo[1].tolist(), "max": hi[1].tolist()}}})
        while now >= self.next["probe"]:
            self.next["probe"] += 0.25
            out += self._epoch(tc, "R", "PROBE", "RLN", 900.0)
        while now >= self.next["aps"]:
            self.next["aps"] += 1.0
            out += self._epoch(tc, "L", "APS", "VAGUS", 390.0)
        return out

    def _epoch(self, tc: float, side: str, source: str, site: str, amp: float) -> list[dict]:
        self.index += 1
        other = "R" if side == "L" else "L"
        y = amp * self.shape + self.rng.normal(0, 4, 300)
        y[50:55] += 1500 * np.exp(-np.arange(5))
        z = self.rng.normal(0, 4, 300)
        wave = {"type": "waveform", "index": self.index, "t_s": tc, "side": side, "site": site, "source": source,
                "sample_rate_hz": 5000.0, "t0_ms": -10.0,
                "channels": {f"EMG {side}": y.round(1).tolist(), f"EMG {other}": z.round(1).tolist()}}
        meas = {"type": "measurement", "index": self.index, "t_s": tc, "site": site, "side": side, "source": source,
                "set_mA": 1.0, "delivered_mA": 1.0, "pw_us": 100, "step": None, "channel": f"EMG {side}",
                "valid": True, "invalid_reason": None, "response": True, "amplitude_uV": amp, "latency_ms": 7.9,
                "onset_latency_ms": 6.8, "amplitude_pct": amp / 6.5 if source == "APS" else None,
                "latency_pct": 112.0 if source == "APS" else None}
        return [wave, meas]

    def _state(self, tc: float) -> dict:
        self.seq += 1
        m = {"valid": True, "response": True, "amplitude_uV": 900.0, "latency_ms": 3.9, "site": "RLN",
             "source": "PROBE", "delivered_mA": 1.0, "t_s": tc}
        a = dict(m, amplitude_uV=390.0, latency_ms=8.8, site="VAGUS", source="APS")
        return {"type": "state", "seq": self.seq, "t_s": tc, "engine": {"simulated": True},
                "board": {"connected": True, "faults": []},
                "case": {"case_id": "BENCH", "patient_id": "BENCH-1", "planned_sides": ["L", "R"]},
                "stim": {"confirm_above_mA": 3.0,
                         "probe": {"on": True, "current_mA": 1.0, "delivered_mA": 1.0, "site": "RLN", "side": "R"},
                         "aps": {"on": True, "current_mA": 1.0, "delivered_mA": 1.0, "side": "L"}},
                "threshold_uV": 100.0, "volume_pct": 70.0, "last": {"L": a, "R": m},
                "aps": {"L": {"baseline_uV": 650.0, "baseline_latency_ms": 7.9, "baseline_count": 20,
                              "baseline_needed": 20, "collecting": False, "amplitude_pct": 60.0, "latency_pct": 112.0}},
                "steps": {"L": {"L1": {"finding": "normal"}},
                          "R": {"L1": {"finding": "normal"},
                                "R1": {"amplitude_uV": 950.0, "latency_ms": 3.9, "stimulus_index": 1}}},
                "baselines": {"RLN-R": {"amplitude_uV": 950.0, "latency_ms": 3.9}},
                "los": {}, "troubleshooting": {}, "mapping": {}, "staging": {},
                "alarms": {"type": "alarms", "audio": "normal", "active": []}}


def main() -> int:
    from app.ui.display import VirtualDisplay

    vd = None
    if not os.environ.get("DISPLAY"):
        vd = VirtualDisplay(1280, 800)
        os.environ["DISPLAY"] = vd.start()
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    kivy_home = None
    if "KIVY_HOME" not in os.environ:
        import tempfile

        kivy_home = tempfile.mkdtemp(prefix="lnm-bench-kivy-")
        os.environ["KIVY_HOME"] = kivy_home
    try:
        from app.ui.options import UiOptions, configure_kivy

        # unlimited frame rate: the pacing is done here, so a frame's time is only its work
        opts = UiOptions(size=(800, 480), start_screen="monitor", max_fps=0)
        configure_kivy(opts)

        from app.ui import embed
        from app.ui.main import LnmApp

        app = LnmApp(opts, link=FeedLink())
        embed.start(app)
        embed.step(30)  # warm up: textures, first layout, trend load
        mon = app.screens["monitor"]
        embed.step(5)
        times: list[float] = []
        c0, w0 = time.process_time(), time.monotonic()
        next_frame = time.monotonic()
        end = w0 + SECONDS
        force = os.environ.get("LNM_BENCH_UI_FORCE") == "1"  # every frame a full redraw (worst case)
        while time.monotonic() < end:
            if force:
                embed.request_redraw()
            t = time.perf_counter()
            embed.step(1)
            times.append((time.perf_counter() - t) * 1000.0)
            next_frame += 1.0 / FPS
            delay = next_frame - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_frame = time.monotonic()
        cpu = (time.process_time() - c0) / (time.monotonic() - w0)
        trend_pts = len(mon.ids.trend._series["amp"]["line"].points) // 2
        drawn = {s: mon.ids[f"panel_{s}"].ids.epoch.frames_drawn for s in ("L", "R")}
        emg_drawn = mon.ids.panel_L.ids.emg.frames_drawn
        faults = list(app.faults)
        embed.stop(app)
    finally:
        if vd is not None:
            vd.stop()
        if kivy_home is not None:
            import shutil

            shutil.rmtree(kivy_home, ignore_errors=True)
    for f in faults:  # the bench measures a UI that works: an error it caught is a failed run
        print(f"UI ERROR ({f.count}x) while {f.where}:\n{f.trace}")
    if faults:
        return 1
    a = np.asarray(times)
    p50, p90, p99, worst = (float(np.percentile(a, q)) for q in (50, 90, 99, 100))
    print(f"frames: {len(a)} in {SECONDS:g} s (paced at {FPS:g}/s), window 800x480, Mesa llvmpipe")
    print(f"epoch redraws L/R: {drawn['L']}/{drawn['R']}, EMG strip redraws: {emg_drawn}, "
          f"trend points drawn: {trend_pts} (from 7200 + live)")
    drawn_frames = a[a > 2.0]  # frames that redrew the window (the others only ran the clock)
    if len(drawn_frames):
        print(f"frames that redrew the window: {len(drawn_frames)} ({len(drawn_frames) / SECONDS:.1f}/s), "
              f"their p50 {np.percentile(drawn_frames, 50):.2f} ms")
    print(f"frame ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {worst:.2f}  (target p99 < 33)")
    print(f"UI frame_p50_ms={p50:.2f} frame_p99_ms={p99:.2f} cpu_per_s={cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
