"""Data-flow supervision to the millisecond (``firmware_bridge.flow``).

The property tests in ``test_flow.py`` show that steady flow never alarms and a stop is
named in time; these pin each deadline exactly (not a millisecond early, not one late),
the words and figures of each finding, the loss count, the snapshot and the refused
settings.
"""

from __future__ import annotations

import pytest

from firmware_bridge.flow import FlowFinding, FlowSupervisor
from firmware_bridge.messages import Output

EPS = 1e-6
LATE = 1e-9  # past a deadline computed in floating point


def keyed(sup: FlowSupervisor, now: float) -> dict[str, FlowFinding]:
    return {f.key: f for f in sup.check(now)}


def test_status_is_missing_one_period_and_its_lateness_after_the_last_one():
    sup = FlowSupervisor()
    sup.reset(0.0)
    # start-up: one period + lateness + margin (2.08 s) before it is judged
    assert "status" not in keyed(sup, 2.08 - EPS)
    f = keyed(sup, 2.08 + LATE)["status"]
    assert (f.kind, f.expected, f.output) == ("status", "every 1 s", None)
    assert f.text == "no status from the board for 2.1 s (expected every 1 s)"
    assert f.missing_s == pytest.approx(2.08)
    sup.status(3.0)
    assert "status" not in keyed(sup, 5.0 - EPS)
    assert keyed(sup, 5.0 + LATE)["status"].missing_s == pytest.approx(2.0)
    quick = FlowSupervisor(status_period_s=0.25, status_late_s=0.5)
    quick.reset(0.0)
    assert keyed(quick, 0.83 + LATE)["status"].expected == "every 250 ms"
    assert "status" not in keyed(quick, 0.83 - EPS)


def test_emg_is_missing_one_block_and_the_stall_time_after_the_last_block():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.acquisition(0.0, stream_rate_hz=1000.0, block_samples=100)
    # grace: block (0.1) + margin (0.08) + block + stall (0.6)
    assert "emg" not in keyed(sup, 0.78 - EPS)
    f = keyed(sup, 0.78 + LATE)["emg"]
    assert (f.kind, f.text, f.expected) == ("emg", "no EMG from the board for 0.8 s (expected a block every 100 ms)",
                                            "a block every 100 ms")
    sup.emg(1.0)
    assert "emg" not in keyed(sup, 1.6 - EPS)
    assert keyed(sup, 1.6 + LATE)["emg"].missing_s == pytest.approx(0.6)
    sup.acquisition(1.2, stream_rate_hz=1000.0, block_samples=100)  # the same settings: nothing starts over
    assert "emg" in keyed(sup, 1.6)
    sup.acquisition(1.3, stream_rate_hz=500.0, block_samples=750)  # 1.5 s blocks: a new grace from 1.3
    assert "emg" not in keyed(sup, 1.3 + 1.5 + 0.08 + 2.0 - EPS)
    assert keyed(sup, 1.3 + 1.5 + 0.08 + 2.0 + LATE)["emg"].expected == "a block every 1.5 s"


@pytest.mark.parametrize("settings", [
    dict(stream_rate_hz=1000.0, block_samples=100, streaming=False),
    dict(stream_rate_hz=None, block_samples=100),
    dict(stream_rate_hz=1000.0, block_samples=None),
    dict(stream_rate_hz=0.0, block_samples=100),
    dict(stream_rate_hz=1000.0, block_samples=0),
])
def test_no_emg_is_expected_without_a_free_running_stream(settings):
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.acquisition(0.0, **settings)
    assert "emg" not in keyed(sup, 100.0)
    assert sup.snapshot(100.0)["emg_block_s"] is None


def test_stimulus_epochs_are_missing_after_two_periods_and_the_margin():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 2.0)
    # grace: window (0.06) + period (0.5) + margin (0.08), then 2 periods + margin (1.08)
    assert "epochs:APS" not in keyed(sup, 1.72 - EPS)
    f = keyed(sup, 1.72 + LATE)["epochs:APS"]
    assert (f.kind, f.output, f.expected) == ("epochs", Output.APS, "2 per second")
    assert f.text == "no stimulus responses from the vagal electrode for 1.7 s (expected 2 per second)"
    assert f.missing_s == pytest.approx(1.72)
    sup.epoch(2.0, Output.APS)
    assert "epochs:APS" not in keyed(sup, 3.08 - EPS)
    assert keyed(sup, 3.08 + LATE)["epochs:APS"].missing_s == pytest.approx(1.08)
    sup.output(3.5, Output.APS, 2.0)  # the same rate again: nothing starts over
    assert "epochs:APS" in keyed(sup, 3.5)
    sup.output(3.6, Output.APS, 0)  # switched off: no longer expected, at once
    assert "epochs:APS" not in keyed(sup, 3.6)
    sup.output(4.0, Output.PROBE, 0.5)
    f = keyed(sup, 4.0 + 0.06 + 2.0 + 0.08 + 4.08 + LATE)["epochs:PROBE"]
    assert f.text == "no stimulus responses from the probe for 6.2 s (expected 1 every 2 s)"
    assert "epochs:PROBE" not in keyed(sup, 4.0 + 0.06 + 2.0 + 0.08 + 4.08 - EPS)


def test_a_slower_old_rate_delays_judging_a_new_one():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 0.5)
    sup.output(10.0, Output.APS, 4.0)
    # epochs of the old rate (2 s apart) may still come: the settled time uses the slower one
    sup.epoch(10.0 + 0.06 + 2.0 + 0.08 - 0.01, Output.APS, board_time_us=0)
    sup.epoch(10.0 + 0.06 + 2.0 + 0.08 + 0.5, Output.APS, board_time_us=2_000_000)
    assert sup.snapshot(12.7)["outputs"]["APS"]["epochs_lost"] == 0  # the first was not counted from


def test_epochs_lost_one_at_a_time_are_counted_from_board_time():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 2.0)  # settled at 0.64
    sup.epoch(0.5, Output.APS, board_time_us=0)  # before settling: not a reference
    sup.epoch(1.0, Output.APS, board_time_us=500_000)
    for i, bt in enumerate((1_500_000, 2_500_000)):  # one missing before each
        sup.epoch(1.5 + i, Output.APS, board_time_us=bt)
        assert "epoch_loss:APS" not in keyed(sup, 1.5 + i)
    sup.epoch(3.5, Output.APS, board_time_us=3_500_000)
    f = keyed(sup, 3.5)["epoch_loss:APS"]
    assert (f.kind, f.output, f.missing_s, f.expected) == ("epoch_loss", Output.APS, 0.0, "2 per second")
    assert f.text == ("stimulus responses from the vagal electrode are being lost: 3 of the last 6 missing "
                      "(expected 2 per second)")
    snap = sup.snapshot(3.5)["outputs"]["APS"]
    assert (snap["epochs"], snap["epochs_lost"], snap["rate_hz"], snap["since_last_s"]) == (5, 3, 2.0, 0.0)
    # an outage (two or more in a row) is named by the time rule and starts the count afresh
    sup.epoch(5.0, Output.APS, board_time_us=5_000_000)
    assert "epoch_loss:APS" not in keyed(sup, 5.0)
    assert sup.snapshot(5.0)["outputs"]["APS"]["epochs_lost"] == 5
    sup.epoch(5.5, Output.APS)  # no board time: counted as arrived, not for losses
    assert sup.snapshot(5.5)["outputs"]["APS"]["epochs"] == 7


def test_a_loss_limit_is_reached_within_its_window_only():
    sup = FlowSupervisor(loss_window=4, loss_limit=2)
    sup.reset(0.0)
    sup.output(0.0, Output.PROBE, 1.0)  # settled at 1.14
    sup.epoch(2.0, Output.PROBE, board_time_us=0)
    sup.epoch(4.0, Output.PROBE, board_time_us=2_000_000)  # one lost: [0, 1]
    sup.epoch(5.0, Output.PROBE, board_time_us=3_000_000)  # [0, 1, 1]
    sup.epoch(6.0, Output.PROBE, board_time_us=4_000_000)  # [0, 1, 1, 1]
    sup.epoch(8.0, Output.PROBE, board_time_us=6_000_000)  # [1, 1, 0, 1]: the first loss fell out
    assert "epoch_loss:PROBE" not in keyed(sup, 8.0)
    sup.epoch(10.0, Output.PROBE, board_time_us=8_000_000)  # [0, 1, 0, 1]
    assert keyed(sup, 10.0)["epoch_loss:PROBE"].text.endswith("2 of the last 4 missing (expected 1 per second)")


def test_nothing_is_expected_while_the_link_is_down():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 2.0)
    sup.acquisition(0.0, stream_rate_hz=1000.0, block_samples=100)
    assert set(keyed(sup, 10.0)) == {"status", "emg", "epochs:APS"}
    sup.suspend(10.0)
    assert sup.check(20.0) == [] and sup.snapshot(20.0)["active"] is False
    sup.reset(20.0)  # every stream starts over with its grace
    assert keyed(sup, 20.0) == {}
    assert set(keyed(sup, 30.0)) == {"status", "emg", "epochs:APS"}
    assert FlowSupervisor().check(100.0) == []  # never reset: not active


def test_the_snapshot_and_a_finding_as_json():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 2.0)
    sup.acquisition(0.0, stream_rate_hz=1000.0, block_samples=100)
    sup.epoch(1.0, Output.APS)
    sup.emg(1.25)
    sup.status(1.5)
    snap = sup.snapshot(1.7501)
    assert snap == {
        "active": True,
        "outputs": {"PROBE": {"rate_hz": None, "epochs": 0, "epochs_lost": 0, "since_last_s": None},
                    "APS": {"rate_hz": 2.0, "epochs": 1, "epochs_lost": 0, "since_last_s": 0.75}},
        "emg_block_s": 0.1,
        "emg_since_last_s": 0.5,
        "status_since_last_s": 0.25,
        "findings": [],
    }
    snap = sup.snapshot(3.0)
    assert [f["key"] for f in snap["findings"]] == ["epochs:APS", "emg"]
    assert snap["findings"][1:] == [{"key": "emg", "kind": "emg", "text": "no EMG from the board for 1.8 s "
                                 "(expected a block every 100 ms)", "missing_s": 1.75,
                                 "expected": "a block every 100 ms", "output": None}]
    fresh = FlowSupervisor()
    fresh.reset(0.0)
    assert fresh.snapshot(0.0)["emg_since_last_s"] is None and fresh.snapshot(0.0)["status_since_last_s"] is None
    finding = FlowFinding("epochs:APS", "epochs", "t", 1.23456, "2 per second", Output.APS)
    assert finding.to_json() == {"key": "epochs:APS", "kind": "epochs", "text": "t", "missing_s": 1.235,
                                 "expected": "2 per second", "output": "APS"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(margin_s=0), "flow supervision: margin_s must be > 0.0 s (got 0)"),
    (dict(emg_stall_s=-1), "flow supervision: emg_stall_s must be > 0.0 s (got -1)"),
    (dict(status_period_s=0.0), "flow supervision: status_period_s must be > 0.0 s (got 0.0)"),
    (dict(status_late_s=0), "flow supervision: status_late_s must be > 0.0 s (got 0)"),
    (dict(missing_epochs=0), "flow supervision: missing_epochs >= 1 and 1 <= loss_limit <= loss_window "
                             "(got 0, 3, 10)"),
    (dict(loss_limit=0), "(got 2, 0, 10)"),
    (dict(loss_limit=11), "(got 2, 11, 10)"),
])
def test_settings_that_cannot_work_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError) as info:
        FlowSupervisor(**kwargs)
    assert message in str(info.value)


def test_the_smallest_settings_that_work_are_taken():
    sup = FlowSupervisor(margin_s=0.001, missing_epochs=1, loss_window=1, loss_limit=1)
    assert (sup.margin_s, sup.missing_epochs, sup.loss_window, sup.loss_limit) == (0.001, 1, 1, 1)
    sup = FlowSupervisor(loss_window=10, loss_limit=10)
    assert sup.loss_limit == 10


def test_an_epoch_at_the_settling_instant_is_the_first_one_counted_from():
    sup = FlowSupervisor(margin_s=0.125)
    sup.reset(0.0)
    sup.acquisition(0.0, stream_rate_hz=None, block_samples=None, epoch_window_s=0.0625)
    sup.output(0.0, Output.APS, 2.0)  # settled at 0.0625 + 0.5 + 0.125 = 0.6875 exactly
    sup.epoch(0.6875, Output.APS, board_time_us=0)
    sup.epoch(1.6875, Output.APS, board_time_us=1_000_000)  # one pulse's epoch missing in between
    assert sup.snapshot(2.0)["outputs"]["APS"]["epochs_lost"] == 1


def test_losses_are_rounded_from_board_time_to_whole_periods():
    sup = FlowSupervisor()
    sup.reset(0.0)
    sup.output(0.0, Output.PROBE, 1.0)
    sup.epoch(2.0, Output.PROBE, board_time_us=0)
    sup.epoch(4.5, Output.PROBE, board_time_us=2_500_001)  # just over two and a half periods: three
    assert sup.snapshot(4.5)["outputs"]["PROBE"]["epochs_lost"] == 2


def test_epochs_of_an_output_not_running_are_counted_and_never_judged():
    sup = FlowSupervisor()
    sup.reset(0.0)
    for i in range(3):
        sup.epoch(1.0 + i, Output.PROBE, board_time_us=i * 3_000_000)
    snap = sup.snapshot(4.0)["outputs"]["PROBE"]
    assert (snap["epochs"], snap["epochs_lost"], snap["rate_hz"]) == (3, 0, None)


def test_periods_under_a_second_are_worded_in_milliseconds():
    sup = FlowSupervisor(status_period_s=0.9)
    sup.reset(0.0)
    assert keyed(sup, 10.0)["status"].expected == "every 900 ms"


def test_a_new_supervisor_expects_nothing_and_its_snapshot_says_so():
    sup = FlowSupervisor()
    snap = sup.snapshot(5.0)
    assert snap["active"] is False
    assert (snap["emg_block_s"], snap["emg_since_last_s"], snap["status_since_last_s"]) == (None, None, None)
    assert snap["findings"] == []
    assert all(o == {"rate_hz": None, "epochs": 0, "epochs_lost": 0, "since_last_s": None}
               for o in snap["outputs"].values())


def test_epochs_are_missing_at_their_deadline_exactly():
    # figures exact in binary: window 0.5 s, margin 0.25 s, 1 Hz -> steady rule 2.25 s
    sup = FlowSupervisor(margin_s=0.25)
    sup.reset(0.0)
    sup.acquisition(0.0, stream_rate_hz=None, block_samples=None, epoch_window_s=0.5)
    sup.output(0.0, Output.APS, 1.0)
    sup.epoch(10.0, Output.APS, 10_000_000)
    assert "epochs:APS" not in keyed(sup, 12.25 - 2 ** -20)
    f = keyed(sup, 12.25)["epochs:APS"]
    assert f.missing_s == 2.25


def test_the_epoch_window_is_60_ms_unless_the_acquisition_says_otherwise():
    # grace after a change: window + period + margin, then the steady rule (2 periods + margin)
    for window, due in ((None, 0.06 + 1.0 + 0.08 + 2.08), (0.5, 0.5 + 1.0 + 0.08 + 2.08)):
        sup = FlowSupervisor()
        sup.reset(0.0)
        if window is None:
            sup.acquisition(0.0, stream_rate_hz=None, block_samples=None)
        else:
            sup.acquisition(0.0, stream_rate_hz=None, block_samples=None, epoch_window_s=window)
        sup.output(0.0, Output.APS, 1.0)
        assert "epochs:APS" not in keyed(sup, due - EPS)
        f = keyed(sup, due + LATE)["epochs:APS"]
        assert f.missing_s == pytest.approx(due)  # since the output was switched on


def test_losses_older_than_the_window_are_forgotten():
    sup = FlowSupervisor(loss_window=4, loss_limit=2)
    sup.reset(0.0)
    sup.output(0.0, Output.APS, 1.0)
    for s in (2, 4, 6):  # pulses 3 and 5 lost: slots lost, received, lost, received
        sup.epoch(s + 0.06, Output.APS, s * 1_000_000)
    assert "epoch_loss:APS" in keyed(sup, 6.1)
    sup.epoch(7.06, Output.APS, 7_000_000)  # the loss of pulse 3 leaves the four-slot window
    assert "epoch_loss:APS" not in keyed(sup, 7.1)
    assert sup.snapshot(7.1)["outputs"]["APS"]["epochs_lost"] == 2
