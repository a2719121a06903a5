"""Epoch validity: a short flat stretch at a rail level is not saturation, wherever it lies."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer, _longest_true_run
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, make_epoch

FS = 20000.0  # analysis.flatline_ms 0.5 ms: 10 identical samples at a rail mark saturation


def _stim() -> Stimulus:
    return Stimulus(0, 10.0, Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)


def _quiet_epoch() -> tuple[np.ndarray, int]:
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=None, noise_uV=5.0))
    return x, pre


@pytest.mark.parametrize("run", [2, 3, 9])
@pytest.mark.parametrize("where", [300, 900])
def test_a_flat_run_at_a_rail_level_shorter_than_the_flatline_time_is_not_saturation(run, where):
    x, pre = _quiet_epoch()
    assert pre + where + run < len(x)
    x[pre + where: pre + where + run] = 6500.0  # at a rail level, but only run/20 ms long
    m = EpochAnalyzer(Settings()).measure(x, FS, pre, _stim(), "EMG L")
    assert m.invalid_reason is not InvalidReason.SATURATED, m


def test_the_same_run_long_enough_is_saturation():
    x, pre = _quiet_epoch()
    x[pre + 900: pre + 910] = 6500.0
    m = EpochAnalyzer(Settings()).measure(x, FS, pre, _stim(), "EMG L")
    assert m.invalid_reason is InvalidReason.SATURATED


@pytest.mark.parametrize(
    ("mask", "longest"),
    [
        ([], 0),
        ([False, False, False], 0),
        ([True], 1),
        ([False, True, False], 1),
        ([False, False, False, False, True, True, False], 2),
        ([True, True, False, True, True, True, False, True], 3),
        ([False] * 50 + [True] * 4 + [False] * 3 + [True] * 2, 4),
    ],
)
def test_longest_run_of_true(mask, longest):
    assert _longest_true_run(np.array(mask, dtype=bool)) == longest
