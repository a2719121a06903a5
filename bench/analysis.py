"""Benchmark: epoch measurement throughput and ``lnm analyze`` on a two-hour recording.

1. Epoch throughput on one core: 2,000 different two-channel epochs at 20 kHz (10 ms
   before, 50 ms after the stimulus), each measured on its ipsilateral channel (one
   channel per epoch). Reported for the batch API (``EpochAnalyzer.measure_batch``, what
   ``lnm analyze`` uses) and, for information, one epoch at a time as the live engine
   calls it (``measure_board_epoch``). The last line reports the batch figure.
2. ``lnm analyze`` (the installed command, a fresh process) on a generated two-hour EDF+
   recording: 2 channels at 20 kHz (288 M samples), the left vagus stimulated by the APS
   electrode at 1 Hz, probe bursts (8 stimuli at 4 Hz on the right RLN) every 30 s, and a
   loss of signal on the left after 100 minutes. Only the analysis is timed, not the
   generation. The result is checked (stimuli, loss of signal at the right stimulus).

3. For information: the free-running detector on 30 s of two-channel 20 kHz EMG fed in
   20 ms blocks (activity, ECG, cautery), and on 30 s of quiet EMG as the live engine feeds
   it (0.1 s blocks, 80 ms held back, a stimulus noted each second).
4. Measurement at the physical limit: 200 µV responses in 30 µV RMS noise (10 Hz - 5 kHz)
   with ECG, hum, wander and the stimulus artifact, at 5, 10, 20 and 44.1 kHz: 10 nerve
   sites per rate (each its own random shape) stimulated 30 times at 1 Hz, noisy from the
   first stimulus, one analyzer per site as in a case. ``lowsnr_vs_oracle`` is the share
   of epochs measured within 10 % divided by the share the known-shape least-squares
   oracle reaches on the same epochs (exact shape and latency, the epoch's own white noise
   only: the Cramér-Rao bound); ``lowsnr_median_err`` the median relative error. For
   information, the same for each epoch measured alone (the first stimulus at a site).

Last line: ``ANALYSIS epochs_per_s=N analyze_x_realtime=X lowsnr_vs_oracle=R lowsnr_median_err=E``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "analysis"))

from app.analysis.edf import Recording, write_edf  # noqa: E402
from app.analysis.epoch import EpochAnalyzer  # noqa: E402
from app.analysis.freerun import FreeRunDetector  # noqa: E402
from app.model import Measurement, Side, Site, Source, Stimulus  # noqa: E402
from app.settings import Settings  # noqa: E402
from emg_synth import (  # noqa: E402
    Episode,
    ResponseSpec,
    Truth,
    known_shape_oracle,
    make_epoch,
    make_stream,
    response_waveform,
    site_sequence,
    stim_artifact,
    white_noise,
)
from firmware_bridge.messages import Output, StimEpoch  # noqa: E402

FS = 20000
HOURS = 2.0
LOSS_AT_S = 6000.0


def _pin_one_core() -> None:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass


def bench_epochs(n_epochs: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    pre, post = FS // 100, FS // 20
    t_ms = (np.arange(pre + post) - pre) * 1000.0 / FS
    epochs = np.empty((n_epochs, 2, pre + post))
    stims = []
    for i in range(n_epochs):
        side = Side.L if i % 2 == 0 else Side.R
        site = Site.VAGUS if i % 3 else Site.RLN
        resp = ResponseSpec(float(rng.uniform(50, 2000)), float(rng.uniform(3, 9)), int(rng.choice([-1, 1])))
        for ch in range(2):
            epochs[i, ch] = white_noise(rng, pre + post, FS, 10.0) + stim_artifact(t_ms, 3000.0)
        epochs[i, 0 if side is Side.L else 1] += response_waveform(resp, t_ms)
        stims.append(Stimulus(i, float(i), site, side, Source.APS, 1.0, 1.0))
    analyzer = EpochAnalyzer(Settings())
    channels = [s.side.channel for s in stims]
    rows = np.array([epochs[i, 0 if s.side is Side.L else 1] for i, s in enumerate(stims)])

    analyzer.measure_batch(rows[:10], FS, pre, stims[:10], channels[:10])  # warm the filter cache
    best_batch = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        ipsi = np.array([epochs[i, 0 if s.side is Side.L else 1] for i, s in enumerate(stims)])  # pick the channel
        ms = analyzer.measure_batch(ipsi, FS, pre, stims, channels)
        dt = time.perf_counter() - t0
        best_batch = max(best_batch, n_epochs / dt)
    responses = sum(m.response for m in ms)

    counts = np.round(epochs * 1000 / 100).astype(np.int32)  # 100 nV per count, as from the board
    board = [StimEpoch(i * 1000, i, Output.APS, 1000, 1000, 100, FS, pre, 100, counts[i]) for i in range(n_epochs)]
    best_single = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for ep, s in zip(board, stims, strict=True):
            analyzer.measure_board_epoch(ep, s)
        dt = time.perf_counter() - t0
        best_single = max(best_single, n_epochs / dt)
    print(f"epochs: {n_epochs} two-channel epochs, 20 kHz, 60 ms; ipsilateral channel measured ({responses} responses)")
    print(f"  batch API (lnm analyze):        {best_batch:8.0f} epochs/s on one core")
    print(f"  one at a time (live engine):    {best_single:8.0f} epochs/s on one core")
    return best_batch, best_single


def bench_freerun(seconds: float = 30.0) -> float:
    eps = (Episode(0, 3.0, 0.5, "burst", 200.0), Episode(1, 10.0, 4.0, "train", 150.0))
    x = make_stream(FS, seconds, episodes=eps, noise_uV=8.0, ecg_uV=80.0, hum_uV=10.0, cautery=((20.0, 2.0),), seed=2)
    det = FreeRunDetector(Settings(), FS)
    blk = FS // 50  # 20 ms blocks, as the board streams them
    t0 = time.perf_counter()
    events = []
    for i in range(0, x.shape[1], blk):
        events += det.feed(x[:, i : i + blk], i / FS)
    dt = time.perf_counter() - t0
    print(f"free-running EMG: {seconds:g} s of 2 x 20 kHz in {dt:.2f} s ({seconds / dt:.0f}x real time, "
          f"{len(events)} events: {', '.join(e.kind.value for e in events)})")
    # as the live engine feeds it: 0.1 s blocks, the newest 80 ms held back for the stimuli's
    # epochs, quiet EMG with a stimulus each second (its artifact in the stream, noted once
    # its epoch has arrived)
    q = make_stream(FS, seconds, noise_uV=8.0, ecg_uV=80.0, hum_uV=10.0, seed=3)
    stims = np.arange(0.37, seconds, 1.0)
    for ts in stims:
        i0 = int(ts * FS)
        q[:, i0 : i0 + 40] += 3000.0 * np.exp(-np.arange(40) / 6.0)
    det = FreeRunDetector(Settings(), FS, stimulus_wait_s=0.08)
    blk, k = FS // 10, 0
    t0 = time.perf_counter()
    for i in range(0, q.shape[1], blk):
        while k < len(stims) and stims[k] + 0.06 <= (i + blk) / FS:
            det.note_stimulus(float(stims[k]))
            k += 1
        det.feed(q[:, i : i + blk], i / FS)
    dt_live = time.perf_counter() - t0
    print(f"  as the engine feeds it (0.1 s blocks, 1 Hz stimuli noted, quiet): {seconds / dt_live:.0f}x real time, "
          f"{dt_live / (q.shape[1] / blk) * 1e6:.0f} us per block")
    return seconds / dt


class _FastSignal:
    """Two hours of one EMG channel, generated per slice from periodic tables."""

    def __init__(self, channel: int, n: int, onsets: np.ndarray, kernels: list[np.ndarray], pre: int) -> None:
        rng = np.random.default_rng(10 + channel)
        self.n = n
        self.noise = white_noise(rng, 1 << 20, FS, 8.0)
        t = np.arange(16000) / FS  # ECG at 75 / min: 0.8 s
        tau = np.where(t > 0.4, t - 0.8, t)
        self.ecg = 20.0 * (np.exp(-0.5 * (tau / 0.008) ** 2) - 0.35 * np.exp(-0.5 * ((tau - 0.022) / 0.01) ** 2))
        self.hum = 5.0 * np.sin(2 * np.pi * 50 * np.arange(400) / FS + channel)
        self.onsets, self.kernels, self.pre = onsets, kernels, pre
        self.klen = max(len(k) for k in kernels) if kernels else 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> np.ndarray:
        a, b, _ = s.indices(self.n)
        idx = np.arange(a, b)
        x = self.noise[idx & ((1 << 20) - 1)] + self.ecg[idx % 16000] + self.hum[idx % 400]
        i0 = np.searchsorted(self.onsets, a - self.klen)
        i1 = np.searchsorted(self.onsets, b + self.pre)
        for i in range(i0, i1):
            k = self.kernels[i]
            s0 = int(self.onsets[i]) - self.pre
            lo, hi = max(a, s0), min(b, s0 + len(k))
            if hi > lo:
                x[lo - a : hi - a] += k[lo - s0 : hi - s0]
        return x


def make_recording(path: Path) -> tuple[list[Stimulus], int]:
    duration = HOURS * 3600.0
    n = int(duration * FS)
    pre = FS // 100
    t_ms = (np.arange(-pre, int(0.06 * FS)) * 1000.0 / FS)
    vagus = stim_artifact(t_ms, 3000.0) + response_waveform(ResponseSpec(700.0, 7.8), t_ms)
    rln = stim_artifact(t_ms, 3000.0) + response_waveform(ResponseSpec(850.0, 3.7, polarity=-1), t_ms)
    art = stim_artifact(t_ms, 1500.0)
    stims: list[Stimulus] = []
    for k in range(int(duration) - 1):
        stims.append(Stimulus(0, 1.0 + k, Site.VAGUS, Side.L, Source.APS, 1.0, 0.99))
    for burst in np.arange(15.0, duration - 5, 30.0):
        for j in range(8):
            stims.append(Stimulus(0, float(burst + 0.25 * j + 0.1), Site.RLN, Side.R, Source.PROBE, 1.0, None))
    stims.sort(key=lambda s: s.t_s)
    stims = [Stimulus(i, s.t_s, s.site, s.side, s.source, s.set_mA, s.delivered_mA) for i, s in enumerate(stims)]
    onsets = np.array([int(round(s.t_s * FS)) for s in stims])
    left = [(vagus if s.t_s < LOSS_AT_S else art) if s.side is Side.L else art for s in stims]
    right = [rln if s.side is Side.R else art for s in stims]
    signals = {"EMG L": _FastSignal(0, n, onsets, left, pre), "EMG R": _FastSignal(1, n, onsets, right, pre)}
    write_edf(path, Recording(float(FS), signals, stims), physical_max_uV=10000.0, chunk_s=60.0)
    return stims, n


def bench_analyze() -> float:
    with tempfile.TemporaryDirectory(prefix="lnm-bench-") as d:
        path = Path(d) / "two_hours.edf"
        out = Path(d) / "result.json"
        t0 = time.perf_counter()
        stims, n = make_recording(path)
        gen = time.perf_counter() - t0
        size = path.stat().st_size
        print(f"recording: {HOURS:g} h, 2 x {FS} Hz ({2 * n / 1e6:.0f} M samples, {size / 1e6:.0f} MB), "
              f"{len(stims)} stimuli; generated and written in {gen:.1f} s (not timed)")
        lnm = Path(sys.executable).with_name("lnm")
        cmd = [str(lnm), "analyze", str(path), "--out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        t0 = time.perf_counter()
        argv = ["taskset", "-c", "0", *cmd] if _has_taskset() else cmd
        p = subprocess.run(argv, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            raise SystemExit(f"lnm analyze failed with exit {p.returncode}")
        doc = json.loads(out.read_text())
        los = [e for e in doc["events"] if e["kind"] == "loss_of_signal"]
        first_lost = next(s for s in stims if s.side is Side.L and s.t_s >= LOSS_AT_S)
        second_lost = next(s for s in stims if s.side is Side.L and s.t_s > first_lost.t_s)
        ok = (
            len(doc["stimuli"]) == len(stims)
            and len(los) == 1
            and los[0]["stimulus_index"] == second_lost.index
            and sum(s["response"] for s in doc["stimuli"])
            >= 0.99 * sum(1 for s in stims if s.side is Side.R or s.t_s < LOSS_AT_S)
        )
        x = HOURS * 3600.0 / elapsed
        print(f"lnm analyze: {elapsed:.1f} s for {HOURS * 3600:.0f} s of recording ({x:.0f}x real time, one core, "
              f"including process start); {sum(s['response'] for s in doc['stimuli'])} responses, "
              f"loss of signal at stimulus {los[0]['stimulus_index'] if los else None} "
              f"(expected {second_lost.index}): {'OK' if ok else 'WRONG'}")
        if not ok:
            raise SystemExit("lnm analyze gave a wrong result on the generated recording")
        return x


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None


def _random_shape(rng: np.random.Generator, amplitude: float) -> ResponseSpec:
    return ResponseSpec(
        amplitude_uV=amplitude, peak_ms=float(rng.uniform(3.0, 12.0)), polarity=int(rng.choice([-1, 1])),
        width_ms=float(rng.uniform(0.4, 0.9)), ratio=float(rng.uniform(0.5, 1.0)), gap_ms=float(rng.uniform(1.4, 2.5)),
    )


def _relative_error(m: Measurement, truth: Truth) -> float:
    """The measured amplitude's relative error; infinite when no response was measured."""
    if m.valid and m.response and m.amplitude_uV is not None:
        return m.amplitude_uV / truth.amplitude_uV - 1.0
    return np.inf


def bench_lowsnr(sites: int = 10, per_site: int = 30) -> tuple[float, float]:
    """(lowsnr_vs_oracle, median relative error) over all rates; prints the details."""
    shares, oracles, errors, alone = [], [], [], []
    for fs in (5000.0, 10000.0, 20000.0, 44100.0):
        rng = np.random.default_rng(2024 + int(fs))
        err_list: list[float] = []
        orc_list: list[float] = []
        for k in range(sites):
            shape = _random_shape(rng, 200.0)
            analyzer = EpochAnalyzer(Settings())
            for j, spec in enumerate(site_sequence(rng, fs, shape, per_site, noise_uV=30.0, seed0=1000 * k)):
                x, pre, truth = make_epoch(spec)
                if truth is None:
                    raise RuntimeError("site_sequence gave an epoch without a response")
                s = Stimulus(j, spec.t0_s, Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)
                m = analyzer.measure(x, fs, pre, s, "EMG L")
                err_list.append(_relative_error(m, truth))
                orc_list.append(known_shape_oracle(spec))
                if j == 0:
                    first = EpochAnalyzer(Settings()).measure(x, fs, pre, s, "EMG L")
                    alone.append((_relative_error(first, truth), orc_list[-1]))
        errs, orc = np.array(err_list), np.array(orc_list)
        share, share_o = float(np.mean(np.abs(errs) <= 0.1)), float(np.mean(np.abs(orc) <= 0.1))
        print(f"  {fs / 1000:g} kHz: {share:.1%} of {len(errs)} epochs within 10 % (oracle {share_o:.1%}, "
              f"ratio {share / share_o:.3f}); median error {np.median(errs):+.1%}, median |error| "
              f"{np.median(np.abs(errs)):.1%} (oracle {np.median(np.abs(orc)):.1%}); "
              f"{int(np.sum(~np.isfinite(errs)))} not measured as a response")
        shares.append(share)
        oracles.append(share_o)
        errors.append(errs)
    all_errs = np.concatenate(errors)
    ratio = float(np.mean(shares) / np.mean(oracles))
    a = np.array(alone)
    print(f"low SNR (200 uV in 30 uV RMS, {len(all_errs)} epochs): within 10 % {np.mean(shares):.1%} vs oracle "
          f"{np.mean(oracles):.1%}: ratio {ratio:.3f}; median error {np.median(all_errs):+.1%}")
    print(f"  for information, the first stimulus at each site measured alone ({len(a)} epochs): within 10 % "
          f"{np.mean(np.abs(a[:, 0]) <= 0.1):.1%} vs oracle {np.mean(np.abs(a[:, 1]) <= 0.1):.1%}, "
          f"median error {np.median(a[:, 0]):+.1%}")
    return ratio, float(np.median(all_errs))


def main() -> int:
    _pin_one_core()
    batch, _single = bench_epochs()
    bench_freerun()
    x = bench_analyze()
    lowsnr, median_err = bench_lowsnr()
    print(f"ANALYSIS epochs_per_s={batch:.0f} analyze_x_realtime={x:.0f} lowsnr_vs_oracle={lowsnr:.3f} "
          f"lowsnr_median_err={median_err:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
