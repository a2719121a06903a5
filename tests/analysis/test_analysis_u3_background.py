"""The background model of an epoch (``app.analysis.noise.Background``) checked directly
against an independent numpy reference: its regularised weighted normal equations, the
first-stage fit with the chi-square of each mains pair, and the second stage that leaves
out the mains pairs that are neither known to be present nor clearly present."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.analysis.noise import MAINS_CHI2, PENALTY, Background

FS = 10000.0  # decimation 2: the fit uses every other sample
PRE, N = 100, 600  # -10 ms to +50 ms


def _model(fs: float = FS, pre: int = PRE, n: int = N) -> Background:
    return Background(fs, pre, n)


def _regulariser(m: Background) -> np.ndarray:
    """Second-difference penalty on the spline terms, built term by term: the sum over
    consecutive spline triples of (c[j] - 2 c[j+1] + c[j+2])**2 as a quadratic form."""
    p = m.basis.shape[1]
    r = np.zeros((p, p))
    for j in range(m.n_spline - 2):
        d = np.zeros(p)
        d[j], d[j + 1], d[j + 2] = 1.0, -2.0, 1.0
        r += np.outer(d, d)
    return r


def _reference_normal(m: Background, weights: np.ndarray, drop: np.ndarray | None = None) -> np.ndarray:
    """Weighted normal matrix per row, plus the penalty and a 1e-9 ridge scaled by the mean
    diagonal of the spline block (at least 1e-12), plus a 1e6-scaled ridge on dropped terms."""
    x = m.basis[m.idx]
    p = x.shape[1]
    out = []
    for i, w in enumerate(weights):
        a = x.T @ (w[:, None] * x)
        s = max(np.trace(a[: m.n_spline, : m.n_spline]) / m.n_spline, 1e-12)
        a = a + s * (PENALTY * _regulariser(m) + 1e-9 * np.eye(p))
        if drop is not None:
            a = a + 1e6 * s * np.diag(drop[i].astype(float))
        out.append(a)
    return np.array(out)


def _close(a: np.ndarray, ref: np.ndarray, rtol: float = 1e-11) -> None:
    np.testing.assert_allclose(a, ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)))


def _weights(m: Background, rows: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 3.0, size=(rows, len(m.idx)))


# --------------------------------------------------------------------- normal equations


def test_normal_equations_match_a_weighted_least_squares_reference():
    """Uneven weights per row: the matrices equal X^T W X plus the scaled penalty and ridge."""
    m = _model()
    w = _weights(m)
    a = m.normal_equations(w)
    assert a.shape == (3, m.basis.shape[1], m.basis.shape[1])
    _close(a, _reference_normal(m, w))


def test_normal_equations_of_a_single_row():
    """One row of weights gives a stack of one matrix, not a bare matrix."""
    m = _model()
    w = _weights(m, rows=1, seed=2)
    a = m.normal_equations(w)
    assert a.shape == (1, m.basis.shape[1], m.basis.shape[1])
    _close(a, _reference_normal(m, w))


def test_normal_equations_with_explicit_columns_equal_the_built_in_basis():
    """Passing the fit basis as ``columns`` gives the same matrices as the precomputed path,
    for uneven weights and with some samples weighted zero."""
    m = _model()
    w = _weights(m, rows=2, seed=3)
    w[:, 40:90] = 0.0
    a = m.normal_equations(w, columns=m.fit_basis)
    _close(a, _reference_normal(m, w))
    _close(a, m.normal_equations(w))


def test_normal_equations_of_other_columns_use_those_columns():
    """Other columns of the same terms (here the fit basis with every sample rescaled) give
    their own weighted normal matrices, regularised on their own scale."""
    m = _model()
    w = _weights(m, rows=2, seed=4)
    x = m.fit_basis * np.random.default_rng(40).uniform(0.5, 2.0, size=(len(m.idx), 1))
    got = m.normal_equations(w, columns=x)
    assert got.shape == (2, m.basis.shape[1], m.basis.shape[1])
    p = x.shape[1]
    for i in range(2):
        a = x.T @ (w[i][:, None] * x)
        s = np.trace(a[: m.n_spline, : m.n_spline]) / m.n_spline
        _close(got[i], a + s * (PENALTY * _regulariser(m) + 1e-9 * np.eye(p)))


def test_normal_equations_with_no_weight_are_the_floor_regulariser():
    """With every sample weighted zero the data part vanishes and the scale falls to its
    1e-12 floor: the matrix is 1e-12 * (penalty + 1e-9 ridge) exactly."""
    m = _model()
    w = np.zeros((2, len(m.idx)))
    a = m.normal_equations(w)
    ref = 1e-12 * (PENALTY * _regulariser(m) + 1e-9 * np.eye(m.basis.shape[1]))
    _close(a, np.broadcast_to(ref, a.shape), rtol=1e-12)
    mains = np.arange(m.n_spline, m.basis.shape[1])
    assert np.allclose(a[:, mains, mains], 1e-21, rtol=1e-9)


def test_normal_equations_scale_follows_the_weight_of_the_row():
    """Doubling a row's weights doubles its whole matrix (data, penalty and ridge alike);
    tiny weights are not lifted to a floor of 1."""
    m = _model()
    w = _weights(m, rows=1, seed=5)
    a1 = m.normal_equations(w)
    _close(m.normal_equations(2.0 * w), 2.0 * a1)
    _close(m.normal_equations(1e-6 * w), 1e-6 * a1, rtol=1e-9)


def test_dropped_terms_get_a_large_ridge_in_their_row_only():
    """``drop`` adds 1e6 times the row's scale to the diagonal of the dropped terms of that
    row; other rows and other terms are unchanged."""
    m = _model()
    w = _weights(m, rows=3, seed=6)
    p = m.basis.shape[1]
    drop = np.zeros((3, p), dtype=bool)
    drop[0, m.n_spline : m.n_spline + 2] = True
    drop[2, -4:] = True
    a = m.normal_equations(w, drop=drop)
    _close(a, _reference_normal(m, w, drop))
    plain = m.normal_equations(w)
    _close(a[1], plain[1])
    x = m.fit_basis[:, : m.n_spline]
    scale = np.einsum("in,nk,nk->i", w, x, x) / m.n_spline  # mean diagonal of the spline block
    extra = np.diagonal(a - plain, axis1=1, axis2=2)
    # the ridge is exactly 1e6 * scale (to the rounding of the sum), not (1e6 + 1) * scale
    np.testing.assert_allclose(extra[drop], 1e6 * np.repeat(scale, drop.sum(axis=1)), rtol=1e-8)
    assert np.all(extra[~drop] == 0.0)


def test_drop_of_nothing_changes_nothing():
    """An all-false ``drop`` gives the same matrices as no ``drop``."""
    m = _model()
    w = _weights(m, rows=2, seed=7)
    drop = np.zeros((2, m.basis.shape[1]), dtype=bool)
    np.testing.assert_array_equal(m.normal_equations(w, drop=drop), m.normal_equations(w))


# ----------------------------------------------------------------------------- solve


def _signal(m: Background, coef: np.ndarray) -> np.ndarray:
    return coef @ m.basis.T


def _true_coef(m: Background, rows: int, seed: int = 10) -> np.ndarray:
    """Spline coefficients linear in the term index (no second difference, so the penalty
    does not bias them) plus random mains amplitudes."""
    rng = np.random.default_rng(seed)
    c = np.zeros((rows, m.basis.shape[1]))
    j = np.arange(m.n_spline)
    for i in range(rows):
        c[i, : m.n_spline] = rng.uniform(-20, 20) + rng.uniform(-2, 2) * j
        c[i, m.n_spline :] = rng.uniform(-8, 8, size=m.basis.shape[1] - m.n_spline)
    return c


def _reference_fit(m: Background, z: np.ndarray, keep: np.ndarray, drop: np.ndarray | None = None) -> np.ndarray:
    w = keep[:, m.idx].astype(float)
    x = m.basis[m.idx]
    a = _reference_normal(m, w, drop)
    b = np.array([x.T @ (wi * zi[m.idx]) for wi, zi in zip(w, z, strict=True)])
    return np.array([np.linalg.solve(ai, bi) for ai, bi in zip(a, b, strict=True)])


def _reference_chi(m: Background, z, keep, noise, peak_hz) -> np.ndarray:
    """Chi-square of each mains pair: (c_cos^2 / var_cos + c_sin^2 / var_sin) with
    var = diag(A^-1) * noise^2 * max(1, fit rate / (2 peak_hz))."""
    w = keep[:, m.idx].astype(float)
    a = _reference_normal(m, w)
    c = _reference_fit(m, z, keep)
    rate = FS if m.fs == FS else m.fs
    corr = max(1.0, rate / m.decimation / (2.0 * peak_hz))
    out = []
    for i in range(len(z)):
        var = np.diag(np.linalg.inv(a[i]))[m.n_spline :] * noise[i] ** 2 * corr
        chi = c[i, m.n_spline :] ** 2 / var
        out.append(chi[0::2] + chi[1::2])
    return np.array(out)


def test_fit_recovers_known_spline_and_mains_coefficients():
    """A signal made exactly of the model's terms (smooth spline plus hum at all six
    frequencies) is recovered term by term from all samples."""
    m = _model()
    assert m.decimation == 2 and m.n_pairs == 6
    c0 = _true_coef(m, 3)
    z = _signal(m, c0)
    keep = np.ones_like(z, dtype=bool)
    stage = m.solve(z, keep, np.ones(3), 1000.0)
    np.testing.assert_allclose(stage.coef, c0, rtol=0, atol=1e-6 * np.abs(c0).max())
    np.testing.assert_allclose(stage.coef @ m.basis.T, z, atol=1e-6 * np.abs(z).max())


def test_fit_leaves_out_samples_not_kept():
    """Whatever is on the samples not kept (a large response) does not move the fit."""
    m = _model()
    c0 = _true_coef(m, 2, seed=11)
    z = _signal(m, c0)
    keep = np.ones_like(z, dtype=bool)
    keep[:, 200:260] = False
    z[:, 200:260] += 5000.0 * np.sin(np.arange(60) / 3.0)
    stage = m.solve(z, keep, np.ones(2), 1000.0)
    np.testing.assert_allclose(stage.coef, c0, rtol=0, atol=1e-5 * np.abs(c0).max())


def test_solve_matches_the_reference_on_arbitrary_data():
    """On noisy data with gaps the first stage is the regularised weighted least-squares
    solution, its weights are the kept samples on the fit grid, its right-hand sides are
    X^T W z, and its chi-squares follow the reference."""
    m = _model()
    rng = np.random.default_rng(12)
    z = _signal(m, _true_coef(m, 3, seed=12)) + rng.normal(0, 3.0, size=(3, N))
    keep = np.ones_like(z, dtype=bool)
    keep[0, 150:230] = False
    keep[1, 300:320] = False
    keep[2, ::7] = False
    noise = np.array([0.5, 2.0, 3.0])
    peak_hz = 5000.0 / 3.0  # fit rate / (2 peak) = 1.5: correlated samples count 1.5 times
    stage = m.solve(z, keep, noise, peak_hz)
    np.testing.assert_array_equal(stage.weights, keep[:, m.idx].astype(float))
    assert stage.weights.dtype == np.float64
    x = m.basis[m.idx]
    rhs = np.array([x.T @ (keep[i, m.idx] * z[i, m.idx]) for i in range(3)])
    _close(stage.rhs, rhs)
    _close(stage.coef, _reference_fit(m, z, keep), rtol=1e-8)
    assert stage.chi.shape == (3, 6)
    _close(stage.chi, _reference_chi(m, z, keep, noise, peak_hz), rtol=1e-7)


@pytest.mark.parametrize("peak_hz", [800.0, 2000.0, 3000.0])
def test_chi_square_counts_correlated_samples(peak_hz):
    """Samples closer than half a period of the peak band are not independent: the noise
    variance is scaled by fit rate / (2 peak_hz), but never below 1 (here 3.125, 1.25, 1)."""
    m = _model()
    rng = np.random.default_rng(13)
    z = _signal(m, _true_coef(m, 2, seed=13)) + rng.normal(0, 1.0, size=(2, N))
    keep = np.ones_like(z, dtype=bool)
    noise = np.array([0.7, 1.3])
    stage = m.solve(z, keep, noise, peak_hz)
    _close(stage.chi, _reference_chi(m, z, keep, noise, peak_hz), rtol=1e-7)


def test_chi_square_scales_with_the_inverse_noise_variance():
    """Halving the stated noise multiplies every chi-square by four; a zero noise is taken
    as 1e-9 (not 1), so the chi-square becomes huge but finite."""
    m = _model()
    rng = np.random.default_rng(14)
    z = _signal(m, _true_coef(m, 1, seed=14)) + rng.normal(0, 1.0, size=(1, N))
    keep = np.ones_like(z, dtype=bool)
    chi1 = m.solve(z, keep, np.array([1.0]), 1000.0).chi
    chi_half = m.solve(z, keep, np.array([0.5]), 1000.0).chi
    _close(chi_half, 4.0 * chi1, rtol=1e-9)
    chi0 = m.solve(z, keep, np.array([0.0]), 1000.0).chi
    assert np.all(np.isfinite(chi0))
    _close(chi0, 1e18 * chi1, rtol=1e-6)


def test_chi_square_of_a_pair_adds_its_cosine_and_sine():
    """Hum in the cosine of the 100 Hz term, in its sine, and in both: the pair chi-square of
    the third is the sum of the first two (each term contributes its own); the other pairs
    stay near zero."""
    m = _model()
    ns = m.n_spline
    keep = np.ones((3, N), dtype=bool)
    c = np.zeros((3, m.basis.shape[1]))
    c[0, ns + 2] = 5.0  # 100 Hz cosine
    c[1, ns + 3] = 5.0  # 100 Hz sine
    c[2, ns + 2 : ns + 4] = 5.0
    chi = m.solve(_signal(m, c), keep, np.ones(3), 1000.0).chi
    assert chi.shape == (3, 6)
    assert chi[0, 1] > 100 and chi[1, 1] > 100
    assert chi[2, 1] == pytest.approx(chi[0, 1] + chi[1, 1], rel=1e-6)
    others = np.delete(chi, 1, axis=1)
    assert np.all(others < 1e-12 * chi[0, 1])
    assert np.all(chi >= 0)


def test_low_sample_rate_has_no_mains_terms():
    """At 100 Hz no mains frequency is below 0.4 fs: the model is the spline only, the
    chi-square has no columns, and the second stage keeps the first-stage coefficients."""
    m = Background(100.0, 5, 60)
    assert m.n_pairs == 0 and m.basis.shape[1] == m.n_spline
    j = np.arange(m.n_spline)
    c0 = np.vstack([3.0 + 0.5 * j, -1.0 + 0.2 * j])
    z = _signal(m, c0)
    stage = m.solve(z, np.ones_like(z, dtype=bool), np.ones(2), 30.0)
    assert isinstance(stage.chi, np.ndarray) and stage.chi.shape == (2, 0)
    np.testing.assert_allclose(stage.coef, c0, atol=1e-6 * np.abs(c0).max())
    c, drop = m.finish(stage)
    assert c is stage.coef
    assert drop.dtype == bool and drop.shape == c0.shape and not drop.any()
    c2, drop2, chi = m.fit(z, np.ones_like(z, dtype=bool), np.ones(2), 30.0)
    np.testing.assert_array_equal(c2, stage.coef)
    assert chi.shape == (2, 0)


# ----------------------------------------------------------------------------- finish


def _stage_with_chi(m: Background, chi: np.ndarray, seed: int = 20):
    """A first stage on noisy data, with its chi-squares replaced by ``chi``."""
    rows = len(chi)
    rng = np.random.default_rng(seed)
    z = _signal(m, _true_coef(m, rows, seed=seed)) + rng.normal(0, 2.0, size=(rows, N))
    keep = np.ones_like(z, dtype=bool)
    keep[:, 180:240] = False
    stage = m.solve(z, keep, np.ones(rows), 1000.0)
    return z, keep, dataclasses.replace(stage, chi=np.asarray(chi, dtype=float))


def test_finish_keeps_every_pair_when_all_are_clearly_present():
    """No weak pair: the first-stage coefficients are returned unchanged, nothing dropped."""
    m = _model()
    _z, _keep, stage = _stage_with_chi(m, np.full((2, 6), 50.0))
    c, drop = m.finish(stage)
    np.testing.assert_array_equal(c, stage.coef)
    assert drop.dtype == bool and drop.shape == stage.coef.shape and not drop.any()


def test_finish_drops_weak_pairs_and_refits():
    """Pairs under ``MAINS_CHI2`` are dropped (both their terms, in their row only) and the
    remaining terms are refitted with those held near zero, as in the reference."""
    m = _model()
    ns = m.n_spline
    chi = np.array([[50.0, 1.0, 50.0, 50.0, 3.0, 50.0], [50.0] * 6, [0.5] * 6])
    z, keep, stage = _stage_with_chi(m, chi)
    c, drop = m.finish(stage)
    weak = chi < MAINS_CHI2
    expect = np.zeros_like(drop)
    expect[:, ns:] = np.repeat(weak, 2, axis=1)
    np.testing.assert_array_equal(drop, expect)
    assert drop.dtype == bool
    _close(c, _reference_fit(m, z, keep, expect), rtol=1e-7)
    assert np.all(np.abs(c[drop]) < 1e-4 * np.abs(stage.coef).max())
    np.testing.assert_allclose(c[1], stage.coef[1], rtol=1e-9, atol=1e-9 * np.abs(stage.coef).max())


def test_a_pair_at_the_threshold_is_modelled():
    """A chi-square exactly at ``MAINS_CHI2`` counts as clearly present."""
    m = _model()
    chi = np.array([[MAINS_CHI2] * 6, [np.nextafter(MAINS_CHI2, 0.0)] + [MAINS_CHI2] * 5])
    _z, _keep, stage = _stage_with_chi(m, chi)
    _c, drop = m.finish(stage)
    assert not drop[0].any()
    assert drop[1, m.n_spline] and drop[1, m.n_spline + 1] and drop[1].sum() == 2


def test_known_present_pairs_are_always_modelled():
    """A pair known present on the channel is modelled even with a small chi-square; a
    clearly present pair is modelled even if not known; only a weak unknown pair is dropped."""
    m = _model()
    ns = m.n_spline
    chi = np.array([[50.0, 1.0, 50.0, 1.0, 1.0, 50.0]])
    present = np.array([[False, False, True, True, False, False]])
    z, keep, stage = _stage_with_chi(m, chi)
    c, drop = m.finish(stage, present)
    weak = np.array([False, True, False, False, True, False])
    expect = np.zeros_like(drop)
    expect[0, ns:] = np.repeat(weak, 2)
    np.testing.assert_array_equal(drop, expect)
    _close(c, _reference_fit(m, z, keep, expect), rtol=1e-7)
    assert present.tolist() == [[False, False, True, True, False, False]]  # not modified


def test_all_pairs_present_keeps_the_first_stage():
    """With every pair known present nothing is dropped even when all are weak."""
    m = _model()
    _z, _keep, stage = _stage_with_chi(m, np.full((2, 6), 0.1))
    c, drop = m.finish(stage, np.ones((2, 6), dtype=bool))
    assert not drop.any()
    np.testing.assert_array_equal(c, stage.coef)


def test_fit_is_solve_then_finish():
    """``fit`` returns the second-stage coefficients and drop of the first stage's chi-square,
    and that chi-square; hum present in one pair only is kept, the empty pairs dropped."""
    m = _model()
    ns = m.n_spline
    rng = np.random.default_rng(30)
    c0 = _true_coef(m, 2, seed=30)
    c0[:, ns:] = 0.0
    c0[:, ns + 2 : ns + 4] = [30.0, -20.0]  # 100 Hz only
    z = _signal(m, c0) + rng.normal(0, 1.0, size=(2, N))
    keep = np.ones_like(z, dtype=bool)
    c, drop, chi = m.fit(z, keep, np.ones(2), 1000.0)
    stage = m.solve(z, keep, np.ones(2), 1000.0)
    np.testing.assert_array_equal(chi, stage.chi)
    assert np.all(chi[:, 1] > 1e3)
    c2, drop2 = m.finish(stage)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(drop, drop2)
    assert not drop[:, ns + 2 : ns + 4].any()
    np.testing.assert_allclose(c[:, ns + 2 : ns + 4], c0[:, ns + 2 : ns + 4], atol=0.5)
