"""The epoch analyzer's settings (defaults loaded when none are given, the automatic
threshold, the delivered-current tolerance in percent), the rules by which a response
teaches its site's template (``EpochAnalyzer._learn``: a clean response of another shape
mostly replaces the old one, "clean" and "another shape" with inclusive limits), and the
zero-phase filter's use of a single-precision filter design."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer, _ZeroPhase
from app.analysis.template import RESHAPE_KEEP, SAME_SHAPE, TEMPLATE_MAX_SNR, ResponseTemplate, TemplateFit
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings, load
from emg_synth import EpochSpec, make_epoch

FS = 20000.0


def _stim(set_mA: float = 10.0, delivered_mA: float | None = None) -> Stimulus:
    return Stimulus(0, 10.0, Site.VAGUS, Side.L, Source.APS, set_mA, delivered_mA)


def _quiet_epoch(noise_uV: float = 5.0) -> tuple[np.ndarray, int]:
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=None, noise_uV=noise_uV))
    return x, pre


# --------------------------------------------------------------------------------- settings


def test_without_settings_the_analyzer_uses_the_loaded_defaults_and_keeps_them():
    analyzer = EpochAnalyzer()
    assert analyzer.settings == load()
    assert analyzer.threshold_uV == float(load()["analysis.event_threshold_uV"])


def test_the_analyzer_keeps_the_settings_it_was_given():
    s = Settings({"analysis.event_threshold_uV": 150.0})
    analyzer = EpochAnalyzer(s)
    assert analyzer.settings is s
    assert analyzer.threshold_uV == 150.0


def test_the_automatic_threshold_rises_with_the_noise_when_switched_on():
    """In 40 uV RMS noise the automatic threshold is min_snr (10) times the noise, above
    the 100 uV event threshold and under the 400 uV ceiling; switched off it stays 100."""
    x, pre = _quiet_epoch(noise_uV=40.0)
    on = EpochAnalyzer(Settings({"analysis.auto_threshold": True})).analyse(x, FS, pre, _stim(), "EMG L")
    off = EpochAnalyzer(Settings({"analysis.auto_threshold": False})).analyse(x, FS, pre, _stim(), "EMG L")
    assert off.threshold_uV == 100.0
    assert on.noise_uV is not None and 10.0 * on.noise_uV > 150.0
    assert on.threshold_uV == pytest.approx(10.0 * on.noise_uV)


@pytest.mark.parametrize(("delivered", "short"), [(9.4, True), (9.502, False), (10.0, False)])
def test_the_delivered_current_tolerance_is_in_percent(delivered, short):
    """5 % tolerance (the default) on 10 mA set: 9.4 mA delivered is too little
    (``no_current``), 9.502 mA is within it."""
    x, pre = _quiet_epoch()
    m = EpochAnalyzer(Settings({"stim.delivered_tolerance_pct": 5.0})).measure(
        x, FS, pre, _stim(10.0, delivered), "EMG L"
    )
    assert (m.invalid_reason is InvalidReason.NO_CURRENT) is short


# ------------------------------------------------------------------------- learning a template

LEARN_FS = 5000.0
PRE = 50
BE = PRE + 5  # end of the artifact blank (1 ms)
SE = PRE + 150  # end of the response window (30 ms)
KEY = ("EMG L", "vagus")


def _row(wave) -> np.ndarray:
    t = (np.arange(250) - PRE) * 1000.0 / LEARN_FS
    return wave(t)


def _shape_a(t):
    return 100.0 * np.exp(-0.5 * ((t - 10.6) / 0.5) ** 2)


def _shape_b(t):
    """Another shape: a negative-first biphasic response, later."""
    return -80.0 * np.exp(-0.5 * ((t - 13.0) / 0.3) ** 2) + 60.0 * np.exp(-0.5 * ((t - 14.2) / 0.6) ** 2)


def _taught() -> tuple[EpochAnalyzer, ResponseTemplate]:
    """An analyzer whose bank holds a template taught shape A three times (clean)."""
    analyzer = EpochAnalyzer(Settings())
    template = analyzer.templates.get_or_new(KEY, LEARN_FS, 0.0)
    seg = _row(_shape_a)[BE:SE]
    for _ in range(3):
        template.learn(BE - PRE, seg, 10.6, 100.0, 1.0)
    template.last_t_s = 0.0
    return analyzer, template


def _teach(analyzer, template, wave, latency, a_i, n_i, fit=None):
    b = SimpleNamespace(se=np.array([SE]), y=_row(wave)[None, :], be=BE, pre=PRE, fs=LEARN_FS)
    analyzer._learn(b, 0, KEY, 1.0, template, fit, None, latency, a_i, n_i)


def _den_after(keep: float, den_before: float, a_i: float, n_i: float) -> float:
    return keep * den_before + (a_i / n_i) ** 2


def test_a_clean_response_of_another_shape_mostly_replaces_the_template():
    """Measured directly (no template fit) and standing 60 noise RMS out: shape B, which
    correlates poorly with A, is learned keeping only ``RESHAPE_KEEP`` of A's weight."""
    analyzer, template = _taught()
    den = float(template.den.max())
    assert template.similarity(BE - PRE, _row(_shape_b)[BE:SE], 13.0) < SAME_SHAPE
    _teach(analyzer, template, _shape_b, 13.0, 60.0, 1.0)
    assert template.snr == pytest.approx(np.sqrt(_den_after(RESHAPE_KEEP, den, 60.0, 1.0)), rel=1e-9)


def test_a_response_exactly_template_max_snr_out_of_the_noise_counts_as_clean():
    analyzer, template = _taught()
    den = float(template.den.max())
    _teach(analyzer, template, _shape_b, 13.0, TEMPLATE_MAX_SNR * 2.0, 2.0)
    assert template.snr == pytest.approx(np.sqrt(_den_after(RESHAPE_KEEP, den, TEMPLATE_MAX_SNR, 1.0)), rel=1e-9)


def test_a_clean_response_the_template_fitted_is_learned_with_the_usual_decay():
    """A response that the template was fitted to (fit accepted) is the same shape, even
    one that happens to stand far out of the noise: it fades the old responses by the
    usual ``DECAY`` only."""
    analyzer, template = _taught()
    den = float(template.den.max())
    fit = TemplateFit(True, 60.0, 1.0, 13.0, 12.0, 13.0, 14.0, 12.4, 0.5, "")
    _teach(analyzer, template, _shape_b, 13.0, 60.0, 1.0, fit=fit)
    assert template.snr == pytest.approx(np.sqrt(_den_after(0.95, den, 60.0, 1.0)), rel=1e-9)


def test_a_clean_response_correlating_exactly_same_shape_is_the_same_shape(monkeypatch):
    analyzer, template = _taught()
    den = float(template.den.max())
    monkeypatch.setattr(template, "similarity", lambda *_args: SAME_SHAPE)
    _teach(analyzer, template, _shape_a, 10.6, 60.0, 1.0)
    assert template.snr == pytest.approx(np.sqrt(_den_after(0.95, den, 60.0, 1.0)), rel=1e-9)


# ---------------------------------------------------------------------------- the zero-phase filter


def test_a_single_precision_filter_design_filters_like_sosfiltfilt():
    """Sections given as float32 are taken in double precision: the result is that of
    ``sosfiltfilt`` with the same (float32-rounded) sections, to single-precision rounding
    (the cached initial conditions are derived from the float32 sections)."""
    sos32 = sps.butter(2, [10.0, 1000.0], btype="bandpass", fs=FS, output="sos").astype(np.float32)
    x = np.random.default_rng(3).normal(0.0, 10.0, (2, 400))
    got = _ZeroPhase(sos32, 50)(x)
    want = sps.sosfiltfilt(sos32.astype(np.float64), x, axis=-1, padtype="odd", padlen=50)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
