"""Epoch measurement: the display waveform, board epochs and other stimuli inside an epoch.

Board epochs must be measured exactly as their samples in µV are (same result, same noise,
same window shown beside it), whether the channel is there or not; the display waveform is
defined sample for sample (non-finite samples count as 0, baseline exactly 0, rows alike).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, stim_artifact
from firmware_bridge.messages import Output, StimEpoch

FS = 20000


def stim(side: Side = Side.L, site: Site = Site.RLN) -> Stimulus:
    return Stimulus(0, 10.0, site, side, Source.PROBE, 1.0, 1.0)


def board_epoch(counts: np.ndarray, pre: int, fs: int = FS, nv_per_count: int = 50) -> StimEpoch:
    return StimEpoch(1_000_000, 7, Output.PROBE, 1000, 990, 100, fs, pre, nv_per_count, counts)


@pytest.fixture(scope="module")
def train_epoch() -> tuple[np.ndarray, int, int]:
    """(µV, pre_samples, onset of the next stimulus): a fast probe train, the next pulse's
    artifact at 33.3 ms in the epoch."""
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=ResponseSpec(600.0, 4.0), noise_uV=5.0))
    t_ms = (np.arange(len(x)) - pre) * 1000.0 / FS
    nxt = pre + int(33.3 * FS / 1000.0)
    return x + stim_artifact(t_ms - (nxt - pre) * 1000.0 / FS, 20000.0), pre, nxt


# ---------------------------------------------------------------------- board epochs


def test_a_board_epoch_is_measured_as_its_microvolts(train_epoch):
    x, pre, _ = train_epoch
    counts = np.round(x * 1000 / 37).astype(np.int32)  # 37 nV per count
    ep = board_epoch(counts, pre, nv_per_count=37)
    got = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(), ["EMG L"])
    want = EpochAnalyzer(Settings()).analyse(counts * 0.037, FS, pre, stim(), "EMG L")
    assert got.measurement.valid and got.measurement.response
    assert got.measurement.amplitude_uV == pytest.approx(want.measurement.amplitude_uV, rel=1e-12)
    assert got.noise_uV == pytest.approx(want.noise_uV, rel=1e-9)


def test_other_stimuli_reach_the_board_epoch_measurement(train_epoch):
    x, pre, nxt = train_epoch
    ep = board_epoch(np.round(x * 1000 / 50).astype(np.int32), pre)
    uv = ep.microvolts()
    want = EpochAnalyzer(Settings()).analyse(uv, FS, pre, stim(), "EMG L", other_onsets=[nxt])
    got = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(), ["EMG L"], [nxt])
    assert got == want
    assert EpochAnalyzer(Settings()).measure_board_epoch(ep, stim(), ["EMG L"], [nxt]) == want.measurement
    # the next stimulus's artifact and response are no noise: told, the noise is the background's
    assert want.noise_uV is not None and want.noise_uV < 4.0
    untold = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(), ["EMG L"])
    assert untold.noise_uV is not None and untold.noise_uV > 2 * want.noise_uV
    # two rows: the labels pick the row, the onsets go with it
    two = board_epoch(np.vstack([np.zeros_like(ep.samples), ep.samples]), pre)
    assert EpochAnalyzer(Settings()).analyse_board_epoch(two, stim(Side.R), None, [np.int64(nxt)]) == \
        EpochAnalyzer(Settings()).analyse(uv, FS, pre, stim(Side.R), "EMG R", other_onsets=[nxt])


def test_a_batch_is_measured_with_its_other_stimuli(train_epoch):
    x, pre, nxt = train_epoch
    rows = np.vstack([x, x[::-1].copy()])
    stimuli, channels = [stim(), stim(Side.R)], ["EMG L", "EMG R"]
    onsets = [[nxt], []]
    want = EpochAnalyzer(Settings()).analyse_batch(rows, FS, pre, stimuli, channels, other_onsets=onsets)
    got = EpochAnalyzer(Settings()).measure_batch(rows, FS, pre, stimuli, channels, other_onsets=onsets)
    assert got == [a.measurement for a in want]
    assert got != EpochAnalyzer(Settings()).measure_batch(rows, FS, pre, stimuli, channels)


@pytest.mark.parametrize("n, pre", [(1200, 200), (1200, 1199), (2, 1), (3, 2)])
def test_a_missing_channel_shows_the_window_the_epoch_has(n, pre):
    ep = board_epoch(np.zeros((1, n), dtype=np.int32), pre)
    missing = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(Side.L), ["EMG R"])
    there = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(Side.R), ["EMG R"])
    assert missing.measurement.invalid_reason is InvalidReason.NO_CHANNEL
    assert missing.measurement.channel is None and missing.measurement.amplitude_uV is None
    assert missing.window_ms == there.window_ms


def test_a_missing_channel_is_no_channel_whatever_the_epoch_holds():
    # the onset index past the samples: the epoch cannot be measured, but it is not this side's anyway
    ep = board_epoch(np.zeros((1, 50), dtype=np.int32), 50)
    a = EpochAnalyzer(Settings()).analyse_board_epoch(ep, stim(Side.L), ["EMG R"])
    assert a.measurement.invalid_reason is InvalidReason.NO_CHANNEL


def test_more_labels_than_rows_never_reads_a_missing_row(train_epoch):
    x, pre, _ = train_epoch
    ep = board_epoch(np.round(x * 20).astype(np.int32)[None, :], pre)
    m = EpochAnalyzer(Settings()).measure_board_epoch(ep, stim(Side.L), ["EMG R", "EMG L"])
    assert m.invalid_reason is InvalidReason.NO_CHANNEL and m.channel is None
    m = EpochAnalyzer(Settings()).measure_board_epoch(ep, stim(Side.R), ["EMG R", "EMG L"])
    assert m.channel == "EMG R" and m.valid


def test_a_one_row_board_epoch_given_flat(train_epoch):
    x, pre, _ = train_epoch
    counts = np.round(x * 20).astype(np.int32)
    flat = EpochAnalyzer(Settings()).measure_board_epoch(board_epoch(counts, pre), stim(Side.L), ["EMG L"])
    rows = EpochAnalyzer(Settings()).measure_board_epoch(board_epoch(counts[None, :], pre), stim(Side.L), ["EMG L"])
    assert flat == rows and flat.valid and flat.channel == "EMG L"


# ---------------------------------------------------------------------- display waveform


def _display_case(fs: float = 20000.0) -> tuple[np.ndarray, int]:
    x, pre, _ = make_epoch(EpochSpec(fs=fs, response=ResponseSpec(800.0, 7.0), noise_uV=5.0, wander_uV=400.0,
                                     seed=4))
    return x, pre


def test_non_finite_samples_are_shown_as_zero():
    x, pre = _display_case()
    bad, zero = x.copy(), x.copy()
    for i, v in ((40, np.nan), (pre + 300, np.inf), (pre + 500, -np.inf), (pre + 700, np.nan)):
        bad[i] = v
        zero[i] = 0.0
    a = EpochAnalyzer(Settings())
    y = a.filtered(bad, 20000.0, pre)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, a.filtered(zero, 20000.0, pre), rtol=0, atol=1e-9)


@pytest.mark.parametrize("fs", [20000.0, 21010.0])  # 21010 Hz: 0.5 ms is 10.505 samples
def test_the_display_baseline_is_exactly_zero(fs):
    x, pre = _display_case(fs)
    y = EpochAnalyzer(Settings()).filtered(x, fs, pre)
    edge = int(round(0.5 * fs / 1000.0))  # the filter's edge is left out of the baseline
    start = pre - int(round(0.1 * fs / 1000.0))  # the artifact blank starts 0.1 ms before the onset
    assert abs(float(np.mean(y[edge:start]))) < 1e-9
    assert abs(float(np.mean(y[edge - 1 : start]))) > 1e-6  # exactly that stretch


def test_an_epoch_without_a_pre_stimulus_part_is_shown_too():
    x, pre = _display_case()
    y = EpochAnalyzer(Settings()).filtered(x[pre:], 20000.0, 0)
    assert y.shape == (1000,) and np.isfinite(y).all()


def test_rows_are_shown_each_as_on_its_own():
    x, pre = _display_case()
    other, _, _ = make_epoch(EpochSpec(fs=20000.0, response=ResponseSpec(300.0, 5.0), noise_uV=8.0, wander_uV=-300.0,
                                    seed=5))
    a = EpochAnalyzer(Settings())
    y = a.filtered(np.vstack([x, other]), 20000.0, pre)
    assert y.shape == (2, pre + 1000)
    np.testing.assert_allclose(y[0], a.filtered(x, 20000.0, pre), rtol=0, atol=1e-9)
    np.testing.assert_allclose(y[1], a.filtered(other, 20000.0, pre), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------- noise reference


def _stretches(extra_row: np.ndarray | None, se: int, g: int = 10, bs: int = 198, end: int = 1200, guard: int = 20):
    b = SimpleNamespace(extra=None if extra_row is None else extra_row[None, :], g=g, bs=bs, end=end)
    return EpochAnalyzer._noise_stretches(b, 0, se, guard)  # type: ignore[arg-type]


def test_the_noise_reference_stops_at_the_other_stimuli():
    """Before the stimulus: after the last earlier stimulus's blank (and the guard), up to the
    guard before this one's blank; after the window: up to the next stimulus's blank."""
    extra = np.zeros(1200, dtype=bool)
    extra[50:81] = True  # an earlier stimulus's blank
    extra[900:931] = True  # the next one's
    assert _stretches(extra, 500) == ((101, 178), (500, 900))
    only_before = extra.copy()
    only_before[900:] = False
    assert _stretches(only_before, 500) == ((101, 178), (500, 1200))
    only_after = extra.copy()
    only_after[:100] = False
    assert _stretches(only_after, 500) == ((10, 178), (500, 900))
    late = np.zeros(1200, dtype=bool)
    late[150:171] = True  # an earlier blank close to this stimulus: nothing left before it
    assert _stretches(late, 500) == ((178, 178), (500, 1200))
    single = np.zeros(1200, dtype=bool)
    single[60] = True
    single[1100] = True
    assert _stretches(single, 300) == ((81, 178), (300, 1100))
