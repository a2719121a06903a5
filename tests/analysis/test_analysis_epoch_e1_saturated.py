"""The saturation check of an epoch (``EpochAnalyzer._saturated``) on hand-made raw samples.

An epoch is saturated when a sample outside the artifact blanks reaches
``analysis.saturation_uV`` (100 000 µV), or when identical samples sit at a rail
(|level| >= ``analysis.rail_min_uV``, 2000 µV) for ``analysis.flatline_ms`` (0.5 ms).
The blank of the stimulus itself (``bs:be``) and those of other stimuli (``extra``)
are never judged. Exact boundaries are checked: a value at the limit, a flat run exactly
as long as required and one sample shorter.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings

FS = 10_000.0
BS, BE, END = 95, 115, 600  # blank start / end, epoch end (onset at sample 100)


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    return EpochAnalyzer(Settings())


def _quiet(k: int, end: int = END, seed: int = 1) -> np.ndarray:
    """Small, never-repeating background (no two neighbours equal)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 20.0, size=(k, end))


def _saturated(
    an: EpochAnalyzer, raw: np.ndarray, fs: float = FS, bs: int = BS, be: int = BE, extra: np.ndarray | None = None
) -> list[bool]:
    out = an._saturated(raw, fs, bs, be, raw.shape[1], extra)
    assert out.dtype == bool and out.shape == (raw.shape[0],)
    return out.tolist()


# ------------------------------------------------------------------ out of range


def test_a_sample_exactly_at_the_saturation_level_saturates_only_its_own_epoch(analyzer):
    raw = _quiet(2)
    raw[0, 300] = 100_000.0  # exactly analysis.saturation_uV, after the blank
    assert _saturated(analyzer, raw) == [True, False]


def test_a_sample_just_below_the_saturation_level_is_not_saturation(analyzer):
    raw = _quiet(1)
    raw[0, 300] = 99_999.0
    assert _saturated(analyzer, raw) == [False]


def test_the_pre_stimulus_part_is_judged_too_per_epoch(analyzer):
    raw = _quiet(2)
    raw[0, 10] = -100_000.0  # before the blank
    assert _saturated(analyzer, raw) == [True, False]


def test_the_very_first_sample_counts_when_the_blank_starts_at_sample_one(analyzer):
    raw = _quiet(1)
    raw[0, 0] = 150_000.0
    assert _saturated(analyzer, raw, bs=1, be=20) == [True]


def test_without_a_pre_stimulus_part_only_the_blank_is_left_out(analyzer):
    raw = _quiet(2)
    raw[0, 5] = 150_000.0  # inside the blank that starts at the first sample
    raw[1, 50] = 150_000.0  # after it
    assert _saturated(analyzer, raw, bs=0, be=20) == [False, True]


def test_the_stimulus_blank_is_never_judged(analyzer):
    raw = _quiet(1)
    raw[0, BS:BE] = 500_000.0  # the stimulus artifact itself
    assert _saturated(analyzer, raw) == [False]


def test_other_stimuli_blanks_are_left_out_but_the_rest_is_judged(analyzer):
    raw = _quiet(4)
    extra = np.zeros((4, END), dtype=bool)
    extra[:, 300:320] = True  # another stimulus fell here in every epoch
    raw[0, 100] = 200_000.0  # in the epoch's own blank
    raw[1, 310] = 200_000.0  # in the other stimulus's blank
    raw[2, 400] = 100_000.0  # outside both: out of range
    # row 3: quiet
    assert _saturated(analyzer, raw, extra=extra) == [False, False, True, False]


def test_with_other_stimuli_the_pre_stimulus_part_is_judged_per_epoch(analyzer):
    raw = _quiet(2)
    extra = np.zeros((2, END), dtype=bool)
    extra[1, 300:320] = True
    raw[1, 10] = -120_000.0
    assert _saturated(analyzer, raw, extra=extra) == [False, True]


def test_an_epoch_blanked_everywhere_has_nothing_to_judge(analyzer):
    raw = np.full((1, 200), 5000.0)  # flat at a rail, but all of it blanked
    extra = np.ones((1, 200), dtype=bool)
    extra[0, 20:30] = False  # the epoch's own blank
    assert _saturated(analyzer, raw, bs=20, be=30, extra=extra) == [False]


# ------------------------------------------------------------------ flat at a rail


@pytest.mark.parametrize(
    "fs, flat_n",
    [
        (2_000.0, 2),  # 0.5 ms is one sample: at least two identical samples are needed
        (10_000.0, 5),  # 0.5 ms = 5 samples
        (11_002.0, 6),  # 5.501 samples rounds to 6
    ],
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_flat_run_at_a_rail_saturates_from_exactly_the_flatline_length(analyzer, fs, flat_n, sign):
    raw = np.zeros((2, 200))
    raw[:, 1::2] = 7.0  # a background whose neighbours always differ
    raw[0, 100 : 100 + flat_n] = sign * 3000.0
    raw[1, 100 : 100 + flat_n - 1] = sign * 3000.0  # one sample short
    assert _saturated(analyzer, raw, fs=fs, bs=20, be=30) == [True, False]


def test_a_flat_run_exactly_at_the_rail_level_saturates(analyzer):
    raw = np.zeros((2, 200))
    raw[:, 1::2] = 7.0
    raw[0, 100:110] = -2000.0  # exactly analysis.rail_min_uV
    raw[1, 100:110] = -1999.0  # just below it
    assert _saturated(analyzer, raw, bs=20, be=30) == [True, False]


def test_a_lone_spike_above_the_rail_on_a_flat_zero_line_is_not_saturation(analyzer):
    raw = np.zeros((1, 200))  # identical samples, but at zero: no rail
    raw[0, 100] = 3000.0
    assert _saturated(analyzer, raw, bs=20, be=30) == [False]


def test_a_flat_run_that_is_not_at_the_extreme_is_not_saturation(analyzer):
    raw = np.zeros((1, 200))
    raw[0, 1::2] = 7.0
    raw[0, 60] = 3500.0  # the maximum: a single sample
    raw[0, 100:130] = 2500.0  # flat, above the rail, but not at the epoch's extreme
    assert _saturated(analyzer, raw, bs=20, be=30) == [False]


def test_a_flat_run_inside_the_stimulus_blank_is_not_saturation(analyzer):
    raw = np.zeros((1, 200))
    raw[0, 1::2] = 7.0
    raw[0, 60] = 2500.0  # above the rail outside the blank (a lone sample)
    raw[0, 20:35] = 3000.0  # flat at a rail, but inside the blank
    assert _saturated(analyzer, raw, bs=20, be=35) == [False]


def test_with_other_stimuli_flat_runs_count_only_outside_every_blank(analyzer):
    raw = np.zeros((3, 200))
    raw[:, 1::2] = 7.0
    raw[:2, 60] = 2500.0  # above the rail outside the blanks (a lone sample)
    extra = np.zeros((3, 200), dtype=bool)
    extra[:, 100:130] = True  # another stimulus's blank
    raw[0, 105:120] = 3000.0  # flat inside the other blank
    raw[1, 20:35] = 3000.0  # flat inside the epoch's own blank
    raw[2, 150:165] = 3000.0  # flat outside both
    assert _saturated(analyzer, raw, bs=20, be=35, extra=extra) == [False, False, True]


def test_in_a_batch_each_epoch_gets_its_own_flatline_verdict(analyzer):
    raw = np.zeros((3, 200))
    raw[:, 1::2] = 7.0
    raw[0, 100:110] = 3000.0  # flat at a rail
    raw[1, 100] = 300_000.0  # out of range
    raw[2, 100] = 3000.0  # a lone sample above the rail
    assert _saturated(analyzer, raw, bs=20, be=30) == [True, True, False]
