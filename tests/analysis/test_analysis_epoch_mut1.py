"""The small pure helpers of the epoch measurement: mask dilation and parabolic peak refinement."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import _dilate, _parabola


def _dilate_by_hand(mask: np.ndarray, h: int) -> np.ndarray:
    n = mask.shape[1]
    return np.array([[row[max(0, j - h) : j + h + 1].any() for j in range(n)] for row in mask], dtype=bool)


# ------------------------------------------------------------------ _dilate


def test_dilate_marks_h_samples_either_side_of_a_lone_true_sample():
    mask = np.zeros((1, 11), dtype=bool)
    mask[0, 5] = True
    out = _dilate(mask, 2)
    assert out.dtype == bool
    assert out[0].tolist() == [False] * 3 + [True] * 5 + [False] * 3


def test_dilate_by_zero_is_the_mask_itself_including_its_first_and_last_samples():
    mask = np.array([[True, False, False, False, True], [False, False, True, False, False]])
    assert _dilate(mask, 0).tolist() == mask.tolist()


def test_dilate_clips_at_both_ends_of_the_row():
    mask = np.array([[True, False, False, False, False, False, False, True]])
    assert _dilate(mask, 2)[0].tolist() == [True, True, True, False, False, True, True, True]


def test_dilate_leaves_rows_without_a_true_sample_false():
    mask = np.zeros((2, 6), dtype=bool)
    mask[1, 0] = True
    out = _dilate(mask, 1)
    assert out[0].tolist() == [False] * 6
    assert out[1].tolist() == [True, True, False, False, False, False]


@pytest.mark.parametrize("h", [0, 1, 2, 5])
def test_dilate_agrees_with_a_per_sample_window_search(h):
    rng = np.random.default_rng(7)
    mask = rng.random((40, 30)) < 0.08
    assert _dilate(mask, h).tolist() == _dilate_by_hand(mask, h).tolist()


# ------------------------------------------------------------------ _parabola


@pytest.mark.parametrize(
    ("n", "i", "vertex", "curv", "top"),
    [
        (3, 1, 1.25, -2.0, 7.0),  # a maximum in a three-sample array
        (5, 2, 1.75, -1.0, -3.0),  # a maximum left of the sample
        (5, 2, 2.5, 0.5, 4.0),  # a minimum half a sample right (second difference exactly 1)
        (4, 2, 2.0, -3.0, 1.0),  # vertex on the sample itself
    ],
)
def test_parabola_finds_the_exact_vertex_of_sampled_parabola(n, i, vertex, curv, top):
    x = np.arange(n, dtype=np.float64)
    y = top + curv * (x - vertex) ** 2
    off, value = _parabola(y, i)
    assert off == pytest.approx(vertex - i, abs=1e-12)
    assert value == pytest.approx(top, abs=1e-12)


@pytest.mark.parametrize("vertex", [-1.5, -1.0, 1.0, 1.5])
def test_parabola_keeps_the_sample_when_the_vertex_is_a_sample_or_more_away(vertex):
    x = np.array([-1.0, 0.0, 1.0])
    y = (x - vertex) ** 2  # exact in binary: d = 2, offset = vertex
    assert _parabola(y, 1) == (0.0, float(y[1]))


def test_parabola_keeps_the_sample_on_a_flat_stretch():
    assert _parabola(np.array([2.0, 2.0, 2.0, 2.0]), 1) == (0.0, 2.0)


@pytest.mark.parametrize("i", [0, 3])
def test_parabola_keeps_the_first_and_last_sample_unrefined(i):
    y = np.array([3.0, 1.0, 0.0, 2.0])  # wrapped around, the first sample would look like a peak
    assert _parabola(y, i) == (0.0, float(y[i]))


def test_parabola_returns_plain_floats():
    off, value = _parabola(np.array([1.0, 4.0, 2.0]), 1)
    assert type(off) is float and type(value) is float
    off, value = _parabola(np.array([1.0, 4.0, 2.0]), 0)
    assert type(off) is float and type(value) is float
