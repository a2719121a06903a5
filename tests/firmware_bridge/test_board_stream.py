"""The virtual board's free-running stream and stimulus epochs: one signal, consistent
indices and times, acquisition settings, and the confounders visible in the stream."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import (
    Ack,
    ConfigureAcquisition,
    EmgBlock,
    Hello,
    HostHeartbeat,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.board import VirtualBoard


class Rig:
    def __init__(self, seed: int = 13, config: ConfigureAcquisition | None = None, **kw) -> None:
        self.clock = ManualClock()
        self.board = VirtualBoard(self.clock, seed=seed, **kw)
        self.dec = codec.Decoder()
        self.seq = 0
        self.msgs: list = []
        self.send(Hello())
        self.send(HostHeartbeat(0))
        self.send(config or ConfigureAcquisition())
        assert any(isinstance(m, Ack) for m in self.pump())

    def send(self, m) -> None:
        self.board.receive(codec.encode(m, self.seq))
        self.seq += 1

    def pump(self) -> list:
        new = [f.message for f in self.dec.feed(self.board.poll())]
        self.msgs += new
        return new

    def run(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            self.send(HostHeartbeat(self.seq))
            self.pump()

    def blocks(self) -> list[EmgBlock]:
        return [m for m in self.msgs if isinstance(m, EmgBlock)]

    def epochs(self) -> list[StimEpoch]:
        return [m for m in self.msgs if isinstance(m, StimEpoch)]

    def stream(self) -> tuple[np.ndarray, EmgBlock]:
        blocks = self.blocks()
        for a, b in itertools.pairwise(blocks):
            assert b.first_sample == a.first_sample + a.samples.shape[1]  # no gap, no overlap
        return np.concatenate([b.samples for b in blocks], axis=1), blocks[0]


def test_blocks_are_consecutive_and_timed():
    rig = Rig()
    rig.run(2.0)
    x, first = rig.stream()
    blocks = rig.blocks()
    assert all(b.sample_rate_hz == 20000 and b.nv_per_count == 100 and b.samples.shape == (2, 400) for b in blocks)
    assert x.shape[1] >= 0.99 * 2.0 * 20000
    for b in blocks:  # board_time_us follows the sample index exactly
        assert b.board_time_us - first.board_time_us == (b.first_sample - first.first_sample) * 50
    uv = x * 0.1
    assert 2.0 < np.std(uv[:, :20000]) < 60.0  # a quiet baseline of a few uV with ECG, hum, breathing


def test_epoch_samples_are_the_stream_samples():
    rig = Rig()
    rig.run(0.1)
    rig.board.control("probe", contact="nerve", site="VAGUS", side="L")
    rig.send(Stimulate(Output.PROBE, StimMode.CONTINUOUS, 1000, 100, 7000))
    rig.run(2.0)
    x, first = rig.stream()
    epochs = rig.epochs()
    assert len(epochs) >= 12
    t0 = first.board_time_us - first.first_sample * 50
    for ep in epochs:
        assert ep.samples.shape == (2, 1200) and ep.pre_samples == 200 and ep.sample_rate_hz == 20000
        k = (ep.board_time_us - t0) // 50
        assert (ep.board_time_us - t0) % 50 == 0  # onset on the sample grid
        a = k - ep.pre_samples - first.first_sample
        if a + 1200 <= x.shape[1]:
            assert np.array_equal(ep.samples, x[:, a:a + 1200])
    counters = [ep.stim_counter for ep in epochs]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


def _measure(ep: StimEpoch, side: str) -> tuple[float, float]:
    """Peak-to-peak and first-major-peak latency (0.5 ms smoothing against noise wiggles)."""
    uv = ep.microvolts()[0 if side == "L" else 1]
    uv = uv - np.median(uv[: ep.pre_samples])
    uv = np.convolve(uv, np.ones(9) / 9, mode="same")
    w = uv[ep.pre_samples + 30: ep.pre_samples + 600]  # 1.5-30 ms
    big = np.max(np.abs(w))
    for i in range(1, len(w) - 1):
        if abs(w[i]) >= 0.5 * big and abs(w[i]) >= abs(w[i - 1]) and abs(w[i]) >= abs(w[i + 1]):
            return float(w.max() - w.min()), (i + 30) / 20.0
    raise AssertionError("no peak")


@pytest.mark.parametrize("site,side", [("VAGUS", "L"), ("VAGUS", "R"), ("RLN", "L"), ("RLN", "R")])
def test_epoch_response_matches_the_truth(site, side):
    rig = Rig(seed=13)
    rig.board.control("probe", contact="nerve", site=site, side=side)
    rig.send(Stimulate(Output.PROBE, StimMode.CONTINUOUS, 1000, 100, 4000))
    rig.run(2.0)
    truth = {t.stim_counter: t for t in rig.board.truth}
    for ep in rig.epochs()[1:]:
        tr = truth[ep.stim_counter]
        assert abs(ep.delivered_current_uA - 1000) <= 25 and ep.set_current_uA == 1000
        p2p, lat = _measure(ep, side)
        assert p2p == pytest.approx(tr.amplitude_uV, rel=0.1, abs=25)
        assert lat == pytest.approx(tr.latency_ms, abs=0.15)
        other = ep.microvolts()[1 if side == "L" else 0]
        other = other[ep.pre_samples + 30:] - np.median(other[: ep.pre_samples])
        assert np.ptp(other) < 0.3 * p2p  # ipsilateral response


def test_left_vagus_latency_longer_on_the_wire():
    rig = Rig(seed=13)
    rig.run(0.1)
    lat = {}
    for side in "LR":
        rig.board.control("probe", contact="nerve", site="VAGUS", side=side)
        rig.send(Stimulate(Output.PROBE, StimMode.SINGLE, 1000))
        n = len(rig.epochs())
        rig.run(0.2)
        lat[side] = _measure(rig.epochs()[n], side)[1]
    assert lat["L"] > lat["R"] + 0.8


def test_air_contact_delivers_nothing_on_the_wire():
    rig = Rig()
    rig.board.control("probe", contact="air")
    rig.send(Stimulate(Output.PROBE, StimMode.SINGLE, 2000))
    rig.run(0.2)
    (ep,) = rig.epochs()
    assert ep.set_current_uA == 2000 and 0 <= ep.delivered_current_uA < 10


def test_decimated_stream_and_channel_mask():
    rig = Rig(config=ConfigureAcquisition(stream_decimation=10, stream_block_samples=100, channel_mask=0b10))
    rig.run(0.1)
    rig.board.control("probe", contact="nerve", site="RLN", side="R")
    rig.send(Stimulate(Output.PROBE, StimMode.SINGLE))
    rig.run(1.0)
    x, first = rig.stream()
    assert first.sample_rate_hz == 2000 and x.shape[0] == 1 and x.shape[1] >= 1900
    (ep,) = rig.epochs()
    assert ep.samples.shape == (1, 1200) and ep.sample_rate_hz == 20000
    # the decimated stream is the block mean of the full-rate signal
    t0 = first.board_time_us - first.first_sample * 500
    k = (ep.board_time_us - t0) // 50 - ep.pre_samples  # full-rate index of the epoch start
    j0 = -(-k // 10)
    seg = ep.samples[0, j0 * 10 - k: j0 * 10 - k + 1000].reshape(-1, 10).mean(axis=1)
    assert np.allclose(x[0, j0: j0 + 100], np.rint(seg), atol=1)


def test_gain_and_sample_rate():
    rig = Rig(config=ConfigureAcquisition(sample_rate_hz=10000, gain=4, epoch_pre_ms=5, epoch_post_ms=40))
    rig.run(0.1)
    rig.board.control("probe", contact="nerve", site="VAGUS", side="R")
    rig.send(Stimulate(Output.PROBE, StimMode.SINGLE))
    rig.run(0.5)
    (ep,) = rig.epochs()
    assert ep.nv_per_count == 25 and ep.sample_rate_hz == 10000
    assert ep.pre_samples == 50 and ep.samples.shape == (2, 450)
    assert rig.blocks()[0].nv_per_count == 25
    p2p = np.ptp(ep.microvolts()[1, 50 + 15:])
    assert p2p == pytest.approx(rig.board.truth[-1].amplitude_uV, rel=0.15)


def _band_power(x: np.ndarray, fs: float, lo: float, hi: float) -> float:
    f = np.fft.rfftfreq(x.size, 1 / fs)
    p = np.abs(np.fft.rfft(x - x.mean())) ** 2
    return float(p[(f >= lo) & (f <= hi)].sum())


def test_hum_breathing_and_ecg_in_the_stream():
    rig = Rig(seed=5, patient_overrides={"ecg_uV": 25.0})
    rig.run(12.0, step=0.5)
    x, _ = rig.stream()
    uv = x[0] * 0.1
    fs = 20000
    # mains hum: a line at 50 Hz well above its neighbourhood
    assert _band_power(uv, fs, 49.5, 50.5) > 20 * _band_power(uv, fs, 44.0, 46.0)
    # breathing: power at the ventilation rate (below 0.5 Hz)
    rr = rig.board.patient.params.resp_rate_per_min / 60.0
    assert _band_power(uv, fs, rr - 0.05, rr + 0.05) > 5 * _band_power(uv, fs, 0.6, 0.7)
    # ECG: R waves at the heart rate (low-passed signal peaks)
    smooth = np.convolve(uv, np.ones(60) / 60, mode="same")  # 3 ms
    smooth -= np.convolve(uv, np.ones(1000) / 1000, mode="same")  # minus 50 ms: no breathing wander
    hr = rig.board.patient.params.heart_rate_bpm
    gain = rig.board.patient.params.left.ecg_uV
    peaks = np.nonzero((smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]) & (smooth[1:-1] > 0.5 * gain))[0]
    beats = len([p for i, p in enumerate(peaks) if i == 0 or p - peaks[i - 1] > 0.3 * fs])
    assert abs(beats - hr * len(uv) / fs / 60) <= 3


def test_respiratory_variation_follows_vocal_fold_contact():
    def resp_power(tube: float) -> float:
        rig = Rig(seed=5)
        rig.board.control("tube", left=tube, over_s=0.0)
        rig.run(12.0, step=0.5)
        x, _ = rig.stream()
        rr = rig.board.patient.params.resp_rate_per_min / 60.0
        return _band_power(x[0] * 0.1, 20000, rr - 0.05, rr + 0.05)

    assert resp_power(1.0) > 10 * resp_power(0.2)


def test_irritation_train_on_one_side_only():
    rig = Rig(seed=5)
    rig.run(0.5)
    n0 = len(rig.blocks())
    rig.board.control("irritation", side="R", kind="train", duration_s=2.0, rate_hz=40.0, amplitude_uV=300.0)
    rig.run(2.5)
    x = np.concatenate([b.samples for b in rig.blocks()[n0:]], axis=1) * 0.1
    right, left = x[1, :40000], x[0, :40000]
    assert np.ptp(right) > 200 and np.ptp(left) < 150
    spikes = np.nonzero((np.abs(right[1:-1]) > 100) & (np.abs(right[1:-1]) >= np.abs(right[:-2]))
                        & (np.abs(right[1:-1]) > np.abs(right[2:])))[0]
    trains = [s for i, s in enumerate(spikes) if i == 0 or s - spikes[i - 1] > 200]
    assert 70 <= len(trains) <= 90  # 40 Hz for 2 s


def test_same_seed_same_stream():
    def stream(seed):
        rig = Rig(seed=seed)
        rig.board.control("probe", contact="nerve", site="RLN", side="L")
        rig.send(Stimulate(Output.PROBE, StimMode.CONTINUOUS, 1000, 100, 4000))
        rig.run(1.0)
        return rig.stream()[0]

    a, b = stream(9), stream(9)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, stream(10))
