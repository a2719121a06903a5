"""The limits of the epoch verdict (``EpochAnalyzer._conclude``) hit exactly.

- A response is present when the amplitude *reaches* the threshold; an amplitude that
  reaches the threshold but not ``min_snr`` noise RMS is an artifact, one of exactly
  ``min_snr`` noise RMS stands out. These are hit exactly through the settings: an epoch
  is measured once, then again with the threshold (or ``min_snr``) set to what makes the
  amplitude sit exactly on the limit (neither setting changes the measurement itself).
- A baseline step of *at least half* the amplitude is an artifact, and the learned shape is
  fitted only while the amplitude is *below* ``TEMPLATE_MAX_SNR`` noise RMS. No epoch can
  be made to land on these exactly, so the verdict step is run on a measured epoch with
  the step (or the amplitude and noise) set on the limit.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.analysis.template import TEMPLATE_MAX_SNR
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, site_sequence

FS = 20000.0
SPEC = ResponseSpec(300.0, 6.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)


def _stim(i: int = 0, t_s: float = 12.0) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)


def _epoch(noise_uV: float, seed: int = 1, spec: ResponseSpec = SPEC, t_s: float = 12.0) -> np.ndarray:
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=spec, noise_uV=noise_uV, artifact_uV=1000.0, seed=seed, t0_s=t_s))
    assert pre == 200
    return x


def _analyse(x: np.ndarray, settings: dict | None = None):
    return EpochAnalyzer(Settings(settings or {})).analyse(x, FS, 200, _stim(), "EMG L")


def _factor_exactly(product: float, x: float) -> float:
    """A float ``f`` with ``f * x == product`` exactly (one near ``product / x``)."""
    f = product / x
    for k in range(9):
        for c in (f + k * np.spacing(f), f - k * np.spacing(f)):
            if c * x == product:
                return float(c)
    raise AssertionError(f"no exact factor for {product!r} / {x!r}")


# ----------------------------------------------------------------------------- threshold


def test_an_amplitude_exactly_at_the_threshold_is_a_response():
    """A clean 300 uV response, measured again with the event threshold set to exactly its
    amplitude: still a response (the amplitude reaches the threshold)."""
    x = _epoch(2.0)
    first = _analyse(x)
    amplitude = first.measurement.amplitude_uV
    at = _analyse(x, {"analysis.event_threshold_uV": amplitude})
    assert at.threshold_uV == amplitude and at.measurement.amplitude_uV == amplitude
    assert at.measurement.valid and at.measurement.response
    assert at.measurement.latency_ms == first.measurement.latency_ms
    above = _analyse(x, {"analysis.event_threshold_uV": float(np.nextafter(amplitude, np.inf))})
    assert above.measurement.valid and not above.measurement.response


def test_a_noisy_amplitude_exactly_at_the_threshold_must_stand_out_of_the_noise():
    """A 300 uV response in about 34 uV RMS noise (less than ``min_snr`` = 10 noise RMS),
    with the threshold set to exactly its amplitude: it reaches the threshold, so it must
    stand out of the noise, and it does not: artifact. Just above the threshold it is
    simply no response (valid)."""
    x = _epoch(80.0)
    noisy = _analyse(x, {"analysis.event_threshold_uV": 400.0})
    amplitude = noisy.measurement.amplitude_uV
    assert noisy.measurement.valid and not noisy.measurement.response
    assert amplitude < 10.0 * noisy.noise_uV
    at = _analyse(x, {"analysis.event_threshold_uV": amplitude})
    assert not at.measurement.valid and at.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert "does not stand out of" in at.detail
    above = _analyse(x, {"analysis.event_threshold_uV": float(np.nextafter(amplitude, np.inf))})
    assert above.measurement.valid and not above.measurement.response


def test_an_amplitude_of_exactly_min_snr_noise_rms_stands_out():
    """A 300 uV response in about 26 uV RMS noise, measured again with ``min_snr`` set so
    that the amplitude is exactly ``min_snr`` noise RMS: it stands out (valid response);
    with ``min_snr`` a hair higher it does not (artifact)."""
    x = _epoch(60.0)
    first = _analyse(x)
    amplitude, noise = first.measurement.amplitude_uV, first.noise_uV
    ratio = _factor_exactly(amplitude, noise)
    assert 2.0 <= ratio <= 50.0
    at = _analyse(x, {"analysis.min_snr": ratio})
    assert at.measurement.amplitude_uV == amplitude and at.noise_uV == noise
    assert at.measurement.valid and at.measurement.response, at.detail
    # the next factor whose product with the noise is above the amplitude (the very next float
    # may still round to the amplitude, depending on the noise this machine computed)
    higher = float(np.nextafter(ratio, np.inf))
    while higher * noise <= amplitude:
        higher = float(np.nextafter(higher, np.inf))
    out = _analyse(x, {"analysis.min_snr": higher})
    assert out.measurement.invalid_reason is InvalidReason.ARTIFACT


# ----------------------------------------------------------------------------- the verdict step itself


def _batch(analyzer: EpochAnalyzer, x: np.ndarray, stim: Stimulus):
    """The working batch ``analyse_batch`` hands to the verdict step for one epoch, with the
    step and threshold it passes (the verdict itself is not run: nothing is learned)."""
    seen = {}

    def capture(b, i, stim, channel, reason, detail, step, thr):
        seen.update(b=b, reason=reason, step=step, thr=thr)

    analyzer._conclude = capture  # this instance only
    try:
        analyzer.analyse_batch(x[None, :], FS, 200, [stim], ["EMG L"])
    finally:
        del analyzer._conclude
    assert seen["reason"] is None
    return seen["b"], seen["thr"]


@pytest.mark.parametrize("above", [False, True])
def test_a_baseline_step_of_exactly_half_the_amplitude_is_an_artifact(above):
    """A clean 1000 uV response; the verdict with a baseline step of exactly half its
    amplitude (over ``step_uV``): artifact, the step in the detail. A step one hair less
    than half the amplitude: the response stands."""
    spec = ResponseSpec(1000.0, 6.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    analyzer = EpochAnalyzer(Settings())
    b, thr = _batch(analyzer, _epoch(2.0, spec=spec), _stim())
    half = 0.5 * float(b.amp[0])
    assert half >= analyzer.step_uV
    step = half if not above else float(np.nextafter(half, 0.0))
    a = analyzer._conclude(b, 0, _stim(), "EMG L", None, "", step, thr)
    if not above:
        assert a.measurement.invalid_reason is InvalidReason.ARTIFACT
        assert a.detail == f"baseline step of {half:.0f} uV"
    else:
        assert a.measurement.valid and a.measurement.response


def _learned() -> EpochAnalyzer:
    analyzer = EpochAnalyzer(Settings())
    shape = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, shape, 10, noise_uV=3.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    return analyzer


@pytest.mark.parametrize("below", [False, True])
def test_the_learned_shape_is_fitted_only_below_template_max_snr(below):
    """With the shape learned, a 300 uV response in about 7 uV RMS noise, its noise set so
    that the amplitude is exactly ``TEMPLATE_MAX_SNR`` noise RMS: clean enough, measured
    directly with no template tried (no "template not used" either). With the amplitude one
    hair lower the shape is tried."""
    analyzer = _learned()
    stim = _stim(20, 120.0)
    spec = ResponseSpec(300.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    b, thr = _batch(analyzer, _epoch(20.0, seed=51, spec=spec, t_s=120.0), stim)
    assert b.amp[0] < TEMPLATE_MAX_SNR * b.noise[0]  # as measured: the shape would be tried
    b.noise[0] = b.amp[0] / TEMPLATE_MAX_SNR
    b.amp[0] = TEMPLATE_MAX_SNR * b.noise[0]
    if below:
        b.amp[0] = np.nextafter(b.amp[0], 0.0)
    a = analyzer._conclude(b, 0, stim, "EMG L", None, "", 0.0, thr)
    assert a.measurement.valid and a.measurement.response
    if below:
        assert a.method == "template" or a.detail.startswith("template not used"), a.detail
    else:
        assert a.method == "direct" and a.detail == ""
        assert a.measurement.amplitude_uV == b.amp[0]
