"""Which responses teach the site's response shape (``EpochAnalyzer`` learning as it measures):
a response that stands ``LEARN_MIN_SNR`` (8) times its noise RMS out of the noise, however
small the noise, and none whose epoch holds another stimulus; and a clean response of a new
shape replaces the learned one quickly. What was learned shows in how a later noisy
response is measured: with the learned shape (``method == "template"``) or directly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from app.analysis.epoch import EpochAnalyzer
from app.analysis.template import LEARN_MIN_SNR, STALE_S
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, site_sequence

FS = 20000.0
SHAPE = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)


def _stim(i: int, t_s: float) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)


def _epoch(spec: ResponseSpec, noise_uV: float, seed: int, t_s: float) -> tuple[np.ndarray, int]:
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=spec, noise_uV=noise_uV, seed=seed, t0_s=t_s, artifact_uV=1000.0))
    return x, pre


def _noisy_methods(analyzer: EpochAnalyzer, spec: ResponseSpec, noise_uV: float, t_s: float, n: int = 3) -> list[str]:
    """How ``n`` later noisy responses of ``spec`` are measured (each of them teaches the
    shape too: after the first, a shape is known)."""
    out = []
    for j in range(n):
        x, pre = _epoch(spec, noise_uV, 100 + j, t_s + j)
        a = analyzer.analyse(x, FS, pre, _stim(50 + j, t_s + j), "EMG L")
        assert a.measurement.valid and a.measurement.response, a.detail
        out.append(a.method)
    return out


# ----------------------------------------------------------------------------- quiet epochs teach


def test_a_noisy_response_is_measured_directly_when_nothing_was_learned():
    assert _noisy_methods(EpochAnalyzer(Settings()), SHAPE, 40.0, 20.0, n=1) == ["direct"]


def test_a_clean_response_in_noise_below_1_uV_teaches_the_shape():
    """Noise RMS about 0.5 uV (1 uV white noise, response band): the clean response is
    learned, and the noisy ones after it are fitted with its shape."""
    analyzer = EpochAnalyzer(Settings())
    x, pre = _epoch(SHAPE, 1.0, 1, 10.0)
    a = analyzer.analyse(x, FS, pre, _stim(0, 10.0), "EMG L")
    assert a.measurement.response and a.noise_uV is not None and 0.0 < a.noise_uV < 1.0
    assert _noisy_methods(analyzer, SHAPE, 40.0, 20.0) == ["template"] * 3


def test_a_small_response_in_very_low_noise_teaches_the_shape():
    """A 30 uV response (threshold lowered to 20 uV) in noise of about 0.2 uV RMS stands
    over 100 times out of it: it teaches the shape, so 30 uV responses in a few uV of noise
    are then fitted with it."""
    analyzer = EpochAnalyzer(Settings({"analysis.event_threshold_uV": 20.0}))
    small = ResponseSpec(30.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    x, pre = _epoch(small, 0.4, 1, 10.0)
    a = analyzer.analyse(x, FS, pre, _stim(0, 10.0), "EMG L")
    assert a.measurement.response and a.noise_uV is not None and a.noise_uV < 0.25
    assert a.measurement.amplitude_uV >= 25.0
    assert _noisy_methods(analyzer, small, 4.0, 11.0) == ["template"] * 3


def _conclude_exactly_at_the_learning_bound() -> EpochAnalyzer:
    """One epoch whose amplitude is exactly ``LEARN_MIN_SNR`` times its noise (8 uV over
    1 uV RMS, ``analysis.min_snr`` lowered to 8 so that it is a response), concluded directly
    (no real waveform gives an exact ratio): the working arrays the analysis would have."""
    analyzer = EpochAnalyzer(Settings({"analysis.min_snr": 8.0}))
    pre, n = 200, 1200
    t_ms = (np.arange(n) - pre) * 1000.0 / FS
    y = 8.0 * np.exp(-0.5 * ((t_ms - 5.0) / 0.4) ** 2)
    b = SimpleNamespace(
        fs=FS,
        pre=pre,
        be=pre + 30,
        se=np.array([pre + 300]),
        end_ms=[15.0],
        extra=None,
        y=y[None, :],
        noise=np.array([1.0]),
        amp=np.array([LEARN_MIN_SNR * 1.0]),
        t_max=np.array([5.0]),
        t_min=np.array([1.5]),
    )
    a = analyzer._conclude(b, 0, _stim(0, 10.0), "EMG L", None, "", 0.0, 5.0)
    assert a.measurement.valid and a.measurement.response
    assert a.measurement.amplitude_uV == LEARN_MIN_SNR * a.noise_uV
    return analyzer


def test_a_response_exactly_at_the_learning_snr_teaches_the_shape():
    analyzer = _conclude_exactly_at_the_learning_bound()
    template = analyzer.templates.get(("EMG L", Site.RLN.value), FS, 10.0)
    assert template is not None and template.learned == 1


# ----------------------------------------------------------------------------- other stimuli in the epoch


def test_a_response_with_another_stimulus_in_its_epoch_teaches_nothing():
    """A clean response whose epoch also holds another stimulus (at 40 ms, blanked) is
    measured, but its epoch is not a clean example of the shape: nothing is learned."""
    analyzer = EpochAnalyzer(Settings())
    x, pre = _epoch(SHAPE, 1.0, 1, 10.0)
    a = analyzer.analyse(x, FS, pre, _stim(0, 10.0), "EMG L", other_onsets=[pre + 800])
    assert a.measurement.valid and a.measurement.response
    assert _noisy_methods(analyzer, SHAPE, 40.0, 20.0, n=1) == ["direct"]


def test_in_a_batch_only_the_epochs_without_another_stimulus_teach():
    """Two clean responses measured together, the first with another stimulus in its epoch:
    the second (alone in its epoch) teaches the shape."""
    analyzer = EpochAnalyzer(Settings())
    x0, pre = _epoch(SHAPE, 1.0, 1, 10.0)
    x1, _ = _epoch(SHAPE, 1.0, 2, 11.0)
    out = analyzer.analyse_batch(
        np.vstack([x0, x1]),
        FS,
        pre,
        [_stim(0, 10.0), _stim(1, 11.0)],
        ["EMG L", "EMG L"],
        other_onsets=[[pre + 800], []],
    )
    assert all(a.measurement.valid and a.measurement.response for a in out)
    assert _noisy_methods(analyzer, SHAPE, 40.0, 20.0) == ["template"] * 3


# ----------------------------------------------------------------------------- a new shape


def test_clean_responses_of_a_new_shape_replace_the_learned_one_quickly():
    """The shape learned from three very clean responses; then five clean responses (about
    70-95 times their noise) of another shape (later, wider, inverted): each is recognised
    as a new shape and mostly replaces the old one, so noisy responses of the new shape are
    fitted with it (learning them at the usual slow rate would leave the old shape's
    misfit)."""
    analyzer = EpochAnalyzer(Settings())
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, SHAPE, 3, noise_uV=3.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    other = ResponseSpec(400.0, 6.0, polarity=-1, width_ms=0.7, ratio=0.5, gap_ms=2.0)
    for j in range(5):
        x, pre = _epoch(other, 12.0, 50 + j, 150.0 + j)
        a = analyzer.analyse(x, FS, pre, _stim(30 + j, 150.0 + j), "EMG L")
        assert a.method == "direct" and a.measurement.response
        assert a.noise_uV is not None and a.measurement.amplitude_uV >= 50.0 * a.noise_uV  # clean
    assert _noisy_methods(analyzer, other, 40.0, 200.0) == ["template"] * 3


# ----------------------------------------------------------------------------- forgetting


def _learned_once_then_noisy(gap_s: float) -> str:
    """One clean response teaches the shape at 10 s (the first at the site: the shape is
    new); a noisy one ``gap_s`` later: how it is measured."""
    analyzer = EpochAnalyzer(Settings())
    x, pre = _epoch(SHAPE, 1.0, 1, 10.0)
    analyzer.analyse(x, FS, pre, _stim(0, 10.0), "EMG L")
    return _noisy_methods(analyzer, SHAPE, 40.0, 10.0 + gap_s, n=1)[0]


def test_a_new_shape_is_remembered_for_ten_minutes_from_the_response_that_taught_it():
    """``STALE_S`` (600 s) counts from the stimulus time of the response that created the
    shape: 500 s later it is used, 700 s later it is forgotten and the response is measured
    directly."""
    assert STALE_S == 600.0
    assert _learned_once_then_noisy(500.0) == "template"
    assert _learned_once_then_noisy(700.0) == "direct"
