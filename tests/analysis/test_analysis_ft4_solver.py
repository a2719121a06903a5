"""The weighted, penalised least squares behind ``fit_template`` (``_Solver``): the
background penalty and the small ridges are relative to the background terms' own energy
(so how the basis is scaled does not change the fit), the ridges are added (the system
stays positive definite: a term the data scarcely touch, or a response none of whose
samples were kept, still gives a solution and an honest standard error), and a system
that cannot be solved measures nothing with an infinite standard error instead of
failing."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import ResponseTemplate, fit_template

STEP_MS = 0.2
T_MS = np.arange(-20, 180) * STEP_MS
LINE = np.column_stack((np.ones_like(T_MS), T_MS / 10.0))


def _pulse_template() -> ResponseTemplate:
    """A clean 5 kHz template of one Gaussian pulse (0.5 ms wide) at 10.6 ms, peak-to-peak 1."""
    t = np.arange(200) * STEP_MS
    template = ResponseTemplate(5000.0)
    template.learn(0, 100.0 * np.exp(-0.5 * ((t - 10.6) / 0.5) ** 2), 10.0, 100.0, 0.01)
    assert template.usable(10.0)
    return template


def _pulse(height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((T_MS - 10.6) / 0.5) ** 2)


def _fit(template, y, background, *, penalty=None, n_spline=2, weights=None, noise=1.0, direct=None):
    weights = np.ones_like(T_MS) if weights is None else weights
    penalty = np.zeros((background.shape[1],) * 2) if penalty is None else penalty
    return fit_template(
        template, T_MS, y, weights, background, penalty, n_spline,
        bg_removed=y, window_ms=(1.0, 30.0), noise_uV=noise, peak_hz=1000.0,
        direct_uV=float(np.ptp(y)) if direct is None else direct,
    )  # fmt: skip


def test_scaling_the_background_basis_does_not_change_the_fitted_amplitude():
    """Nine smooth background terms (5 ms wide bumps) with a second-difference penalty and
    a wander the penalty resists: the same basis scaled by 1e-3 or 1e-5 (mean energy of a
    spline term far under 1) fits the response to the same amplitude, because the penalty
    and the ridges scale with the terms' energy."""
    centres = np.linspace(-4.0, 36.0, 9)
    bumps = np.column_stack([np.exp(-0.5 * ((T_MS - c) / 5.0) ** 2) for c in centres])
    d2 = np.diff(np.eye(9), 2, axis=0)
    penalty = d2.T @ d2
    y = _pulse(20.0) + 0.02 * (T_MS - 15.0) ** 2
    template = _pulse_template()
    amplitudes = []
    for scale in (1.0, 1e-3, 1e-5):
        fit, _coef = _fit(template, y, scale * bumps, penalty=penalty, n_spline=9, noise=3.0, direct=20.0)
        assert fit.accepted, fit.why
        amplitudes.append(fit.amplitude_uV)
    assert amplitudes[0] == pytest.approx(20.0, rel=0.02)
    assert amplitudes[1] == pytest.approx(amplitudes[0], rel=1e-6)
    assert amplitudes[2] == pytest.approx(amplitudes[0], rel=1e-6)


def test_a_response_with_every_sample_blanked_has_a_huge_standard_error_not_zero():
    """A compact template (a 1 ms raised cosine, learned at 100 kHz so it is exactly zero
    outside it) and an epoch whose samples over the response are all blanked: only the
    support's margins, where the template is zero, are kept. Nothing of the response was
    seen: the amplitude is 0 with a standard error thousands of times the noise (set by the
    ridge), never a standard error of 0."""
    h = 0.01
    t = np.arange(3000) * h
    u = np.clip((t - 10.0) / 0.5, -1.0, 1.0)
    template = ResponseTemplate(100000.0)
    template.learn(0, 50.0 * (1.0 + np.cos(np.pi * u)), 10.0, 100.0, 1.0)
    assert template.usable(10.0)
    weights = np.where(np.abs(T_MS - 10.0) <= 0.6, 0.0, 1.0)
    fit, _coef = _fit(template, np.zeros_like(T_MS), LINE, weights=weights, direct=0.0)
    sv, dv = template.values(T_MS - fit.shift_ms)
    assert not (sv * weights).any() and not (dv * weights).any()
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0
    assert fit.sigma_uV > 100.0


def test_a_background_term_with_as_little_energy_as_the_ridge_keeps_the_system_solvable():
    """The ridge that keeps the normal matrix regular is 1e-9 of the spline terms' mean
    energy, added to every background term. Two spline terms of energy 199 each, and a
    third term that touches only the last sample (far from the response) with energy
    exactly 199e-9: the system stays solvable and the 50 uV response is measured."""
    k = len(T_MS) - 1
    constant = np.ones_like(T_MS)
    alternating = np.where(np.arange(len(T_MS)) % 2 == 0, 1.0, -1.0)
    constant[k] = alternating[k] = 0.0
    target = 199.0 * 1e-9
    v = float(np.sqrt(target))
    for _ in range(60):
        if v * v == target:
            break
        v = float(np.nextafter(v, np.inf if v * v < target else -np.inf))
    assert v * v == target
    spike = np.zeros_like(T_MS)
    spike[k] = v
    background = np.column_stack((constant, alternating, spike))
    assert float(np.trace(background[:, :2].T @ background[:, :2])) / 2 == 199.0
    fit, _coef = _fit(_pulse_template(), _pulse(50.0), background, direct=50.0)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == pytest.approx(50.0, rel=1e-4)


def test_a_system_that_cannot_be_solved_measures_nothing_with_an_infinite_error(monkeypatch):
    """When the linear algebra reports a singular system (forced here), every solve gives
    zero coefficients (and an infinite variance for the scale): a trace of zeros is then
    measured as 0 uV with an infinite standard error, without an exception."""

    def singular(*_args, **_kwargs):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(np.linalg, "solve", singular)
    fit, coef = _fit(_pulse_template(), np.zeros_like(T_MS), LINE, direct=0.0)
    assert fit.accepted, fit.why
    assert fit.amplitude_uV == 0.0
    assert fit.sigma_uV == np.inf
    assert coef is not None and coef.shape == (3,) and not coef.any()
