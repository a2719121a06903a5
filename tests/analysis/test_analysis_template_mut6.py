"""Where ``fit_template`` places the learned shape: the latency search on the trace with its
background removed (the best-correlating candidate latency, refined between candidates by
the parabola through the three scores around it), the template's usual latency when
nothing correlates, and the Gauss-Newton refinement of the shift in the joint fit (at most
0.3 ms a step, four steps; none when the fit finds no response to align).

The inputs are synthetic: a template taught one Gaussian pulse, an epoch sampled every
0.2 ms, a background of a constant and a line. With a fitted trace ``y`` of zeros the joint
fit finds a scale of exactly zero, so the shift it reports is the latency search's."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import ResponseTemplate, fit_template

FS = 5000.0
STEP_MS = 1000.0 / FS  # the epoch's sample interval, and the latency search's step
USUAL_MS = 10.0  # the latency the template was taught at
PEAK_OFFSET_MS = 0.6  # the taught pulse peaks this much after the latency it was taught at
T_MS = np.arange(-20, 180) * STEP_MS  # the epoch's sample times from the stimulus
WINDOW_MS = (1.0, 30.0)


def _pulse(peak_ms: float, height: float = 50.0, width_ms: float = 0.5) -> np.ndarray:
    return height * np.exp(-0.5 * ((T_MS - peak_ms) / width_ms) ** 2)


def _template() -> ResponseTemplate:
    """A template whose first major peak lies ``PEAK_OFFSET_MS`` after its reference (it
    was taught a pulse at 10.6 ms as a response at 10 ms), usual latency 10 ms."""
    t = np.arange(200) * STEP_MS
    template = ResponseTemplate(FS)
    template.learn(0, 100.0 * np.exp(-0.5 * ((t - USUAL_MS - PEAK_OFFSET_MS) / 0.5) ** 2), USUAL_MS, 100.0, 1.0)
    assert template.usable(10.0)
    assert template.first_peak_ms == pytest.approx(PEAK_OFFSET_MS, abs=1e-9)
    assert template.usual_latency_ms == USUAL_MS
    return template


def _fit(y: np.ndarray, bg_removed: np.ndarray, *, noise_uV: float = 1.0, direct_uV: float = 0.0):
    weights = np.ones_like(T_MS)
    background = np.column_stack((np.ones_like(T_MS), T_MS / 10.0))
    fit, _coef = fit_template(
        _template(),
        T_MS,
        y,
        weights,
        background,
        np.zeros((2, 2)),
        2,
        bg_removed=bg_removed,
        window_ms=WINDOW_MS,
        noise_uV=noise_uV,
        peak_hz=1000.0,
        direct_uV=direct_uV,
    )
    return fit


@pytest.mark.parametrize("peak_ms", [10.06, 10.0, 9.93, 11.14])
def test_a_response_between_two_candidate_latencies_is_placed_where_it_is(peak_ms):
    """The parabola through the best score and its neighbours finds the pulse between the
    candidates to a micro-second, where the best candidate alone is up to 0.1 ms off."""
    fit = _fit(np.zeros_like(T_MS), _pulse(peak_ms))
    assert fit.accepted and fit.amplitude_uV == 0.0
    assert fit.latency_ms == pytest.approx(peak_ms, abs=1e-3)
    assert fit.shift_ms == pytest.approx(peak_ms - PEAK_OFFSET_MS, abs=1e-3)


def test_a_response_just_after_the_second_candidate_is_refined_too():
    """Best score at the second candidate (7.7 ms): refined with the first and the third."""
    fit = _fit(np.zeros_like(T_MS), _pulse(7.78))
    assert fit.latency_ms == pytest.approx(7.78, abs=1e-3)


def test_a_response_just_after_the_last_but_one_candidate_is_refined_too():
    """Best score at the last candidate but one (12.3 ms): refined with its two neighbours."""
    fit = _fit(np.zeros_like(T_MS), _pulse(12.38))
    assert fit.latency_ms == pytest.approx(12.38, abs=1e-3)


def test_a_response_before_the_first_candidate_is_placed_at_the_first_candidate():
    """Best score at the first candidate (7.5 ms): no neighbour before it, no refinement
    (the last candidate's score is not its neighbour)."""
    fit = _fit(np.zeros_like(T_MS), _pulse(7.45))
    assert fit.latency_ms == pytest.approx(7.5, abs=1e-9)
    assert fit.shift_ms == pytest.approx(7.5 - PEAK_OFFSET_MS, abs=1e-9)


def test_a_response_after_the_last_candidate_is_placed_at_the_last_candidate():
    fit = _fit(np.zeros_like(T_MS), _pulse(12.56))
    assert fit.latency_ms == pytest.approx(12.5, abs=1e-9)


def test_nothing_like_the_response_is_measured_at_the_usual_latency():
    """No candidate correlates positively (an inverted pulse, or nothing at all): the
    template's first major peak is placed at its usual latency, 10 ms."""
    for bg_removed in (np.zeros_like(T_MS), -_pulse(9.0)):
        fit = _fit(np.zeros_like(T_MS), bg_removed)
        assert fit.accepted
        assert fit.latency_ms == pytest.approx(USUAL_MS, abs=1e-9)
        assert fit.shift_ms == pytest.approx(USUAL_MS - PEAK_OFFSET_MS, abs=1e-9)


def test_a_fit_with_no_response_keeps_the_searched_shift():
    """The joint fit of a trace of zeros finds a scale of zero: there is nothing to align,
    the shift stays where the search put it and the fit is that of an absent response
    (amplitude 0, residual 0), accepted as agreeing with a direct value of 0."""
    fit = _fit(np.zeros_like(T_MS), _pulse(10.3))
    assert fit.accepted and fit.why == ""
    assert fit.amplitude_uV == 0.0 and fit.residual_ratio == 0.0
    assert fit.latency_ms == pytest.approx(10.3, abs=1e-3)


def test_the_shift_moves_at_most_0_3_ms_a_step_for_four_steps():
    """The search finds the pulse of the background-removed trace at 8 ms, the fitted trace
    has it 2 ms later: each Gauss-Newton step is capped at 0.3 ms and there are four, so
    the fit ends 1.2 ms after where the search started (the noise is set large enough for
    the remaining misfit to be accepted)."""
    fit = _fit(_pulse(10.0, width_ms=1.0), _pulse(8.0, width_ms=1.0), noise_uV=1e4)
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(8.0 + 1.2, abs=1e-3)
