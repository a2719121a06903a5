"""The judging part of ``fit_template``: the residual the noise and the template's own
noise explain (and its chi-square bound, floored at two independent samples, inclusive),
the standard error of the amplitude, the response-window and direct-agreement checks
(their limits inclusive, their reasons shown to the user), and what an accepted fit
reports (times of the fitted response's extremes) or a rejected one keeps (its residual
ratio).

The inputs are synthetic and noise-free, as in the other ``fit_template`` tests: a
template taught one Gaussian pulse, an epoch sampled every 0.2 ms, a background of a
constant and a line. ``noise_uV`` is an input here: the residual ratio is the misfit
over the noise the caller states, so a chosen noise puts the ratio where a test wants it.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import (
    AGREE_BELOW_SIGMAS,
    AGREE_SHARE,
    CHI2_SIGMAS,
    NOISE_SLACK,
    ResponseTemplate,
    fit_template,
)

FS = 5000.0
STEP_MS = 1000.0 / FS
T_MS = np.arange(-20, 180) * STEP_MS
BACKGROUND = np.column_stack((np.ones_like(T_MS), T_MS / 10.0))
WINDOW_MS = (1.0, 30.0)
USUAL_MS = 10.0


def _pulse(peak_ms: float, height: float, width_ms: float = 0.5) -> np.ndarray:
    return height * np.exp(-0.5 * ((T_MS - peak_ms) / width_ms) ** 2)


def _template(told_amplitude: float = 100.0, noise: float = 0.01) -> ResponseTemplate:
    """A template taught one 100-high Gaussian pulse at 10.6 ms (told its latency is
    10 ms). Told an amplitude of 100 its peak-to-peak value is 1; told 50 it is 2. Its own
    noise is that of one response with ``told_amplitude / noise`` signal-to-noise."""
    t = np.arange(200) * STEP_MS
    template = ResponseTemplate(FS)
    template.learn(0, 100.0 * np.exp(-0.5 * ((t - 10.6) / 0.5) ** 2), USUAL_MS, told_amplitude, noise)
    assert template.usable(10.0)
    return template


def _fit(
    template,
    y,
    *,
    noise=1.0,
    direct=None,
    peak_hz=1000.0,
    window=WINDOW_MS,
    weights=None,
    background=BACKGROUND,
    penalty=None,
    n_spline=2,
):
    weights = np.ones_like(T_MS) if weights is None else weights
    penalty = np.zeros((background.shape[1],) * 2) if penalty is None else penalty
    return fit_template(
        template, T_MS, y, weights, background, penalty, n_spline,
        bg_removed=y, window_ms=window, noise_uV=noise, peak_hz=peak_hz,
        direct_uV=float(np.ptp(y)) if direct is None else direct,
    )  # fmt: skip


# ------------------------------------------------------------------------- the residual ratio


def test_the_template_noise_expected_in_the_residual_grows_with_the_fitted_amplitude():
    """A template of peak-to-peak 2 with noise of its own (taught at 26 noise RMS): the
    residual ratio is the mean square misfit over the response's support divided by the
    mean of what is expected there, the stated noise variance plus the template's own
    variance (in units of its peak-to-peak squared) times the fitted amplitude squared."""
    template = _template(told_amplitude=50.0, noise=1.9)
    assert template.ptp == pytest.approx(2.0, rel=1e-5)
    y = _pulse(10.6, 40.0) + 3.0 * (T_MS > 10.0)
    fit, coef = _fit(template, y, noise=2.0, direct=40.0)
    assert fit.accepted, fit.why
    tau = fit.shift_ms
    sv, _ = template.values(T_MS - tau)
    misfit = y - sv * coef[0] - BACKGROUND @ coef[1:]
    over = (T_MS >= tau + template.support[0]) & (T_MS <= tau + template.support[1])
    var_t = template.variance(T_MS - tau)[over]
    expected = 2.0**2 + fit.amplitude_uV**2 * var_t
    assert np.mean(fit.amplitude_uV**2 * var_t) > 1.0  # the template's noise matters here
    assert fit.residual_ratio == pytest.approx(np.mean(misfit[over] ** 2) / np.mean(expected), rel=1e-9)


def test_with_no_noise_stated_no_shape_fits():
    """A stated noise of 0 leaves nothing to judge the residual against: the fit is
    rejected (residual ratio infinite), even for a trace of zeros."""
    zeros = np.zeros_like(T_MS)
    fit, _coef = _fit(_template(), zeros, noise=0.0, direct=0.0)
    assert not fit.accepted
    assert fit.residual_ratio == np.inf
    assert fit.why.startswith("shape does not fit")


def _bound(template, fit, peak_hz):
    """The chi-square bound on the residual ratio over the support at ``fit``'s shift:
    ``NOISE_SLACK^2 (1 + CHI2_SIGMAS sqrt(2 / N))``, N the independent samples in the
    support (2 x peak band x its duration, at least 2)."""
    lo, hi = fit.shift_ms + template.support[0], fit.shift_ms + template.support[1]
    n_eff = max(2.0, 2.0 * peak_hz * (hi - lo) / 1000.0)
    return NOISE_SLACK**2 * (1.0 + CHI2_SIGMAS * np.sqrt(2.0 / n_eff)), n_eff


def _misfit_epoch(step_uV: float = 3.0):
    """A 20 uV response on a background step the model cannot follow: a misfit."""
    return _pulse(10.6, 20.0) + step_uV * (T_MS > 10.0)


def _noise_for_ratio(template, y, target, peak_hz, *, exact=False):
    """The stated noise at which the fit's residual ratio is ``target`` (bisection on the
    noise: the ratio falls as the noise grows; with ``exact`` to the last bit)."""
    r1 = _fit(template, y, noise=1.0, direct=20.0, peak_hz=peak_hz)[0].residual_ratio
    lo, hi = 0.5 * np.sqrt(r1 / target), 2.0 * np.sqrt(r1 / target)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        r = _fit(template, y, noise=mid, direct=20.0, peak_hz=peak_hz)[0].residual_ratio
        if r == target or (not exact and abs(r / target - 1.0) < 1e-9):
            return mid
        if r > target:
            lo = mid
        else:
            hi = mid
        if np.nextafter(lo, hi) == hi:
            break
    return None  # the ratio steps over ``target`` between two neighbouring noise values


def test_a_residual_exactly_at_the_chi_square_bound_is_accepted_and_just_above_it_is_not():
    template = _template()
    for step_uV in np.linspace(3.0, 3.5, 11):  # an epoch where some noise hits the bound exactly
        y = _misfit_epoch(step_uV)
        fit, _coef = _fit(template, y, direct=20.0)
        bound, n_eff = _bound(template, fit, 1000.0)
        noise = _noise_for_ratio(template, y, bound, 1000.0, exact=True)
        if noise is not None:
            break
    assert noise is not None
    assert n_eff > 7.0
    at = _fit(template, y, noise=noise, direct=20.0)[0]
    assert at.residual_ratio == bound
    assert at.accepted, at.why
    above = _fit(template, y, noise=_noise_for_ratio(template, y, bound * (1 + 1e-5), 1000.0), direct=20.0)[0]
    assert not above.accepted
    assert above.why.startswith("shape does not fit")


def test_a_support_shorter_than_two_independent_samples_is_judged_as_two():
    """With a 200 Hz peak band the 3.8 ms support holds about 1.5 independent samples;
    it is counted as 2 (bound 1.21 x (1 + 2.5) = 4.24): a residual ratio of 4.1 passes,
    4.4 does not."""
    template, y = _template(), _misfit_epoch()
    fit, _coef = _fit(template, y, direct=20.0, peak_hz=200.0)
    bound, n_eff = _bound(template, fit, 200.0)
    assert n_eff == 2.0
    assert bound == pytest.approx(NOISE_SLACK**2 * (1.0 + CHI2_SIGMAS))
    ok = _fit(template, y, noise=_noise_for_ratio(template, y, 4.1, 200.0), direct=20.0, peak_hz=200.0)[0]
    assert ok.residual_ratio == pytest.approx(4.1)
    assert ok.accepted, ok.why
    bad = _fit(template, y, noise=_noise_for_ratio(template, y, 4.4, 200.0), direct=20.0, peak_hz=200.0)[0]
    assert not bad.accepted


# --------------------------------------------------------------------------- the standard error


@pytest.mark.parametrize(("peak_hz", "correlated"), [(1000.0, 2.5), (4000.0, 1.0)])
def test_the_standard_error_is_the_least_squares_one_for_correlated_samples(peak_hz, correlated):
    """A clean template of peak-to-peak 2, 2 uV noise: the standard error of the amplitude
    is noise x template peak-to-peak x sqrt(c x [(X^T X)^-1]_00), X the fitted template and
    the background terms, c the number of decimated samples per independent one (a 0.2 ms
    step against a 1 kHz peak band: 2.5; against 4 kHz: at least 1)."""
    template = _template(told_amplitude=50.0, noise=0.005)
    assert template.ptp == pytest.approx(2.0, rel=1e-5)
    y = _pulse(10.6, 30.0)
    fit, _coef = _fit(template, y, noise=2.0, peak_hz=peak_hz)
    assert fit.accepted, fit.why
    sv, _ = template.values(T_MS - fit.shift_ms)
    x = np.column_stack((sv, BACKGROUND))
    cov00 = np.linalg.inv(x.T @ x)[0, 0]
    assert cov00 < 1.0
    assert fit.sigma_uV == pytest.approx(2.0 * template.ptp * np.sqrt(correlated * cov00), rel=1e-6)


# ----------------------------------------------------------------------------- the response window


def _peak_at_usual_latency(template):
    """Where a trace of zeros puts the template's first major peak: at its usual latency
    (computed as ``fit_template`` places it)."""
    return (template.usual_latency_ms - template.first_peak_ms) + template.first_peak_ms


def test_a_first_major_peak_exactly_at_the_window_start_is_inside():
    template = _template()
    zeros = np.zeros_like(T_MS)
    peak = _peak_at_usual_latency(template)
    fit, _coef = _fit(template, zeros, direct=0.0, window=(peak, 30.0))
    assert fit.accepted, fit.why
    assert fit.latency_ms == peak


def test_a_first_major_peak_exactly_at_the_window_end_is_outside_with_its_reason():
    template = _template()
    zeros = np.zeros_like(T_MS)
    peak = _peak_at_usual_latency(template)
    fit, _coef = _fit(template, zeros, direct=0.0, window=(1.0, peak))
    assert not fit.accepted
    assert fit.why == "first major peak outside the response window"


# ----------------------------------------------------------------- agreement with the direct value


def test_an_amplitude_far_from_the_direct_one_is_rejected_with_both_values():
    template = _template()
    y = _pulse(10.6, 20.0)
    fit, _coef = _fit(template, y, direct=80.0)
    assert not fit.accepted
    assert fit.why == "disagrees with the direct measurement (20 vs 80 uV)"


def test_the_allowance_below_the_direct_value_adds_its_share_of_the_direct_value():
    """A 20 uV response, 1 uV noise: the fitted value may be 7 noise RMS plus 3 % of the
    direct value below it. 7.5 uV below a direct value of 27.5 uV is inside (7 + 0.83),
    8.5 uV below 28.5 is not (7 + 0.86)."""
    template = _template()
    y = _pulse(10.6, 20.0)
    amp = _fit(template, y, direct=20.0)[0].amplitude_uV
    inside = _fit(template, y, direct=amp + 7.5)[0]
    assert inside.accepted, inside.why
    outside = _fit(template, y, direct=amp + 8.5)[0]
    assert not outside.accepted
    assert outside.why.startswith("disagrees with the direct measurement")


def test_an_amplitude_exactly_at_the_lower_agreement_limit_is_accepted():
    """A trace of zeros fits an amplitude of 0; a direct value d with d = 7 x noise + 3 %
    of d (exactly, in floating point) is at the limit, and accepted."""
    d = 7.0 / 0.97
    for _ in range(100):
        if -AGREE_BELOW_SIGMAS * 1.0 - AGREE_SHARE * d == 0.0 - d:
            break
        d = np.nextafter(d, np.inf if -AGREE_BELOW_SIGMAS - AGREE_SHARE * d > -d else -np.inf)
    assert -AGREE_BELOW_SIGMAS * 1.0 - AGREE_SHARE * d == 0.0 - d
    zeros = np.zeros_like(T_MS)
    fit, _coef = _fit(_template(), zeros, direct=float(d))
    assert fit.amplitude_uV == 0.0
    assert fit.accepted, fit.why


def test_an_amplitude_exactly_at_the_upper_agreement_limit_is_accepted():
    """A direct value of 0 (no share added): the fitted amplitude may be 4 noise RMS above
    it, inclusive. At a stated noise of a quarter of the amplitude it is exactly there;
    at a slightly smaller noise it is past it."""
    template = _template()
    y = _pulse(10.6, 20.0)
    amp = _fit(template, y, direct=20.0)[0].amplitude_uV
    at = _fit(template, y, noise=amp / 4.0, direct=0.0)[0]
    assert at.accepted, at.why
    past = _fit(template, y, noise=amp / 4.0 * (1 - 1e-6), direct=0.0)[0]
    assert not past.accepted


def test_a_fit_rejected_for_disagreeing_keeps_its_residual_ratio():
    """The residual ratio does not depend on the direct value: the rejected fit reports
    the same ratio as the accepted one on the same epoch."""
    template, y = _template(), _misfit_epoch()
    accepted = _fit(template, y, direct=20.0)[0]
    rejected = _fit(template, y, direct=80.0)[0]
    assert accepted.accepted and not rejected.accepted
    assert rejected.residual_ratio == accepted.residual_ratio
    assert 0.1 < rejected.residual_ratio < 10.0


# ------------------------------------------------------------------ the fitted response's extremes


def _biphasic(t_ms: np.ndarray, centre_ms: float) -> np.ndarray:
    t = t_ms - centre_ms
    return 100.0 * (np.exp(-0.5 * (t / 0.4) ** 2) - 0.8 * np.exp(-0.5 * ((t - 1.2) / 0.52) ** 2))


def test_an_accepted_fit_reports_the_times_of_the_fitted_response_extremes():
    """A biphasic template learned with its positive phase at 10 ms, fitted to the same
    response 2.4 ms later: the most positive and most negative points of the fitted
    response are those of the response (12.4 ms and about 13.7 ms)."""
    t = np.arange(200) * STEP_MS
    template = ResponseTemplate(FS)
    wave = _biphasic(t, 10.0)
    template.learn(0, wave, 10.0, float(np.ptp(wave)), 0.01)
    assert template.usable(10.0)
    y = 0.5 * _biphasic(T_MS, 12.4)
    fit, _coef = _fit(template, y)
    assert fit.accepted, fit.why
    fine = np.arange(0.0, 30.0, 0.001)
    true = _biphasic(fine, 12.4)
    assert fit.max_ms == pytest.approx(fine[np.argmax(true)], abs=0.02)
    assert fit.min_ms == pytest.approx(fine[np.argmin(true)], abs=0.02)
    assert fit.min_ms > fit.max_ms + 1.0
