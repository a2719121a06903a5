"""Data-flow supervision (``FlowSupervisor``): what the settings promise and what arrives.

Property tests: steady flow with jitter never alarms, whatever the rate; a flow that
stops is named within its deadline and not before; start-up, rate changes and switching
off never alarm while the board does what it was told; partial losses are counted from
board time. Plus the wording and the stall figure the engine benchmark will print.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.flow import FlowSupervisor
from firmware_bridge.messages import Output

MARGIN = 0.08
WINDOW = 0.06
rates = st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0, 30.0])


def _epochs_findings(sup: FlowSupervisor, now: float, out: Output = Output.APS) -> list:
    return [f for f in sup.check(now) if f.output is out]


class Board:
    """Arrivals as a board following its commands delivers them: the first pulse when the
    command arrives (or at the old rhythm), one per period, each epoch ``WINDOW`` +
    ``latency`` after its pulse."""

    def __init__(self, sup: FlowSupervisor, out: Output = Output.APS) -> None:
        self.sup, self.out = sup, out
        self.next_pulse: float | None = None
        self.period: float | None = None
        self.pending: list[tuple[float, int]] = []

    def command(self, now: float, rate: float | None) -> None:
        self.sup.output(now, self.out, rate)
        if rate is None:
            self.period = self.next_pulse = None
            return
        period = 1.0 / rate
        self.next_pulse = now if self.next_pulse is None else min(self.next_pulse, now + period)
        self.period = period

    def run(self, t0: float, t1: float, step: float, latency, drop=lambda i: False, check=None) -> None:
        t = t0
        i = 0
        while t < t1:
            t = min(t + step, t1)
            while self.next_pulse is not None and self.next_pulse <= t:
                arrive = self.next_pulse + WINDOW + latency(i)
                if self.pending:  # a serial line delivers in order
                    arrive = max(arrive, self.pending[-1][0])
                if not drop(i):
                    self.pending.append((arrive, int(self.next_pulse * 1e6)))
                i += 1
                self.next_pulse += self.period
            while self.pending and self.pending[0][0] <= t:
                arrive, onset = self.pending.pop(0)
                self.sup.epoch(arrive, self.out, onset)
            if check is not None:
                check(t)


def _sup() -> FlowSupervisor:
    s = FlowSupervisor(margin_s=MARGIN)
    s.reset(0.0)
    s.acquisition(0.0, stream_rate_hz=None, block_samples=None, streaming=False, epoch_window_s=WINDOW)
    return s


@settings(max_examples=40, deadline=None)
@given(rate=rates, jitter=st.floats(0.0, 0.9), seed=st.integers(0, 2**16))
def test_steady_flow_with_jitter_never_alarms(rate, jitter, seed):
    import random

    rng = random.Random(seed)
    sup = _sup()
    board = Board(sup)
    board.command(0.0, rate)
    findings = []

    def check(t):
        sup.status(t)
        findings.extend(_epochs_findings(sup, t))

    # delivery jitter up to 90 % of the margin
    board.run(0.0, 8.0, 0.01, latency=lambda i: rng.uniform(0, jitter * MARGIN), check=check)
    assert findings == []


@settings(max_examples=60, deadline=None)
@given(rate=rates, stop_after=st.integers(3, 20))
def test_stopped_flow_is_named_exactly_at_two_periods_plus_margin(rate, stop_after):
    stop_after += int(rate) + 3  # in steady flow, after the start-up grace
    sup = _sup()
    board = Board(sup)
    board.command(0.0, rate)
    board.run(0.0, stop_after / rate + 1.0, 0.005, latency=lambda i: 0.0, drop=lambda i: i >= stop_after)
    last = sup._epochs[Output.APS].last  # host time of the last epoch
    deadline = last + 2.0 / rate + MARGIN
    assert _epochs_findings(sup, deadline - 1e-6) == []
    [f] = _epochs_findings(sup, deadline + 1e-9)
    assert f.key == "epochs:APS" and f.kind == "epochs"
    assert f.text.startswith("no stimulus responses from the vagal electrode for ")
    assert f.missing_s == pytest.approx(2.0 / rate + MARGIN)
    assert f"(expected {rate:g} per second)" in f.text or "(expected 1 every 2 s)" in f.text


@settings(max_examples=60, deadline=None)
@given(rates_=st.lists(st.one_of(st.none(), rates), min_size=2, max_size=6),
       times=st.lists(st.floats(0.05, 6.0), min_size=6, max_size=6), latency=st.floats(0.0, 0.04))
def test_start_up_rate_changes_and_switching_off_never_alarm(rates_, times, latency):
    sup = _sup()
    board = Board(sup)
    findings = []

    def check(t):
        sup.status(t)
        findings.extend(_epochs_findings(sup, t))

    t = 0.0
    for rate, dt in zip(rates_, times, strict=False):
        board.command(t, rate)
        board.run(t, t + dt, 0.01, latency=lambda i: latency, check=check)
        t += dt
    board.run(t, t + 5.0, 0.01, latency=lambda i: latency, check=check)
    assert findings == []


def test_switched_off_output_is_not_expected_and_a_late_epoch_is_harmless():
    sup = _sup()
    board = Board(sup)
    board.command(0.0, 1.0)
    board.run(0.0, 5.0, 0.01, latency=lambda i: 0.0)
    board.command(5.0, None)
    sup.epoch(5.03, Output.APS, 5_000_000)  # the last pulse's epoch, in flight
    sup.status(6.0)
    sup.status(7.0)
    assert sup.check(7.5) == []


def test_start_up_grace_is_one_period_and_margin_more():
    sup = _sup()
    sup.output(10.0, Output.APS, 1.0)
    sup.status(12.0)
    grace_end = 10.0 + WINDOW + 1.0 + MARGIN + 2.0 + MARGIN
    assert _epochs_findings(sup, grace_end - 1e-6) == []
    [f] = _epochs_findings(sup, grace_end + 1e-9)
    assert "for 3.2 s" in f.text and "(expected 1 per second)" in f.text


@settings(max_examples=60, deadline=None)
@given(drops=st.lists(st.booleans(), min_size=12, max_size=40))
def test_partial_losses_are_counted_from_board_time(drops):
    sup = _sup()
    board = Board(sup)
    board.command(0.0, 4.0)
    settle = 2  # pulses whose epochs arrive before the settings are settled (window + period + margin)
    pattern = [False] * settle + drops + [False]  # the last pulse arrives
    end = (len(pattern) - 1) / 4.0 + WINDOW + 0.01  # the last pattern pulse's epoch is in, no more
    board.run(0.0, end, 0.005, latency=lambda i: 0.0, drop=lambda i: i < len(pattern) and pattern[i])
    after = pattern[settle:]
    # model: from the first epoch after settling, the last 10 slots (received = 1)
    first = next(i for i, d in enumerate(after) if not d)
    slots: list[int] = []
    run = 0
    for d in after[first + 1 :]:
        if d:
            run += 1
            continue
        if run >= 2:  # an outage (two or more in a row) starts the count afresh
            slots = []
        else:
            slots += [0] * run
        slots.append(1)
        run = 0
    slots = slots[-10:]
    findings = [f for f in sup.check(end) if f.output is Output.APS]
    if slots.count(0) >= 3:
        assert [f.key for f in findings] == ["epoch_loss:APS"]
        assert f"{slots.count(0)} of the last {len(slots)} missing" in findings[0].text
    else:
        assert findings == []


def test_emg_stall_and_status_overdue():
    sup = FlowSupervisor(margin_s=MARGIN)
    sup.reset(0.0)
    sup.acquisition(0.0, stream_rate_hz=20000, block_samples=400, epoch_window_s=WINDOW)
    t = 0.0
    while t < 3.0:
        t = round(t + 0.02, 3)
        sup.emg(t)
        if t % 1.0 < 0.02:
            sup.status(t)
        assert sup.check(t) == []
    # the EMG stalls at 3.0: named 20 ms + 0.5 s later
    assert [f.key for f in sup.check(3.5199)] == []
    [f] = sup.check(3.52)
    assert f.key == "emg" and f.text == "no EMG from the board for 0.5 s (expected a block every 20 ms)"
    # status last at 3.0 (t % 1 test above): overdue 2 s later
    assert "status" in [f.key for f in sup.check(5.0)]
    assert [f.text for f in sup.check(5.0) if f.key == "status"] == [
        "no status from the board for 2.0 s (expected every 1 s)"]


def test_suspended_expects_nothing_and_reset_gives_grace():
    sup = _sup()
    sup.output(0.0, Output.PROBE, 4.0)
    sup.suspend(1.0)
    assert sup.check(100.0) == []
    sup.reset(100.0)
    assert sup.check(100.5) == []
    texts = [f.text for f in sup.check(103.0)]
    assert any(t.startswith("no stimulus responses from the probe for 3.0 s (expected 4 per second)") for t in texts)
    assert any(t.startswith("no status from the board") for t in texts)


def test_repeating_the_settings_does_not_extend_the_grace():
    sup = _sup()
    sup.output(0.0, Output.APS, 1.0)
    for t in range(1, 10):
        sup.output(float(t), Output.APS, 1.0)  # the engine says it again with every command
        sup.status(float(t))
    assert [f.key for f in sup.check(9.5)] == ["epochs:APS"]


def test_stall_alarm_at_1_hz_is_within_two_periods_plus_100_ms():
    """The figure ``bench/engine.py`` will print as ``stall_alarm_ms``."""
    sup = _sup()
    board = Board(sup)
    board.command(0.0, 1.0)
    board.run(0.0, 10.0, 0.01, latency=lambda i: 0.0, drop=lambda i: i >= 8)
    last = sup._epochs[Output.APS].last
    t = last
    while not _epochs_findings(sup, t):
        t = round(t + 0.001, 6)
    assert t - last <= 2 * 1.0 + 0.1


def test_nonsense_settings_are_refused_with_their_name():
    with pytest.raises(ValueError, match="margin_s"):
        FlowSupervisor(margin_s=0)
    with pytest.raises(ValueError, match="loss_limit"):
        FlowSupervisor(loss_limit=11, loss_window=10)
