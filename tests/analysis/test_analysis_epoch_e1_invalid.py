"""The validity reasons decided before anything is measured (``EpochAnalyzer._invalid``):
the first that applies, in the order no channel, no current, cautery, saturated,
non-finite samples, epoch too short, with the detail text the display shows beside it."""

from __future__ import annotations

import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    return EpochAnalyzer(Settings())  # stim.delivered_tolerance_pct = 5


def _stim(set_mA: float = 2.0, delivered_mA: float | None = None) -> Stimulus:
    return Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.PROBE, set_mA, delivered_mA)


def _invalid(an, stim=None, channel="EMG L", cautery=False, saturated=False, finite=True, too_short=False):
    return an._invalid(stim if stim is not None else _stim(), channel, cautery, saturated, finite, too_short)


def test_a_clean_epoch_has_no_reason_and_no_detail(analyzer):
    assert _invalid(analyzer) == (None, "")


def test_no_channel_comes_first(analyzer):
    got = _invalid(analyzer, _stim(2.0, 0.0), None, cautery=True, saturated=True, finite=False, too_short=True)
    assert got == (InvalidReason.NO_CHANNEL, "no EMG channel for side L")


@pytest.mark.parametrize(
    "set_mA, delivered_mA, no_current",
    [
        (2.0, None, False),  # not measured: never "no current"
        (2.0, 2.0, False),
        (2.0, 1.9, False),  # exactly set x (1 - 5 %)
        (2.0, 1.8999, True),
        (2.0, 1.0, True),
        (10.0, 9.5, False),
        (10.0, 9.49, True),
        (1.0, 0.5, True),
    ],
)
def test_no_current_below_the_set_current_minus_the_tolerance(analyzer, set_mA, delivered_mA, no_current):
    reason, detail = _invalid(analyzer, _stim(set_mA, delivered_mA))
    if no_current:
        assert reason is InvalidReason.NO_CURRENT
        assert detail == f"delivered {delivered_mA:g} mA of {set_mA:g} mA set"
    else:
        assert (reason, detail) == (None, "")


def test_no_current_comes_before_cautery(analyzer):
    reason, detail = _invalid(analyzer, _stim(2.0, 1.0), cautery=True, saturated=True, finite=False)
    assert (reason, detail) == (InvalidReason.NO_CURRENT, "delivered 1 mA of 2 mA set")


def test_cautery_comes_before_saturation(analyzer):
    got = _invalid(analyzer, cautery=True, saturated=True, finite=False, too_short=True)
    assert got == (InvalidReason.CAUTERY, "broadband burst (electrocautery)")


def test_saturation_comes_before_non_finite_samples(analyzer):
    got = _invalid(analyzer, saturated=True, finite=False, too_short=True)
    assert got == (InvalidReason.SATURATED, "signal at or beyond the amplifier range")


def test_non_finite_samples_are_an_artifact(analyzer):
    got = _invalid(analyzer, finite=False, too_short=True)
    assert got == (InvalidReason.ARTIFACT, "non-finite samples")


def test_an_epoch_too_short_for_the_window_is_an_artifact(analyzer):
    got = _invalid(analyzer, too_short=True)
    assert got == (InvalidReason.ARTIFACT, "epoch too short for the response window")
