"""The verdict on one epoch (``EpochAnalyzer._conclude``): the window reported, the
baseline-step and noise checks that make an epoch an artifact, the response decision
with its first major peak, and the learned response shape (when it is used, what its
onset is, when it is dropped).

Epochs are noise-free or carry noise only outside the response window where that makes
the case exact; RLN stimuli at 20 kHz: the response window runs from the end of the
1.5 ms artifact blank to 15 ms; defaults otherwise (threshold 100 uV, ``min_snr`` 10,
``step_uV`` 300, ``max_phase_ms`` 6).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, response_waveform, site_sequence

FS = 20000.0
PRE, N = 200, 1200  # 10 ms before the stimulus, 50 ms after it
T_MS = (np.arange(N) - PRE) * 1000.0 / FS
SHAPE = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)


def _stim(i: int = 0, t_s: float = 12.0) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)


def _analyse(x: np.ndarray, settings: dict | None = None, pre: int = PRE):
    return EpochAnalyzer(Settings(settings or {})).analyse(x, FS, pre, _stim(), "EMG L")


def _response(amplitude: float, peak_ms: float = 6.0) -> np.ndarray:
    return response_waveform(ResponseSpec(amplitude, peak_ms, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2), T_MS)


def _baseline_step(level: float) -> np.ndarray:
    """0 before 20 ms after the stimulus, a smooth rise to ``level`` by 40 ms, then exactly
    ``level`` to the end of the epoch (the step is ``level``, exactly)."""
    rise = np.clip((T_MS - 20.0) / 20.0, 0.0, 1.0)
    x = level * (0.5 - 0.5 * np.cos(np.pi * rise))
    x[T_MS >= 40.0] = level
    return x


def _noisy_epoch(noise_uV: float, seed: int = 1) -> np.ndarray:
    """A 300 uV response at 6 ms in white noise of ``noise_uV`` (band RMS)."""
    spec = ResponseSpec(300.0, 6.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=spec, noise_uV=noise_uV, artifact_uV=1000.0, seed=seed))
    assert pre == PRE and len(x) == N
    return x


def _learned() -> EpochAnalyzer:
    """An analyzer that has learned the RLN shape from ten clean responses (t = 100..109 s)."""
    analyzer = EpochAnalyzer(Settings())
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, SHAPE, 10, noise_uV=3.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    return analyzer


def _shape_epoch(amplitude: float, noise_uV: float, t_s: float, seed: int, response: bool = True) -> np.ndarray:
    spec = ResponseSpec(amplitude, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2) if response else None
    x, _pre, _ = make_epoch(EpochSpec(fs=FS, response=spec, noise_uV=noise_uV, seed=seed, t0_s=t_s, artifact_uV=1000.0))
    return x


# ----------------------------------------------------------------------------- the window


def test_the_reported_window_starts_at_the_end_of_the_blank_in_ms():
    """The window is reported in ms after the stimulus: 30 samples of blank at 20 kHz are
    exactly 1.5 ms, the RLN window ends at 15 ms; the latency of a clean response is on
    the same time axis (within 0.01 ms of its true 6 ms)."""
    a = _analyse(_response(300.0))
    assert a.window_ms[0] == pytest.approx(1.5, abs=1e-9)
    assert a.window_ms[1] == 15.0
    assert a.measurement.response
    assert a.measurement.latency_ms == pytest.approx(6.0, abs=0.01)


# ----------------------------------------------------------------------------- baseline step


def test_a_baseline_step_of_exactly_step_uV_is_an_artifact():
    """A step of exactly ``analysis.step_uV`` (300 uV) between the pre-stimulus part and the
    end of the window, with nothing else in the epoch: an artifact ("at least" the step),
    its size in the detail; invalid epochs have no amplitude."""
    a = _analyse(_baseline_step(300.0))
    m = a.measurement
    assert not m.valid and m.invalid_reason is InvalidReason.ARTIFACT
    assert a.detail == "baseline step of 300 uV"
    assert m.amplitude_uV is None and not m.response


def test_a_step_smaller_than_the_setting_is_not_an_artifact():
    """The same epoch with ``analysis.step_uV`` just above the step: valid."""
    a = _analyse(_baseline_step(300.0), {"analysis.step_uV": 300.5})
    assert a.measurement.valid, a.detail


def test_a_step_less_than_half_a_large_response_is_not_an_artifact():
    """A 350 uV step (over ``step_uV``) under a 2000 uV response: the step is less than half
    the amplitude, so the epoch is a valid response (a large response's own tail may shift
    the level); the same step with no response is an artifact."""
    big = _analyse(_baseline_step(350.0) + _response(2000.0))
    assert big.measurement.valid and big.measurement.response, big.detail
    assert big.measurement.amplitude_uV == pytest.approx(2000.0, rel=0.03)
    alone = _analyse(_baseline_step(350.0))
    assert alone.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert alone.detail == "baseline step of 350 uV"


# ----------------------------------------------------------------------------- noise


def test_an_amplitude_that_does_not_stand_out_of_the_noise_is_an_artifact():
    """A 300 uV response in about 34 uV RMS of noise: above the 100 uV threshold but not 10
    noise RMS: invalid (artifact), never a response; the detail names the amplitude and the
    noise, and the noise is still reported."""
    a = _analyse(_noisy_epoch(80.0))
    m = a.measurement
    assert not m.valid and m.invalid_reason is InvalidReason.ARTIFACT and not m.response
    assert m.amplitude_uV is None and m.latency_ms is None
    assert 30.0 < a.noise_uV < 40.0
    assert a.detail.endswith(f" uV does not stand out of {a.noise_uV:.1f} uV RMS noise"), a.detail
    shown = float(a.detail.split(" uV")[0])
    assert 250.0 <= shown <= 350.0 and shown < 10 * a.noise_uV


def test_the_same_response_in_less_noise_stands_out():
    """The same response in about 26 uV RMS noise (more than 10 noise RMS): a valid response."""
    a = _analyse(_noisy_epoch(60.0))
    assert a.measurement.valid and a.measurement.response, a.detail
    assert a.measurement.amplitude_uV > 10 * a.noise_uV


# ----------------------------------------------------------------------------- first major peak


def _noise_outside_window(rms: float, seed: int) -> np.ndarray:
    """White noise before the stimulus and after 17 ms, none in the response window."""
    rng = np.random.default_rng(seed)
    return np.where((T_MS < -1.0) | (T_MS > 17.0), rng.normal(0.0, rms, N), 0.0)


def test_a_bump_below_the_noise_level_before_the_response_is_not_its_first_major_peak():
    """A 270 uV response at 8 ms in an epoch with about 25 uV RMS noise, and a 95 uV bump at
    4 ms: the bump is over half the response's largest deflection but below 4.5 noise RMS,
    so it is no major peak; the latency is the response's (8 ms), not the bump's."""
    bump = 95.0 * np.exp(-0.5 * ((T_MS - 4.0) / 0.25) ** 2)
    a = _analyse(_response(270.0, 8.0) + _noise_outside_window(80.0, 5) + bump)
    m = a.measurement
    assert 0.5 * 0.56 * m.amplitude_uV < 95.0 < 4.5 * a.noise_uV  # the case: between the two levels
    assert m.valid and m.response, a.detail
    assert m.latency_ms == pytest.approx(8.0, abs=0.05)
    assert m.onset_latency_ms > 6.0


def test_a_peak_at_the_end_of_the_window_is_no_response():
    """A large response peaking just after the RLN window's end (15.3 ms): in the window its
    rising edge reaches the threshold, but the peak is the window's last sample: valid, no
    response, and the detail says why."""
    late = ResponseSpec(1000.0, 15.3, polarity=1, width_ms=0.6, ratio=0.8, gap_ms=1.2)
    a = _analyse(response_waveform(late, T_MS))
    m = a.measurement
    assert m.valid and not m.response
    assert m.amplitude_uV >= 100.0 and m.latency_ms is None and m.onset_latency_ms is None
    assert a.detail == "peak at the end of the response window"


def test_a_phase_too_wide_for_a_nerve_is_no_response():
    """A single 4 ms (sigma) wide 1000 uV hump: over the threshold in the window but its
    phase is wider than ``max_phase_ms``: valid, no response, the width in the detail."""
    a = _analyse(1000.0 * np.exp(-0.5 * ((T_MS - 8.0) / 4.0) ** 2))
    m = a.measurement
    assert m.valid and not m.response and m.amplitude_uV >= 100.0
    assert a.detail.startswith("phase ") and a.detail.endswith(" ms wide: not a nerve response"), a.detail


# ----------------------------------------------------------------------------- the learned shape


def test_a_response_measured_with_the_learned_shape_has_its_onset_before_its_peak():
    """A 300 uV response in about 7 uV RMS noise, with the shape learned: measured with the
    template; the onset (from the fitted shape) is before the latency, inside the window,
    near the true 3.17 ms."""
    a = _learned().analyse(_shape_epoch(300.0, 20.0, 120.0, 51), FS, PRE, _stim(20, 120.0), "EMG L")
    m = a.measurement
    assert a.method == "template" and m.response
    assert a.window_ms[0] <= m.onset_latency_ms < m.latency_ms
    assert m.onset_latency_ms == pytest.approx(3.17, abs=0.1)
    assert m.latency_ms == pytest.approx(4.0, abs=0.1)


def test_the_learned_shape_is_used_in_very_low_noise():
    """A 20 uV response in less than 1 uV RMS of noise (20 noise RMS: not clean enough for the
    direct value to be as good): the learned shape is fitted and used."""
    a = _learned().analyse(_shape_epoch(20.0, 2.0, 120.0, 52), FS, PRE, _stim(20, 120.0), "EMG L")
    assert 0.0 < a.noise_uV < 1.0
    assert a.measurement.amplitude_uV < 50.0 * a.noise_uV
    assert a.method == "template", a.detail


def test_an_epoch_without_response_marks_the_site_measured_so_time_going_back_drops_the_shape():
    """After the shape is learned (to t = 109 s), an epoch with no response at t = 200 s
    still counts as the site's last measurement: a stimulus at t = 150 s then means time
    went backwards (a new case), the shape is dropped and the response measured directly.
    Without the epoch at 200 s the same response is measured with the shape."""
    analyzer = _learned()
    quiet = analyzer.analyse(_shape_epoch(0.0, 3.0, 200.0, 50, response=False), FS, PRE, _stim(20, 200.0), "EMG L")
    assert quiet.measurement.valid and not quiet.measurement.response
    back = analyzer.analyse(_shape_epoch(300.0, 20.0, 150.0, 51), FS, PRE, _stim(21, 150.0), "EMG L")
    assert back.measurement.response and back.method == "direct"
    control = _learned().analyse(_shape_epoch(300.0, 20.0, 150.0, 51), FS, PRE, _stim(21, 150.0), "EMG L")
    assert control.measurement.response and control.method == "template"
