"""When the learned response shape is not used: the epoch says why (its ``detail``), so the
neuromonitoring professional can see that a noisy response was measured directly; and how
a clean response is recognised as a new shape (``ResponseTemplate.similarity``)."""

from __future__ import annotations

import numpy as np

from app.analysis.epoch import EpochAnalyzer
from app.analysis.template import SAME_SHAPE, ResponseTemplate
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, site_sequence

FS = 20000.0


def _stim(i: int, t_s: float) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)


def test_a_response_of_another_shape_is_measured_directly_and_says_why():
    analyzer = EpochAnalyzer(Settings())
    learned = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, learned, 10, noise_uV=3.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    other = ResponseSpec(250.0, 9.0, polarity=-1, width_ms=1.2, ratio=0.3, gap_ms=3.0)  # late, wide, inverted
    for j in range(3):
        x, pre, _ = make_epoch(EpochSpec(fs=FS, response=other, noise_uV=25.0, seed=100 + j, t0_s=200.0 + j))
        a = analyzer.analyse(x, FS, pre, _stim(20 + j, 200.0 + j), "EMG L")
        assert a.method == "direct"
        assert a.detail.startswith("template not used: shape does not fit (residual "), a.detail
        assert a.measurement.valid and a.measurement.response


# ----------------------------------------------------------------------------- recognising a new shape

H_MS = 1000.0 / FS
FIRST = 30  # the segment starts 1.5 ms after the stimulus, as the response window does


def _wave(peak_ms: float, width_ms: float, sign: float = 1.0, n: int = 900) -> np.ndarray:
    """A biphasic response (µV) on the segment's samples, its first peak at ``peak_ms``."""
    t = (FIRST + np.arange(n)) * H_MS
    first = np.exp(-0.5 * ((t - peak_ms) / width_ms) ** 2)
    second = -0.8 * np.exp(-0.5 * ((t - peak_ms - 1.5) / (1.3 * width_ms)) ** 2)
    return sign * 400.0 * (first + second)


def _learned(y: np.ndarray, latency_ms: float) -> ResponseTemplate:
    template = ResponseTemplate(FS)
    for _ in range(5):
        template.learn(FIRST, y, latency_ms, float(np.ptp(y)), 5.0)
    return template


def test_the_learned_shape_recognises_itself_at_any_scale_and_its_inverse():
    y = _wave(4.0, 0.4)
    template = _learned(y, 4.0)
    assert template.similarity(FIRST, y, 4.0) > 0.999
    assert template.similarity(FIRST, 1e-6 * y, 4.0) > 0.999  # however small: the same shape
    assert template.similarity(FIRST, -y, 4.0) < -0.999


def test_another_shape_is_recognised_as_new():
    template = _learned(_wave(4.0, 0.4), 4.0)
    wide = _wave(4.0, 1.2)
    assert template.similarity(FIRST, wide, 4.0) < SAME_SHAPE


def test_what_lies_outside_the_shapes_support_does_not_count():
    """A deflection 12 ms after the response (another muscle, an ECG complex) is outside
    the learned shape's support: the response is still the same shape."""
    y = _wave(4.0, 0.4)
    template = _learned(y, 4.0)
    late = y + 300.0 * np.exp(-0.5 * (((FIRST + np.arange(len(y))) * H_MS - 16.0) / 0.5) ** 2)
    assert template.similarity(FIRST, late, 4.0) > 0.999


def test_nothing_to_compare_is_no_similarity():
    y = _wave(4.0, 0.4)
    template = _learned(y, 4.0)
    assert template.similarity(FIRST, np.zeros_like(y), 4.0) == 0.0  # a flat segment
    assert template.similarity(FIRST, y, 1000.0) == 0.0  # aligned where the segment is not
    assert ResponseTemplate(FS).similarity(FIRST, y, 4.0) == 0.0  # nothing learned yet
