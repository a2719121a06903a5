"""The latency search of ``fit_template`` when the scores are flat at their top: the best
candidate's score equals the next one's and the one before is a single rounding step
below. The parabola through the three is then degenerate (its curvature rounds to exactly
zero, where a division would send the latency a whole step away): the latency stays at the
best candidate.

Set-up, exact to the last bit: a template taught at 100 kHz a one-cycle raised-cosine pulse
(exactly zero outside its 1 ms), an epoch whose latency search sees two samples only (the
others weigh 0, except six beside the pulse, where the shape is exactly zero, for the
final fit). One sample lies inside the pulse at every candidate around the best, where the
trace is 1: alone it scores exactly 1. The other lies at the pulse's leading edge at the
candidate before the best, by ``EDGE_MS``: its tiny share lowers that candidate's score
by one rounding step, from 1 to ``1 - 2**-53``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from app.analysis.template import ResponseTemplate, fit_template

STEP_MS = 0.2
T_MS = np.arange(-20, 180) * STEP_MS
EDGE = 70  # the sample at the pulse's leading edge (14 ms)
INSIDE = EDGE + 3  # 0.6 ms later, inside the pulse
BESIDE = [62, 63, 64, 78, 79, 80]  # where the shape is exactly zero at the candidates around the best


def _template() -> ResponseTemplate:
    """A 1 ms raised-cosine pulse taught as a response peaking at 10.5 ms: the template's
    first major peak is its reference (0 ms), the pulse spans -0.5 to 0.5 ms."""
    t = np.arange(4000) * 0.01
    x = t - 10.0
    pulse = np.where((x >= 0.0) & (x <= 1.0), 50.0 * (1.0 - np.cos(2.0 * np.pi * x)), 0.0)
    template = ResponseTemplate(100000.0)
    template.learn(0, pulse, 10.5, 100.0, 1.0)
    assert template.usable(10.0)
    assert template.first_peak_ms == 0.0
    return template


@pytest.mark.parametrize("edge_ms", [1.3e-7, 1.4e-7, 1.5e-7])
def test_a_flat_topped_score_leaves_the_latency_at_the_best_candidate(edge_ms):
    template = _template()
    before = T_MS[EDGE] + 0.5 - edge_ms  # the candidate before the best: the pulse starts edge_ms before EDGE
    lags = (before - 2 * STEP_MS) + STEP_MS * np.arange(5)  # the window starts two candidates earlier
    weights = np.zeros_like(T_MS)
    weights[[EDGE, INSIDE, *BESIDE]] = 1.0
    bg_removed = np.zeros_like(T_MS)
    bg_removed[INSIDE] = 1.0
    # the scores of the candidates around the best (only EDGE and INSIDE weigh and overlap the shape)
    edge, inside = (template.values(T_MS[k] - lags)[0] for k in (EDGE, INSIDE))
    assert np.all(inside[1:] > 0.3) and np.all(edge[3:] == 0.0) and 0.0 < edge[2] < 1e-7
    scores = inside / np.sqrt(edge**2 + inside**2)
    assert scores[2] == np.nextafter(1.0, 0.0) and scores[3] == scores[4] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero either
        fit, _coef = fit_template(
            template,
            T_MS,
            np.zeros_like(T_MS),
            weights,
            np.column_stack((np.ones_like(T_MS), T_MS / 10.0)),
            np.zeros((2, 2)),
            2,
            bg_removed=bg_removed,
            window_ms=(float(lags[0]), 30.0),
            noise_uV=1.0,
            peak_hz=1000.0,
            direct_uV=0.0,
        )
    assert fit.accepted, fit.why
    assert fit.latency_ms == pytest.approx(lags[3], abs=1e-9)
