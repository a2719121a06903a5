"""The last part of ``fit_template``: the Gauss-Newton refinement of the shift (it stops
when the fit finds no response, moves at most 0.3 ms a step either way, and stops once a
step is under a micro-second), the final scale (never negative), the samples the residual
is judged over (the response's support, inclusive of both ends, weighted samples only, at
least three of them) and the rejection when too few remain.

The inputs are synthetic and noise-free: a template taught one Gaussian pulse (peak-to-
peak 1, so the fitted scale is the response's height in uV), an epoch sampled every
0.2 ms, a background of a constant and a line. A trace of zeros for both the fitted and
the background-removed trace gives a scale of zero and puts the template at its usual
latency, so the support's ends are known exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from app.analysis.template import ResponseTemplate, fit_template

FS = 5000.0
STEP_MS = 1000.0 / FS
USUAL_MS = 10.0  # the latency the template was taught at
PEAK_OFFSET_MS = 0.6  # the taught pulse peaks this much after the latency it was taught at
T_MS = np.arange(-20, 180) * STEP_MS
WINDOW_MS = (1.0, 30.0)
SUPPORT_MISSING = "response support outside the epoch"


def _pulse(peak_ms: float, height: float = 50.0, width_ms: float = 0.5, t_ms: np.ndarray = T_MS) -> np.ndarray:
    return height * np.exp(-0.5 * ((t_ms - peak_ms) / width_ms) ** 2)


def _template() -> ResponseTemplate:
    """A template of one Gaussian pulse (0.5 ms wide), first major peak at 10.6 ms when its
    reference is at the usual latency of 10 ms, peak-to-peak 1."""
    t = np.arange(200) * STEP_MS
    template = ResponseTemplate(FS)
    template.learn(0, 100.0 * np.exp(-0.5 * ((t - USUAL_MS - PEAK_OFFSET_MS) / 0.5) ** 2), USUAL_MS, 100.0, 1.0)
    assert template.usable(10.0)
    assert template.ptp == pytest.approx(1.0, abs=1e-5)
    return template


def _fit(template, y, bg_removed, *, t_ms=T_MS, weights=None, noise_uV=1.0, direct_uV=0.0):
    weights = np.ones_like(t_ms) if weights is None else weights
    background = np.column_stack((np.ones_like(t_ms), t_ms / 10.0))
    fit, _coef = fit_template(
        template, t_ms, y, weights, background, np.zeros((2, 2)), 2,
        bg_removed=bg_removed, window_ms=WINDOW_MS, noise_uV=noise_uV, peak_hz=1000.0, direct_uV=direct_uV,
    )  # fmt: skip
    return fit


# ------------------------------------------------------------------------- the shift's refinement


@pytest.mark.parametrize("height", [0.5, 0.8, 5.0, 50.0])
def test_a_response_0_2_ms_from_the_searched_latency_is_aligned_whatever_its_height(height):
    """The search places the response at 10.4 ms, it is at 10.6 ms: the refinement moves
    the shift by the fitted slope over the fitted scale, for a response under 1 uV as for
    a large one, and ends on the response with its height measured."""
    template = _template()
    fit = _fit(template, _pulse(10.6, height), _pulse(10.4, height), direct_uV=height)
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(10.6, abs=1e-3)
    assert fit.amplitude_uV == pytest.approx(height, rel=1e-3)


@pytest.mark.parametrize("searched_ms", [9.8, 11.4])
def test_a_response_0_8_ms_from_the_searched_latency_takes_several_steps(searched_ms):
    """0.8 ms is more than one step of at most 0.3 ms: the refinement keeps going until
    its step is negligible and ends on the response, from either side."""
    template = _template()
    fit = _fit(template, _pulse(10.6, 1.5), _pulse(searched_ms, 1.5), direct_uV=1.5)
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(10.6, abs=1e-3)


@pytest.mark.parametrize(("searched_ms", "true_ms"), [(8.0, 10.0), (10.0, 8.0)])
def test_the_shift_moves_at_most_0_3_ms_a_step_either_way(searched_ms, true_ms):
    """A wide response 2 ms from where the search put it: each of the four steps is capped
    at 0.3 ms, later or earlier, so the fit ends 1.2 ms from the searched latency (the
    noise is set large so that the remaining misfit is accepted)."""
    template = _template()
    fit = _fit(template, _pulse(true_ms, width_ms=1.0), _pulse(searched_ms, width_ms=1.0), noise_uV=1e4)
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(searched_ms + np.sign(true_ms - searched_ms) * 1.2, abs=1e-3)


# ---------------------------------------------------------------------------------- the scale


def test_no_response_measures_zero_not_a_floor():
    """A trace of zeros: the fitted scale is zero, the amplitude 0 uV."""
    fit = _fit(_template(), np.zeros_like(T_MS), np.zeros_like(T_MS))
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0


def test_a_response_half_a_microvolt_tall_measures_half_a_microvolt():
    """The scale is the fitted one, however small: 0.5 uV, not rounded up to anything."""
    fit = _fit(_template(), _pulse(10.6, 0.5), _pulse(10.6, 0.5), direct_uV=0.5)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == pytest.approx(0.5, rel=1e-3)


# --------------------------------------------------------------- the samples the residual is judged on


def _edge_epoch(edge: int):
    """An epoch (0.2 ms samples) with one sample exactly on the template's support start
    (``edge`` 0) or end (``edge`` 1) when the template sits at its usual latency, and its
    index there."""
    template = _template()
    edge_ms = (USUAL_MS - template.first_peak_ms) + template.support[edge]
    k = 61
    t_ms = edge_ms + (np.arange(200) - k) * STEP_MS
    assert t_ms[k] == edge_ms
    return template, t_ms, k


def _support_weights(template, t_ms, keep):
    """Weights 1 outside the support (template at its usual latency), inside it 1 only at
    the indices ``keep`` (blanked elsewhere)."""
    tau = USUAL_MS - template.first_peak_ms
    inside = (t_ms >= tau + template.support[0] - 1e-9) & (t_ms <= tau + template.support[1] + 1e-9)
    weights = np.where(inside, 0.0, 1.0)
    weights[list(keep)] = 1.0
    return weights, np.flatnonzero(inside)


@pytest.mark.parametrize("edge", [0, 1])
def test_a_sample_exactly_on_an_end_of_the_support_counts(edge):
    """Three weighted samples in the support, one of them exactly on its start or its end:
    three are enough, the fit is accepted (a trace of zeros, amplitude 0)."""
    template, t_ms, k = _edge_epoch(edge)
    weights, inside = _support_weights(template, t_ms, [])
    assert k in (inside[0], inside[-1])
    middle = inside[len(inside) // 2]
    weights[[k, middle, middle + 1]] = 1.0
    zeros = np.zeros_like(t_ms)
    fit = _fit(template, zeros, zeros, t_ms=t_ms, weights=weights)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0


def test_three_weighted_samples_in_the_support_are_enough():
    zeros = np.zeros_like(T_MS)
    template = _template()
    weights, inside = _support_weights(template, T_MS, [])
    weights[inside[5:8]] = 1.0
    fit = _fit(template, zeros, zeros, weights=weights)
    assert fit.accepted, fit.why


def test_two_weighted_samples_in_the_support_are_rejected_however_many_are_blanked():
    """The support has 20 samples but only two are weighted (the rest blanked): too few
    to judge the fit, rejected with the reason the user sees."""
    zeros = np.zeros_like(T_MS)
    template = _template()
    weights, inside = _support_weights(template, T_MS, [])
    assert len(inside) > 10
    weights[inside[5:7]] = 1.0
    fit = _fit(template, zeros, zeros, weights=weights)
    assert not fit.accepted
    assert fit.why == SUPPORT_MISSING


def test_a_support_past_the_epoch_end_is_rejected_with_its_reason():
    """An epoch that ends before the template's support starts (at 8.2 ms): no sample
    to judge the fit on."""
    t_ms = T_MS[T_MS < 8.0]
    zeros = np.zeros_like(t_ms)
    fit = _fit(_template(), zeros, zeros, t_ms=t_ms)
    assert not fit.accepted
    assert fit.why == SUPPORT_MISSING


def test_blanked_samples_are_left_out_of_the_residual():
    """A response on a background the model cannot follow (a step), every other sample
    blanked: the residual ratio is the mean square misfit over the weighted samples of the
    support only, over the expected (noise and template) variance there, and computing it
    divides by no weight (no floating-point warning)."""
    template = _template()
    weights = np.ones_like(T_MS)
    weights[::2] = 0.0
    y = _pulse(10.6, 20.0) + 3.0 * (T_MS > 10.0)
    background = np.column_stack((np.ones_like(T_MS), T_MS / 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit, coef = fit_template(
            template, T_MS, y, weights, background, np.zeros((2, 2)), 2,
            bg_removed=y, window_ms=WINDOW_MS, noise_uV=2.0, peak_hz=1000.0, direct_uV=20.0,
        )  # fmt: skip
    assert fit.accepted, fit.why
    tau = fit.shift_ms
    sv, _ = template.values(T_MS - tau)
    misfit = y - sv * coef[0] - background @ coef[1:]
    over = (T_MS >= tau + template.support[0]) & (T_MS <= tau + template.support[1]) & (weights > 0)
    assert 5 < over.sum() < (T_MS >= tau + template.support[0]).sum()
    expected = 2.0**2 + (coef[0] * template.ptp) ** 2 * template.variance(T_MS - tau)[over]
    assert fit.residual_ratio == pytest.approx(np.mean(misfit[over] ** 2) / np.mean(expected), rel=1e-9)
    assert fit.residual_ratio > 0.1
