"""The epoch measurement's small helpers, checked on hand-made arrays: the straight line
drawn across a blanked stretch (``_interpolate``), the robust per-row level
(``app.analysis.noise.median_rows``), the checks on a batch's arguments (``_checked_batch``) and the empty
per-epoch results a batch starts from (``_Batch``)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.analysis.epoch import _Batch, _checked_batch, _interpolate
from app.analysis.noise import median_rows as _median_rows

# ------------------------------------------------------------------ _interpolate


def _line_by_hand(x: np.ndarray, a: int, b: int, m: int) -> np.ndarray:
    """What the blank should become, written out sample by sample."""
    out = np.array(x, dtype=np.float64)
    n = out.shape[1]
    for r in range(out.shape[0]):
        left_part = [out[r, j] for j in range(a - m, a) if 0 <= j]
        right_part = [out[r, j] for j in range(b, b + m) if j < n]
        if not left_part and not right_part:
            out[r, a:b] = 0.0
            continue
        left = sum(left_part) / len(left_part) if left_part else sum(right_part) / len(right_part)
        right = sum(right_part) / len(right_part) if right_part else left
        width = b - a
        for j in range(width):
            out[r, a + j] = left + (right - left) * (j + 1) / (width + 1)
    return out


def _rows(k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 100.0, size=(k, n)) + np.arange(k)[:, None] * 1000.0


def test_a_blank_becomes_a_line_between_its_neighbours():
    x = np.array([[0.0, 10.0, 99.0, 99.0, 99.0, 50.0, 7.0]])
    _interpolate(x, 2, 5)
    # left neighbour 10, right neighbour 50, three samples: steps of (50 - 10) / 4
    assert x.tolist() == [[0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 7.0]]


def test_the_line_joins_the_means_of_m_samples_each_side():
    x = np.array([[4.0, 8.0, 12.0, -1.0, -1.0, 30.0, 40.0, 50.0, 1000.0]])
    _interpolate(x, 3, 5, m=3)
    # left mean (4 + 8 + 12) / 3 = 8, right mean (30 + 40 + 50) / 3 = 40; two samples at 1/3, 2/3
    np.testing.assert_allclose(x[0, 3:5], [8.0 + 32.0 / 3.0, 8.0 + 64.0 / 3.0], rtol=1e-12)
    assert x[0, :3].tolist() == [4.0, 8.0, 12.0] and x[0, 5:].tolist() == [30.0, 40.0, 50.0, 1000.0]


def test_one_sample_each_side_by_default():
    x = np.array([[100.0, 2.0, 0.0, 0.0, 6.0, 100.0]])
    _interpolate(x, 2, 4)
    np.testing.assert_allclose(x, [[100.0, 2.0, 10.0 / 3.0, 14.0 / 3.0, 6.0, 100.0]], rtol=1e-12)


@pytest.mark.parametrize(
    ("n", "a", "b", "m"),
    [
        (20, 5, 9, 1),  # inside, one sample each side
        (20, 5, 9, 3),  # inside, means of three
        (20, 2, 6, 5),  # fewer than m samples on the left
        (20, 1, 4, 3),  # a single sample on the left
        (20, 12, 18, 4),  # fewer than m samples on the right
        (20, 1, 19, 2),  # one sample each side
        (20, 7, 20, 3),  # runs to the end: level of the left side
        (20, 1, 20, 3),  # runs to the end from the second sample
        (20, 2, 20, 4),  # runs to the end, fewer than m on the left
        (20, 0, 6, 3),  # starts at the first sample: level of the right side
        (20, 0, 19, 3),  # starts at the first sample, one sample on the right
        (20, 0, 20, 2),  # the whole row: zero
        (20, 6, 7, 2),  # a single blanked sample
    ],
)
def test_interpolation_matches_the_hand_computed_line_row_by_row(n, a, b, m):
    x = _rows(3, n, seed=n + 10 * a + b + m)
    want = _line_by_hand(x, a, b, m)
    got = x.copy()
    assert _interpolate(got, a, b, m) is None  # in place
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_interpolation_of_a_single_row_view_changes_only_that_row():
    x = _rows(3, 12, seed=4)
    want = x.copy()
    want[1:2] = _line_by_hand(x[1:2], 3, 7, 2)
    _interpolate(x[1:2], 3, 7, 2)
    np.testing.assert_allclose(x, want, rtol=1e-12)


def test_a_blank_at_the_end_is_held_at_the_level_before_it():
    x = np.array([[1.0, 3.0, 5.0, 0.0, 0.0], [-2.0, -4.0, -6.0, 9.0, 9.0]])
    _interpolate(x, 3, 5, m=2)
    assert x.tolist() == [[1.0, 3.0, 5.0, 4.0, 4.0], [-2.0, -4.0, -6.0, -5.0, -5.0]]


def test_a_blank_at_the_start_is_held_at_the_level_after_it():
    x = np.array([[9.0, 9.0, 2.0, 6.0, 100.0], [9.0, 9.0, -1.0, -3.0, 100.0]])
    _interpolate(x, 0, 2, m=2)
    assert x.tolist() == [[4.0, 4.0, 2.0, 6.0, 100.0], [-2.0, -2.0, -1.0, -3.0, 100.0]]


def test_blanking_the_whole_row_gives_zero():
    x = np.array([[5.0, 6.0, 7.0], [-1.0, -2.0, -3.0]])
    _interpolate(x, 0, 3, m=2)
    assert x.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


# ------------------------------------------------------------------ _median_rows


def test_median_rows_of_an_odd_count_is_the_middle_value_of_each_row():
    a = np.array([[5.0, 1.0, 9.0, 3.0, 7.0], [-1.0, -5.0, 0.0, 2.0, -3.0]])
    out = _median_rows(a)
    assert out.shape == (2,)
    assert out.tolist() == [5.0, -1.0]


def test_median_rows_of_an_even_count_is_the_mean_of_the_two_middle_values():
    a = np.array([[4.0, 1.0, 3.0, 2.0], [40.0, 10.0, 30.0, 20.0], [0.0, -8.0, 8.0, 1.0]])
    assert _median_rows(a).tolist() == [2.5, 25.0, 0.5]


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 2), (3, 2), (2, 3), (4, 6), (3, 7), (5, 40), (6, 9)])
def test_median_rows_matches_numpy_and_is_odd_in_the_signal(k, n):
    a = np.random.default_rng(k * 100 + n).normal(size=(k, n))
    assert np.array_equal(_median_rows(a), np.median(a, axis=1))
    assert np.array_equal(_median_rows(-a), -_median_rows(a))  # exactly: polarity does not matter


def test_median_rows_leaves_its_input_alone():
    a = np.array([[3.0, 1.0, 2.0]])
    _median_rows(a)
    assert a.tolist() == [[3.0, 1.0, 2.0]]


# ------------------------------------------------------------------ _checked_batch

_ST = [object(), object(), object()]  # _checked_batch only counts the stimuli
_CH = ["L", None, "R"]


def test_a_good_batch_comes_back_as_float_rows_with_rate_and_onset():
    samples = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]  # integers, as a list
    x, fs, pre = _checked_batch(samples, 20000, 2.0, _ST, _CH, None)
    assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == (3, 4)
    assert x.tolist() == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]
    assert type(fs) is float and fs == 20000.0
    assert type(pre) is int and pre == 2


def test_the_onset_may_be_the_first_or_the_last_sample():
    x = np.zeros((3, 5), dtype=np.float32)
    assert _checked_batch(x, 1000.0, 0, _ST, _CH, None)[2] == 0
    assert _checked_batch(x, 1000.0, 4, _ST, _CH, None)[2] == 4
    out = _checked_batch(x, 1000.0, 4, _ST, _CH, [[], [1], [2, 3]])[0]
    assert out.dtype == np.float64


def test_any_positive_finite_rate_is_accepted():
    x = np.zeros((3, 5))
    assert _checked_batch(x, 0.5, 1, _ST, _CH, None)[1] == 0.5
    assert _checked_batch(x, 1e-6, 1, _ST, _CH, None)[1] == 1e-6


@pytest.mark.parametrize("shape", [(12,), (3, 4, 1), ()])
def test_a_batch_that_is_not_2d_is_refused(shape):
    with pytest.raises(ValueError, match=re.escape(f"a batch of epochs is 2-D (epochs, samples), got shape {shape}")):
        _checked_batch(np.zeros(shape), 1000.0, 0, _ST, _CH, None)


@pytest.mark.parametrize(("stimuli", "channels"), [(_ST[:2], _CH), (_ST, _CH[:2]), (_ST + _ST[:1], _CH), ([], [])])
def test_one_stimulus_and_one_channel_per_epoch(stimuli, channels):
    with pytest.raises(ValueError, match=re.escape("3 epochs need 3 stimuli and 3 channels")):
        _checked_batch(np.zeros((3, 5)), 1000.0, 1, stimuli, channels, None)


@pytest.mark.parametrize("others", [[], [[1]], [[], [], [], []]])
def test_one_list_of_other_onsets_per_epoch(others):
    with pytest.raises(ValueError, match=re.escape("3 epochs need 3 lists of other onsets")):
        _checked_batch(np.zeros((3, 5)), 1000.0, 1, _ST, _CH, others)


@pytest.mark.parametrize("fs", [0.0, 0, -1000.0, float("nan"), float("inf"), float("-inf")])
def test_the_sample_rate_must_be_positive_and_finite(fs):
    with pytest.raises(ValueError, match=re.escape(f"sample rate must be a positive number of Hz, got {float(fs)!r}")):
        _checked_batch(np.zeros((3, 5)), fs, 1, _ST, _CH, None)


@pytest.mark.parametrize("pre", [5, 6, -1, -5])
def test_the_onset_must_lie_inside_the_epoch(pre):
    with pytest.raises(ValueError, match=re.escape(f"pre_samples {pre} must lie inside the epoch of 5 samples")):
        _checked_batch(np.zeros((3, 5)), 1000.0, pre, _ST, _CH, None)


# ------------------------------------------------------------------ _Batch


def _batch(k: int, n: int) -> _Batch:
    return _Batch(
        fs=1000.0,
        pre=2,
        bs=1,
        be=3,
        end=n,
        g=0,
        z=np.zeros((k, n)),
        extra=None,
        se=np.full(k, n, dtype=np.int64),
        end_ms=[10.0] * k,
        background=None,  # type: ignore[arg-type]  # not used by the set-up
    )


@pytest.mark.parametrize(("k", "n"), [(3, 10), (1, 4), (5, 2)])
def test_a_batch_starts_with_no_amplitude_and_no_peak_times_for_each_epoch(k, n):
    b = _batch(k, n)
    for arr in (b.amp, b.t_max, b.t_min):
        assert isinstance(arr, np.ndarray)
        assert arr.shape == (k,) and arr.dtype == np.float64
        assert np.isnan(arr).all()


def test_the_per_epoch_results_are_separate_arrays():
    b = _batch(3, 10)
    b.amp[0] = 1.0
    b.t_max[1] = 2.0
    assert np.isnan(b.t_min).all() and np.isnan(b.amp[1:]).all() and np.isnan(b.t_max[[0, 2]]).all()
