"""The electrocautery check of an epoch (``EpochAnalyzer._cautery``) on hand-made arrays.

The epoch is cut into whole 5 ms blocks from its first sample. A block is loud when its
RMS (about its mean) reaches ``analysis.cautery_rms_uV`` (2000 µV); a loud block is
cautery when its robust RMS (1.4826 x the median absolute deviation from the block's own
median) above the peak band, ``xe - z``, reaches half that. So a sustained broadband burst
is cautery, while a large response (all in the peak band) or a lone spike is not.
``xe`` is the prepared epoch and ``z`` its peak-band copy; here both are written by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings

FS = 10_000.0  # 5 ms blocks of 50 samples


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    return EpochAnalyzer(Settings())


def _burst(n: int, amplitude: float) -> np.ndarray:
    """Alternating +/-amplitude (a zero last when n is odd): median 0, every deviation = amplitude."""
    out = np.zeros(n)
    m = 2 * (n // 2)
    out[:m:2] = amplitude
    out[1:m:2] = -amplitude
    return out


def _cautery(an: EpochAnalyzer, xe: np.ndarray, z: np.ndarray | None = None, fs: float = FS) -> list[bool]:
    z = np.zeros_like(xe) if z is None else z
    out = an._cautery(xe, z, fs, xe.shape[1])
    # the batch inverts it (``~cautery``): a boolean per epoch
    assert out.dtype == bool and out.shape == (xe.shape[0],)
    return out.tolist()


@pytest.mark.parametrize("fs, blk", [(800.0, 4), (10_000.0, 50), (10_102.0, 51)])
def test_a_burst_filling_one_whole_5ms_block_is_cautery(analyzer, fs, blk):
    xe = np.zeros((1, 2 * blk))
    xe[0, blk:] = _burst(blk, 3000.0)  # exactly the second block
    assert _cautery(analyzer, xe, fs=fs) == [True]


@pytest.mark.parametrize("fs, blk", [(800.0, 4), (10_000.0, 50), (10_102.0, 51)])
def test_the_stretch_after_the_last_whole_block_is_not_judged(analyzer, fs, blk):
    xe = np.zeros((1, 3 * blk - 1))
    xe[0, 2 * blk :] = _burst(blk - 1, 3000.0)  # one sample short of a third block
    assert _cautery(analyzer, xe, fs=fs) == [False]


def test_an_epoch_shorter_than_a_block_is_never_cautery(analyzer):
    xe = _burst(49, 5000.0)[None, :]
    assert _cautery(analyzer, xe) == [False]


def test_a_burst_of_a_fraction_of_a_millisecond_is_not_sustained(analyzer):
    xe = np.zeros((1, 300))
    xe[0, 100:104] = _burst(4, 5000.0)  # 0.4 ms of broadband noise inside one 5 ms block
    assert _cautery(analyzer, xe) == [False]


def test_a_block_whose_rms_is_exactly_the_cautery_level_is_loud(analyzer):
    xe = np.zeros((1, 150))
    xe[0, 50:100] = _burst(50, 2000.0)  # RMS exactly analysis.cautery_rms_uV
    assert _cautery(analyzer, xe) == [True]


@pytest.mark.parametrize("amplitude", [1500.0, 1999.0])
def test_broadband_noise_below_the_cautery_rms_is_not_cautery(analyzer, amplitude):
    xe = np.zeros((1, 150))
    xe[0, 50:100] = _burst(50, amplitude)  # broadband (robust RMS > 1000), but not loud enough
    assert _cautery(analyzer, xe) == [False]


def _hf_block(mad: float, large: float) -> np.ndarray:
    """50 samples with median 0 and median absolute deviation exactly ``mad``:
    13 pairs +/-mad and 12 pairs +/-large."""
    return np.concatenate([_burst(26, mad), _burst(24, large)])


def test_a_loud_block_whose_robust_rms_is_exactly_half_the_cautery_level_is_cautery():
    # robust RMS = 1.4826 * 1000; with cautery_rms_uV twice that, it is exactly the share
    an = EpochAnalyzer(Settings({"analysis.cautery_rms_uV": 2.0 * (1.4826 * 1000.0)}))
    xe = np.zeros((2, 100))
    xe[0, 50:] = _hf_block(1000.0, 10_000.0)
    xe[1, 50:] = _hf_block(np.nextafter(1000.0, 0.0), 10_000.0)  # a hair below
    assert _cautery(an, xe) == [True, False]


def test_a_large_smooth_response_is_loud_but_not_cautery(analyzer):
    t = np.arange(200)
    smooth = 4000.0 * np.sin(2.0 * np.pi * t / 50.0)  # in the peak band: all of it in z
    hf = _burst(200, 10.0)  # a little broadband noise above the peak band
    xe = (smooth + hf)[None, :]
    z = smooth[None, :]
    assert _cautery(analyzer, xe, z) == [False]


def test_only_the_broadband_block_decides_among_several_loud_blocks(analyzer):
    t = np.arange(50)
    smooth = 4000.0 * np.sin(2.0 * np.pi * t / 50.0)
    xe = np.zeros((1, 200))
    xe[0, 0:50] = smooth  # loud response, all in the peak band
    xe[0, 50:100] = _burst(50, 3000.0)  # broadband burst (none of it in the peak band)
    xe[0, 100:150] = smooth
    xe[0, 150:200] = smooth
    z = xe.copy()
    z[0, 50:100] = 0.0
    assert _cautery(analyzer, xe, z) == [True]


def test_an_offset_above_the_peak_band_is_not_broadband_noise(analyzer):
    # the peak-band copy has no DC: a block sitting at an offset leaves it in xe - z,
    # but the robust RMS is taken about each block's own median
    t = np.arange(50)
    smooth = 4000.0 * np.sin(2.0 * np.pi * t / 50.0)
    small = _burst(50, 100.0)
    xe = np.zeros((1, 150))
    xe[0, 0:50] = 5000.0 + smooth + small
    xe[0, 50:100] = -5000.0 + smooth + small
    z = np.zeros_like(xe)
    z[0, 0:50] = smooth
    z[0, 50:100] = smooth
    assert _cautery(analyzer, xe, z) == [False]


def test_each_epoch_of_a_batch_gets_its_own_verdict(analyzer):
    xe = np.zeros((3, 200))
    xe[1, 100:150] = _burst(50, 3000.0)
    xe[2, 0:50] = _burst(50, 1000.0)  # broadband, but quiet
    assert _cautery(analyzer, xe) == [False, True, False]
