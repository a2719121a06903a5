"""The epoch's zero-phase filter (``_ZeroPhase``) gives what ``scipy.signal.sosfiltfilt``
gives with odd padding of ``min(padlen, n - 1)`` samples, row by row, through the compiled
kernel and through the public ``sosfilt`` alike; it never changes the caller's samples and
takes integer, single-precision and non-contiguous input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis import epoch
from app.analysis.epoch import _ZeroPhase

_FS = 20000.0
_SOS = {
    "band": sps.butter(2, [10.0, 1000.0], btype="bandpass", fs=_FS, output="sos"),  # 2 sections
    "peak": np.vstack(
        [
            sps.butter(2, [10.0, 3000.0], btype="bandpass", fs=_FS, output="sos"),
            sps.butter(4, 1000.0, fs=_FS, output="sos"),
        ]
    ),  # 4 sections
    "low1": sps.butter(2, 2000.0, fs=_FS, output="sos"),  # 1 section
}


@pytest.fixture(params=["kernel", "public"])
def path(request, monkeypatch):
    """Run each test through the compiled kernel and through scipy's public ``sosfilt``."""
    if request.param == "public":
        monkeypatch.setattr(epoch, "_SOSFILT", None)
    else:
        assert epoch._SOSFILT is not None
    return request.param


def _reference(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """sosfiltfilt with odd padding of min(padlen, n - 1) samples, one row at a time."""
    x = np.asarray(x, dtype=np.float64)
    p = min(padlen, x.shape[1] - 1)
    rows = []
    for row in x:
        if p > 0:
            rows.append(sps.sosfiltfilt(sos, row, padtype="odd", padlen=p))
        else:
            rows.append(sps.sosfiltfilt(sos, row, padtype=None))
    return np.array(rows).reshape(x.shape)


def _rows(k: int, n: int, seed: int) -> np.ndarray:
    """k distinct rows: an offset, a slope and noise, so the ends and the start-up matter."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    offsets = rng.uniform(-800.0, 800.0, size=(k, 1))
    slopes = rng.uniform(-5.0, 5.0, size=(k, 1))
    return offsets + slopes * t + rng.normal(0.0, 60.0, size=(k, n))


def _check(sos_name: str, x: np.ndarray, padlen: int) -> None:
    zp = _ZeroPhase(_SOS[sos_name], padlen)
    before = x.copy()
    got = zp(x)
    want = _reference(_SOS[sos_name], x, padlen)
    assert isinstance(got, np.ndarray) and got.shape == x.shape
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-7)
    assert np.array_equal(x, before)  # the caller's samples are left alone


@pytest.mark.parametrize("sos_name", sorted(_SOS))
@pytest.mark.parametrize(("k", "n", "padlen"), [(3, 300, 200), (4, 120, 37), (2, 90, 8), (5, 61, 5)])
def test_long_rows_match_sosfiltfilt_with_the_requested_padding(path, sos_name, k, n, padlen):
    _check(sos_name, _rows(k, n, seed=n + padlen), padlen)


@pytest.mark.parametrize("sos_name", ["band", "peak"])
@pytest.mark.parametrize(("n", "padlen"), [(2, 1), (3, 1), (3, 2), (4, 3), (5, 50), (10, 9), (10, 10), (12, 200)])
def test_short_rows_are_padded_by_at_most_n_minus_one_samples(path, sos_name, n, padlen):
    _check(sos_name, _rows(3, n, seed=7 * n + padlen), padlen)


@pytest.mark.parametrize("sos_name", ["band", "low1"])
@pytest.mark.parametrize(("k", "n", "padlen"), [(3, 1, 200), (2, 1, 0), (3, 40, 0), (1, 7, 0)])
def test_without_padding_the_rows_are_filtered_as_they_are(path, sos_name, k, n, padlen):
    """No padding (padlen 0 or a one-sample epoch): the filter still starts from the
    steady state of the first sample, and the caller's C-ordered float64 rows are untouched."""
    x = np.ascontiguousarray(_rows(k, n, seed=k + n))
    assert x.flags.c_contiguous and x.dtype == np.float64
    _check(sos_name, x, padlen)


def test_a_one_sample_epoch_keeps_its_value_through_a_low_pass(path):
    """A constant row (a single sample is one) passes a unity-gain low-pass unchanged."""
    x = np.array([[37.5], [-12.25]])
    got = _ZeroPhase(_SOS["low1"], 200)(x)
    np.testing.assert_allclose(got, x, rtol=1e-12)
    assert x.tolist() == [[37.5], [-12.25]]


@pytest.mark.parametrize("padlen", [0, 1, 30])
def test_integer_input_is_filtered_as_float(path, padlen):
    rng = np.random.default_rng(11)
    xi = rng.integers(-2000, 2000, size=(3, 80))
    got = _ZeroPhase(_SOS["band"], padlen)(xi)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _reference(_SOS["band"], xi.astype(np.float64), padlen), rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("padlen", [0, 1, 30])
def test_single_precision_input_is_filtered_in_double_precision(path, padlen):
    """float32 rows come out as float64, equal to the float64 result up to float32 rounding of the padding."""
    x = _rows(3, 90, seed=5).astype(np.float32)
    got = _ZeroPhase(_SOS["peak"], padlen)(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _reference(_SOS["peak"], x.astype(np.float64), padlen), rtol=0, atol=1e-3)


@pytest.mark.parametrize("padlen", [0, 1, 30])
def test_strided_and_fortran_ordered_input(path, padlen):
    base = _rows(6, 150, seed=3)
    strided = base[::2, ::3]  # (3, 50), not contiguous
    fortran = np.asfortranarray(_rows(4, 60, seed=4))
    for x in (strided, fortran):
        before = x.copy()
        got = _ZeroPhase(_SOS["band"], padlen)(x)
        np.testing.assert_allclose(got, _reference(_SOS["band"], x, padlen), rtol=1e-9, atol=1e-7)
        assert np.array_equal(x, before)


def test_kernel_and_public_sosfilt_give_identical_samples(monkeypatch):
    x = _rows(3, 200, seed=9)
    for name in sorted(_SOS):
        for padlen in (0, 1, 40, 500):
            zp = _ZeroPhase(_SOS[name], padlen)
            fast = zp(x)
            with monkeypatch.context() as m:
                m.setattr(epoch, "_SOSFILT", None)
                slow = zp(x)
            assert np.array_equal(fast, slow)


def test_each_row_is_filtered_on_its_own(path):
    """A row's output does not depend on the other rows of the batch."""
    x = _rows(4, 100, seed=21)
    zp = _ZeroPhase(_SOS["peak"], 30)
    together = zp(x)
    for i in range(4):
        np.testing.assert_allclose(together[i], zp(x[i : i + 1])[0], rtol=1e-12, atol=1e-9)
