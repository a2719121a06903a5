"""Fitting a learned response shape to one epoch (``app.analysis.template.fit_template``),
called directly with a hand-made template and small synthetic inputs: samples every
0.2 ms (the background fit's rate) from 5 ms before the stimulus, a background of a
constant and a line, noise-free responses of a known shape at a known latency. Checked:
the latency search (its grid, how far it reaches, the epoch with nothing like the
response), where the template's first major peak sits relative to its reference, and
the standard error of the fitted amplitude."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import SEARCH_MS, ResponseTemplate, fit_template

FS = 20000.0  # the template's sample rate
STEP_MS = 0.2  # the fit's samples (decimated)
USUAL_MS = 6.0  # latency the templates were learned at


def _biphasic(t: np.ndarray) -> np.ndarray:
    """A response (peak-to-peak about 1.7) whose first major peak is near t = 0."""
    return np.exp(-0.5 * (t / 0.4) ** 2) - 0.8 * np.exp(-0.5 * ((t - 1.2) / 0.52) ** 2)


def _template(wave=_biphasic, told_ms: float = USUAL_MS, peak_ms: float = USUAL_MS) -> ResponseTemplate:
    """A template taught three clean copies of ``wave``, placed with ``wave``'s t = 0 at
    ``peak_ms`` from the stimulus and told their first major peak is at ``told_ms``."""
    h = 1000.0 / FS
    first = int(round(1.0 / h))
    t = (first + np.arange(int(round(30.0 / h)))) * h
    y = 100.0 * wave(t - peak_ms)
    template = ResponseTemplate(FS)
    for _ in range(3):
        template.learn(first, y, told_ms, float(np.ptp(y)), 0.5)
    assert template.usable(10.0)
    return template


T_MS = np.arange(-5.0, 30.0 + STEP_MS / 2, STEP_MS)
BACKGROUND = np.column_stack((np.ones_like(T_MS), T_MS / 10.0))


def _fit(template, y, *, bg_removed=None, window=(1.5, 20.0), noise=1.0, peak_hz=1000.0, direct=None):
    return fit_template(
        template, T_MS, y, np.ones_like(T_MS), BACKGROUND, np.zeros((2, 2)), 2,
        bg_removed=y if bg_removed is None else bg_removed, window_ms=window, noise_uV=noise,
        peak_hz=peak_hz, direct_uV=float(np.ptp(y)) if direct is None else direct,
    )  # fmt: skip


def _bump(centre_ms: float, half_ms: float, height: float) -> np.ndarray:
    """A raised-cosine deflection, exactly zero farther than ``half_ms`` from its centre."""
    u = np.clip((T_MS - centre_ms) / half_ms, -1.0, 1.0)
    return height * 0.5 * (1.0 + np.cos(np.pi * u))


# ----------------------------------------------------------------------------- the standard error


def test_the_standard_error_counts_the_samples_the_peak_band_makes_independent():
    """Samples 0.2 ms apart are independent in a 2500 Hz band; in a 1250 Hz band only every
    other one is, so the standard error of the same fit is sqrt(2) times larger."""
    template = _template()
    y = 50.0 * _biphasic(T_MS - 6.3) + 3.0 + 0.5 * T_MS
    wide, _ = _fit(template, y, peak_hz=2500.0)
    narrow, _ = _fit(template, y, peak_hz=1250.0)
    assert wide.accepted and narrow.accepted
    assert narrow.sigma_uV / wide.sigma_uV == pytest.approx(np.sqrt(2.0), rel=1e-6)


# ----------------------------------------------------------------------------- how far the search reaches


def test_a_window_leaving_one_candidate_latency_still_measures_the_response():
    """The response window starts exactly where the search ends (the usual latency +
    ``SEARCH_MS``): that one latency is searched, and the fit finds the response 0.05 ms
    after it."""
    template = _template()
    lo = template.usual_latency_ms + SEARCH_MS
    y = 50.0 * _biphasic(T_MS - lo - 0.05) + 3.0
    fit, coef = _fit(template, y, window=(lo, 20.0))
    assert fit.accepted, fit.why
    assert coef is not None
    assert fit.latency_ms == pytest.approx(lo + 0.05 + template.first_peak_ms, abs=1e-3)


def test_the_search_reaches_half_a_sample_beyond_its_end_and_no_farther():
    """A window starting 0.4 samples after the search's end still gets one candidate
    latency (the grid is closed within half a sample); one starting 0.6 samples after has
    no room, and says so."""
    template = _template()
    end = template.usual_latency_ms + SEARCH_MS
    lo = end + 0.4 * STEP_MS
    fit, _ = _fit(template, 50.0 * _biphasic(T_MS - lo - 0.05) + 3.0, window=(lo, 20.0))
    assert fit.accepted, fit.why
    lo = end + 0.6 * STEP_MS
    fit, coef = _fit(template, 50.0 * _biphasic(T_MS - lo - 0.05) + 3.0, window=(lo, 20.0))
    assert not fit.accepted
    assert coef is None
    assert fit.why == "no room for the response in the window"


# ----------------------------------------------------------------------------- the search's grid


def _oscillating(t: np.ndarray) -> np.ndarray:
    """A narrow ringing response (0.8 ms period): its correlation with itself has side
    lobes every 0.8 ms, so the search must look at every sample to find the main one."""
    return np.exp(-0.5 * (t / 0.5) ** 2) * np.cos(2.0 * np.pi * t / 0.8)


@pytest.mark.parametrize("latency_ms", [6.6, 7.6])
def test_a_narrow_ringing_response_is_found_on_the_sample_grid(latency_ms):
    template = _template(_oscillating)
    fit, _ = _fit(template, 50.0 * _oscillating(T_MS - latency_ms))
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(latency_ms + template.first_peak_ms, abs=1e-3)


# ----------------------------------------------------------------------------- the template's reference


@pytest.mark.parametrize("latency_ms", [7.0, 7.5, 8.0])
def test_a_template_whose_first_major_peak_is_1_ms_after_its_reference(latency_ms):
    """The learned responses were told a latency 1 ms before their first major peak (the
    template's reference is then 1 ms before it): the search places the first major peak,
    not the reference, at each candidate latency, and the fit finds the response."""
    template = _template(told_ms=USUAL_MS, peak_ms=USUAL_MS + 1.0)
    assert template.first_peak_ms == pytest.approx(0.97, abs=0.01)
    fit, _ = _fit(template, 50.0 * _biphasic(T_MS - latency_ms) + 3.0)
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(latency_ms - 0.03, abs=1e-3)


# ----------------------------------------------------------------------------- nothing like the response


def test_a_flat_epoch_is_measured_at_the_usual_latency():
    """Nothing correlates with the template: the response is measured where it usually is
    (amplitude 0)."""
    template = _template()
    fit, _ = _fit(template, np.zeros_like(T_MS), direct=0.0)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0
    assert fit.latency_ms == pytest.approx(template.usual_latency_ms)


def test_a_response_of_a_fraction_of_a_microvolt_is_searched_like_a_large_one():
    """The search does not depend on the units: a 0.09 uV response 2 ms after the usual
    latency (noise 0.0005 uV) is found as a 90 uV one is."""
    template = _template()
    latencies = []
    for scale in (0.05, 50.0):
        fit, _ = _fit(template, scale * _biphasic(T_MS - USUAL_MS - 2.0), noise=scale / 100.0)
        assert fit.accepted, fit.why
        latencies.append(fit.latency_ms)
    assert latencies[0] == pytest.approx(USUAL_MS + 2.0 + template.first_peak_ms, abs=1e-3)
    assert latencies[0] == pytest.approx(latencies[1], abs=1e-6)


@pytest.mark.parametrize(
    ("centre_ms", "half_ms"),
    [(-3.0, 1.5), (26.0, 2.5)],
    ids=["before the template", "after the template"],
)
def test_a_deflection_beyond_the_templates_reach_is_not_taken_for_the_response(centre_ms, half_ms):
    """No response, only a deflection (100 uV) farther from every candidate latency than the
    template spans (4 ms before, 14 ms after its first major peak). The template here ends
    abruptly: its learned responses sit on a pedestal still large at both ends of its
    span. Beyond the span the template is nothing, so nothing matches and the epoch is
    measured at the usual latency."""
    template = _template(lambda t: _biphasic(t) + 0.4)
    assert abs(template.shape[0]) > 0.1 and abs(template.shape[-1]) > 0.1
    y = _bump(centre_ms, half_ms, 100.0)
    fit, _ = _fit(template, y, noise=10.0, direct=30.0)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0
    assert fit.latency_ms == pytest.approx(template.usual_latency_ms)


def test_the_search_prefers_the_better_match_even_when_most_of_it_is_hidden():
    """Two responses of the template's shape, 4 ms apart: the first 2.7 times the second,
    but a blank (weight 0, e.g. another stimulus's artifact) from just before its first
    peak hides all but its rising edge. The search ranks each candidate latency by how
    well the data match the part of the template it sees (per unit of that part's energy),
    so it keeps the larger response, seen through less than a sixth of the template's
    energy, over the smaller one seen whole."""
    template = _template()
    first, second = 4.5, 8.5
    weights = np.where((T_MS >= first - 0.1) & (T_MS < first + 3.5), 0.0, 1.0)
    y = 270.0 * _biphasic(T_MS - first) + 100.0 * _biphasic(T_MS - second) + 3.0
    fit, _ = fit_template(
        template, T_MS, y, weights, BACKGROUND, np.zeros((2, 2)), 2, bg_removed=y, window_ms=(1.5, 20.0),
        noise_uV=2.0, peak_hz=1000.0, direct_uV=float(np.ptp(y)),
    )  # fmt: skip
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(first + template.first_peak_ms, abs=0.005)
