"""The epoch's zero-phase filter (``_ZeroPhase``) through scipy's compiled ``sosfilt``
kernel gives exactly what it gives through the public ``sosfilt`` (and what
``sosfiltfilt`` gives), leaves its input alone, and works down to a one-sample epoch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import signal as sps

from app.analysis import epoch
from app.analysis.epoch import _ZeroPhase

_SOS = {
    "band": sps.butter(2, [10.0, 1000.0], btype="bandpass", fs=20000.0, output="sos"),
    "high": sps.butter(4, 300.0, btype="highpass", fs=20000.0, output="sos"),
}


def _public(zp: _ZeroPhase, x: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(epoch, "_SOSFILT", None)
        return zp(x)


def test_the_kernel_is_there_on_this_scipy():
    assert epoch._SOSFILT is not None


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 400)),
              elements=st.floats(-5000, 5000, allow_nan=False)),
       st.sampled_from(sorted(_SOS)), st.integers(0, 250))
def test_kernel_and_public_function_give_the_same_samples(x, kind, padlen):
    zp = _ZeroPhase(_SOS[kind], padlen)
    before = x.copy()
    got = zp(x)
    with pytest.MonkeyPatch.context() as m:
        want = _public(zp, x, m)
    assert got.shape == x.shape
    assert np.array_equal(got, want)
    assert np.array_equal(x, before)  # filtered in place, but never the caller's samples
    p = min(padlen, x.shape[1] - 1)
    if p > 0:
        ref = sps.sosfiltfilt(_SOS[kind], x, axis=-1, padtype="odd", padlen=p)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-6)


def test_a_one_sample_epoch_is_filtered_without_padding(monkeypatch):
    zp = _ZeroPhase(_SOS["band"], 200)
    x = np.array([[37.5]])
    got = zp(x)
    assert got.shape == (1, 1) and np.array_equal(got, _public(zp, x, monkeypatch))
    assert x[0, 0] == 37.5


def test_integer_and_non_contiguous_input(monkeypatch):
    zp = _ZeroPhase(_SOS["high"], 60)
    rng = np.random.default_rng(2)
    x = rng.integers(-2000, 2000, size=(4, 900))
    strided = x[::2, ::3]  # not C-ordered, not float
    assert np.array_equal(zp(strided), _public(zp, strided.astype(np.float64), monkeypatch))
