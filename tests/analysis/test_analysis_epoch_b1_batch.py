"""``EpochAnalyzer.analyse_batch`` end to end: edges of the epoch geometry, the baseline step,
the response window's end, an empty batch, and what invalid epochs teach (nothing).

The baseline step compares the median of the last 5 ms of the window with the median of
the pre-stimulus part (raw samples); it is judged only when there is a pre-stimulus part
and the window runs more than 5 ms past the end of the artifact blank. The mains profile
of a channel learns only from epochs that are finite, free of cautery and not saturated.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings


def _stim(j: int = 0, t_s: float = 1.0, site: Site = Site.VAGUS) -> Stimulus:
    return Stimulus(j, t_s, site, Side.L, Source.PROBE, 1.0, 1.0)


def _step_uV(detail: str) -> float:
    """The size of the baseline step a detail names."""
    found = re.fullmatch(r"baseline step of (\d+) uV", detail)
    assert found, detail
    return float(found.group(1))


def _gauss(t_ms: np.ndarray, amp: float, centre: float, sigma: float = 0.5) -> np.ndarray:
    return amp * np.exp(-0.5 * ((t_ms - centre) / sigma) ** 2)


# ------------------------------------------------------------------ epoch geometry


def test_an_epoch_that_starts_at_the_stimulus_is_measured():
    """``pre_samples`` 0 (no pre-stimulus part): no baseline step can be judged, and the
    response after the blank is measured like any other (no error)."""
    fs, n = 5000.0, 250
    t = np.arange(n) / fs * 1000.0
    x = np.random.default_rng(1).normal(0.0, 5.0, n) + _gauss(t, 300.0, 8.0)
    a = EpochAnalyzer(Settings()).analyse(x, fs, 0, _stim(), "EMG L")
    m = a.measurement
    assert m.valid and m.response, a.detail
    assert m.amplitude_uV == pytest.approx(300.0, rel=0.1)
    assert m.latency_ms == pytest.approx(8.0, abs=0.05)


def test_a_single_pre_stimulus_sample_is_enough_to_judge_a_baseline_step():
    """Onset at sample 1 (one sample before it, the blank starting at the onset): a level
    500 µV higher after the stimulus than before it, to the end of the window, is a
    baseline step (``artifact``), not a measurement."""
    fs, n = 10_000.0, 600
    x = np.random.default_rng(2).normal(0.0, 5.0, n)
    x[1:] += 500.0
    a = EpochAnalyzer(Settings()).analyse(x, fs, 1, _stim(), "EMG L")
    assert a.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert _step_uV(a.detail) == pytest.approx(500.0, abs=20.0)


def test_a_constant_electrode_offset_is_no_baseline_step():
    """1500 µV of DC on the whole epoch (below the rail): the level after the stimulus is
    the level before it, so there is no step; the quiet epoch is valid."""
    fs, n = 5000.0, 300
    x = 1500.0 + np.random.default_rng(3).normal(0.0, 5.0, n)
    a = EpochAnalyzer(Settings()).analyse(x, fs, 50, _stim(), "EMG L")
    m = a.measurement
    assert m.valid and not m.response, a.detail
    assert m.amplitude_uV < 50.0
    assert "step" not in a.detail


@pytest.mark.parametrize(("window_ms", "judged"), [(10.0, False), (10.1, True)])
def test_the_baseline_step_needs_more_than_5_ms_after_the_blank(window_ms, judged):
    """Blank 5 ms, window 10 ms: the window ends exactly 5 ms after the blank, too short
    for the step to be judged, so a 400 µV level change at the onset leaves the epoch valid.
    With a window one sample longer (10.1 ms at 10 kHz) the same epoch is a baseline step."""
    an = EpochAnalyzer(Settings({"analysis.artifact_blank_ms": 5.0, "analysis.window_ms": window_ms}))
    x = np.random.default_rng(4).normal(0.0, 5.0, 202)
    x[100:] += 400.0
    a = an.analyse(x, 10_000.0, 100, _stim(), "EMG L")
    if judged:
        assert a.measurement.invalid_reason is InvalidReason.ARTIFACT
        assert _step_uV(a.detail) == pytest.approx(400.0, abs=20.0)
    else:
        assert a.measurement.valid, a.detail
        assert "step" not in a.detail


def test_the_response_window_ends_at_its_configured_time():
    """Vagus window to 25 ms at 100 kHz: a negative phase at 20 ms, and a large positive one
    at 26 ms whose rising flank crosses the window's end. The most positive point of the
    window is its last sample, 25 ms less one sample (0.01 ms) after the stimulus."""
    fs, pre, n = 100_000.0, 1000, 6000
    t = (np.arange(n) - pre) / fs * 1000.0
    x = _gauss(t, -300.0, 20.0) + _gauss(t, 1000.0, 26.0)
    a = EpochAnalyzer(Settings()).analyse(x, fs, pre, _stim(), "EMG L")
    assert a.window_ms == (1.5, 25.0)
    assert a.measurement.valid and a.measurement.response, a.detail
    assert a.max_ms == pytest.approx(25.0 - 1000.0 / fs, abs=1e-6)
    assert a.min_ms == pytest.approx(20.0, abs=0.1)


def test_an_empty_batch_measures_nothing():
    """No rows in, no analyses out (and no error)."""
    an = EpochAnalyzer(Settings())
    assert an.analyse_batch(np.zeros((0, 300)), 5000.0, 50, [], []) == []
    assert an.measure_batch(np.zeros((0, 300)), 5000.0, 50, [], []) == []


# ------------------------------------------------------------------ learning the hum

_FS, _PRE, _N = 5000.0, 50, 300


def _hum_epoch(seed: int, kind: str = "clean") -> np.ndarray:
    """5 µV noise with a weak 8 µV 50 Hz hum of random phase; spoiled as ``kind`` says."""
    rng = np.random.default_rng(seed)
    t = np.arange(_N) / _FS
    x = rng.normal(0.0, 5.0, _N) + 8.0 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0.0, 2 * np.pi))
    if kind == "saturated":
        x[200:260] = 3000.0  # flat at a rail for 12 ms
    elif kind == "cautery":
        x[100:150] += rng.normal(0.0, 3000.0, 50)  # 10 ms of broadband burst in the window
    elif kind == "nonfinite":
        x[250] = np.nan
    return x


_REASON = {
    "saturated": InvalidReason.SATURATED,
    "cautery": InvalidReason.CAUTERY,
    "nonfinite": InvalidReason.ARTIFACT,
}


def _after(kind: str) -> tuple[EpochAnalyzer, list]:
    """One batch on ``EMG L``: twelve epochs of ``kind``, then a clean one."""
    an = EpochAnalyzer(Settings())
    x = np.stack([_hum_epoch(j, kind) for j in range(12)] + [_hum_epoch(99)])
    stimuli = [_stim(j, 100.0 + j) for j in range(13)]
    return an, an.analyse_batch(x, _FS, _PRE, stimuli, ["EMG L"] * 13)


def _fresh_last():
    return EpochAnalyzer(Settings()).analyse(_hum_epoch(99), _FS, _PRE, _stim(12, 112.0), "EMG L")


def test_clean_epochs_teach_the_channel_its_hum():
    """The control for the test below: twelve clean epochs with the weak hum teach the
    channel that 50 Hz is present, and the next epoch is measured with it modelled, so
    not exactly as a fresh analyzer measures it."""
    an, out = _after("clean")
    n_pairs = an._background_model(_FS, _PRE, _N).n_pairs
    assert an.mains.present("EMG L", _FS, n_pairs, 112.0)[0]
    assert out[-1].measurement.amplitude_uV != pytest.approx(_fresh_last().measurement.amplitude_uV, rel=1e-3)


@pytest.mark.parametrize("kind", ["saturated", "cautery", "nonfinite"])
def test_invalid_epochs_teach_the_channel_nothing(kind):
    """Saturated, cautery and non-finite epochs carry the same hum but are invalid: the
    channel's mains profile learns nothing from them, and the clean epoch after them in
    the batch is measured exactly as by a fresh analyzer."""
    an, out = _after(kind)
    assert {a.measurement.invalid_reason for a in out[:-1]} == {_REASON[kind]}
    n_pairs = an._background_model(_FS, _PRE, _N).n_pairs
    assert not an.mains.present("EMG L", _FS, n_pairs, 112.0).any()
    fresh = _fresh_last()
    assert out[-1].measurement.amplitude_uV == pytest.approx(fresh.measurement.amplitude_uV, rel=1e-9)
    assert out[-1].noise_uV == pytest.approx(fresh.noise_uV, rel=1e-9)
