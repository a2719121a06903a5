"""The waveform encoder's single-pass preparation gives exactly the blobs of the plain
per-step algorithm (quantise, check, clip, shift) it replaced, for any input: the record
format does not depend on how fast it is written."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.record import waveform as W

_I32 = np.iinfo(np.int32)
_I16 = np.iinfo(np.int16)


def reference_encode(samples_uV: np.ndarray, res_uV: float) -> tuple[dict, bytes]:
    """The encoder as first written, step by step (FLAC when it fits, else delta-zlib)."""
    x = np.asarray(samples_uV, dtype=np.float64)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or infinite samples")
    with np.errstate(over="ignore"):
        q = np.rint(x / res_uV)
    clipped = bool(np.any(q > _I32.max) or np.any(q < _I32.min))
    q = np.clip(q, _I32.min, _I32.max).astype(np.int64)
    meta = {"encoding": W.ENCODING, "dtype": "<i2", "res_uV": float(res_uV), "channels": int(x.shape[0]),
            "n": int(x.shape[1]), "clipped": clipped}
    sf = W._soundfile()
    if sf is not None and q.size > 0 and x.shape[0] <= 8 and int(np.abs(q).max()) <= (1 << 23) - 1:
        buf = io.BytesIO()
        sf.write(buf, (q.T << 8).astype(np.int32), 20000, format="FLAC", subtype="PCM_24",
                 compression_level=W.FLAC_LEVEL)
        return {**meta, "encoding": W.FLAC_ENCODING, "dtype": "<i4"}, buf.getvalue()
    d = np.diff(q, axis=1, prepend=0)
    dtype = "<i2" if d.size == 0 or (d.min() >= _I16.min and d.max() <= _I16.max) else "<i4"
    return {**meta, "dtype": dtype}, zlib.compress(d.astype("<i8").astype(dtype, casting="unsafe").tobytes(), 1)


# values around every boundary the encoder decides on: 24-bit FLAC, int16 differences, int32
_EDGES = [0.0, -0.0, 0.05, -0.05, 0.15, 838860.7, -838860.7, 838860.8, -838860.8, 838860.75,
          3276.7, -3276.8, 214748364.7, -214748364.8, 214748364.8, -214748364.9, 1e12, -1e12, 1e300]
_VALUES = st.one_of(st.sampled_from(_EDGES), st.floats(-2e6, 2e6, allow_nan=False),
                    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(0, 64)), elements=_VALUES),
       st.sampled_from([0.1, 0.5, 1.0, 0.0381, 1e-300]))
def test_encode_gives_the_blobs_of_the_reference(x, res):
    want_meta, want_blob = reference_encode(x, res)
    meta, blob = W.encode(x, res)
    assert meta == want_meta
    assert blob == want_blob


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_sample_anywhere_is_refused(bad):
    x = np.zeros((2, 50))
    x[1, 37] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        W.encode(x, 0.1)


def test_finite_samples_too_large_for_the_resolution_are_clipped_not_refused():
    meta, blob = W.encode(np.array([1e308, -1e308, 1.0]), 1e-10)
    assert meta["clipped"] is True and meta["encoding"] == W.ENCODING
    back = W.decode(meta, blob)
    assert back[0, 0] == pytest.approx(_I32.max * 1e-10) and back[0, 1] == pytest.approx(_I32.min * 1e-10)


def test_a_second_of_stream_is_flac_and_lossless_to_the_count():
    rng = np.random.default_rng(5)
    counts = rng.integers(-40000, 40000, size=(2, 20000))
    meta, blob = W.encode(counts * 0.1, 0.1)
    assert meta["encoding"] == W.FLAC_ENCODING and not meta["clipped"]
    assert np.array_equal(np.rint(W.decode(meta, blob) / 0.1), counts)


def test_flac_through_an_anonymous_memory_file_and_through_bytesio_are_the_same_blob(monkeypatch):
    """Where the system has no ``memfd_create`` the FLAC stream is written through a
    ``BytesIO``: the same bytes either way."""
    counts = np.random.default_rng(6).integers(-40000, 40000, size=(2, 4000))
    meta, blob = W.encode(counts * 0.1, 0.1)
    monkeypatch.delattr(W.os, "memfd_create")
    meta2, blob2 = W.encode(counts * 0.1, 0.1)
    assert meta["encoding"] == meta2["encoding"] == W.FLAC_ENCODING
    assert blob == blob2


def test_a_refused_memory_file_falls_back_to_bytesio(monkeypatch):
    """A system that refuses ``memfd_create`` (a sandbox, no descriptor left) still gets its
    FLAC blob, the same bytes, never an error in the journal writer."""
    counts = np.random.default_rng(8).integers(-40000, 40000, size=(2, 3000))
    meta, blob = W.encode(counts * 0.1, 0.1)

    def refused(*_args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(W.os, "memfd_create", refused, raising=False)
    meta2, blob2 = W.encode(counts * 0.1, 0.1)
    assert meta2 == meta and blob2 == blob


@pytest.mark.skipif(not hasattr(W.os, "memfd_create") or not W.flac_available(), reason="Linux memory files")
def test_encoding_leaves_no_file_descriptor_open():
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    x = np.random.default_rng(7).integers(-400, 400, size=(2, 2000)) * 0.1
    W.encode(x, 0.1)
    before = open_fds()
    for _ in range(40):
        W.encode(x, 0.1)
    assert open_fds() == before
