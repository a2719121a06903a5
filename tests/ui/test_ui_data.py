"""Display buffers (pure numpy): EMG envelope reduction, epoch scaling, trends, events."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ui.data import SCALES_UV, EmgRing, EpochStore, EventLog, SiteHistory, TrendStore, choose_scale, decimate_xy


def _emg_msg(t, lo_l, hi_l, lo_r=None, hi_r=None, bin_hz=1000.0):
    lo_r = lo_l if lo_r is None else lo_r
    hi_r = hi_l if hi_r is None else hi_r
    return {"type": "emg", "t_s": t, "bin_hz": bin_hz, "cautery": False,
            "channels": {"EMG L": {"min": list(lo_l), "max": list(hi_l)},
                         "EMG R": {"min": list(lo_r), "max": list(hi_r)}}}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=40), st.integers(1, 50), st.floats(0.01, 3.0))
def test_emg_window_is_the_min_and_max_of_the_last_bins(block_sizes, columns, seconds):
    rng = np.random.default_rng(len(block_sizes) * 1000 + columns)
    ring = EmgRing(seconds=0.5, bin_hz=1000.0)
    all_lo, all_hi = [], []
    t = 0.0
    for n in block_sizes:
        lo = rng.normal(0, 50, n).astype(np.float32)
        hi = lo + rng.uniform(0, 20, n).astype(np.float32)
        ring.add(_emg_msg(t, lo, hi))
        all_lo += list(lo)
        all_hi += list(hi)
        t += n / 1000.0
    lo, hi = ring.window("EMG L", seconds, columns)
    assert len(lo) == len(hi) == columns
    want = min(ring.capacity, max(columns, int(seconds * 1000)))
    src_lo = np.zeros(want, np.float32)
    src_hi = np.zeros(want, np.float32)
    have = min(len(all_lo), want)
    src_lo[want - have:] = np.asarray(all_lo[-have:], np.float32)
    src_hi[want - have:] = np.asarray(all_hi[-have:], np.float32)
    per = want // columns
    use = per * columns
    np.testing.assert_array_equal(lo, src_lo[want - use:].reshape(columns, per).min(axis=1))
    np.testing.assert_array_equal(hi, src_hi[want - use:].reshape(columns, per).max(axis=1))
    assert ring.t_end == pytest_approx(t)


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-9)


def test_emg_ring_survives_short_channels_and_nan():
    ring = EmgRing(seconds=1.0)
    ring.add({"t_s": 0.0, "bin_hz": 1000, "channels": {"EMG L": {"min": [float("nan"), -1], "max": [1, 2]}}})
    lo, hi = ring.window("EMG R", 0.01, 5)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    ring.add({"t_s": 1.0, "bin_hz": 1000, "channels": {}})  # nothing: ignored
    assert ring.count == 2


@given(st.floats(0, 10000))
def test_scale_holds_the_peak(peak):
    s = choose_scale(peak)
    assert s in SCALES_UV
    if peak <= SCALES_UV[-1] * 0.95:
        assert peak <= s * 0.95
        smaller = [x for x in SCALES_UV if x < s]
        assert not smaller or peak > smaller[-1] * 0.95


def test_scale_hysteresis_avoids_flicker():
    assert choose_scale(400, 500.0) == 500.0
    assert choose_scale(180, 500.0) == 500.0  # above a third: kept
    assert choose_scale(150, 500.0) == 200.0  # below a third: shrinks
    assert choose_scale(480, 500.0) == 1000.0  # leaves the range: grows


def test_epoch_scale_ignores_the_stimulus_artifact():
    store = EpochStore()
    t = -10 + np.arange(300) * 0.2
    y = np.zeros(300)
    y[(t >= 0) & (t < 1)] = 5000.0  # artifact
    y[(t > 6) & (t < 8)] = 300.0  # response
    store.add({"side": "L", "sample_rate_hz": 5000.0, "t0_ms": -10.0, "index": 3, "channels": {"EMG L": list(y)}})
    assert store.scale["L"] == 500.0
    ep = store.get("L")
    assert ep["index"] == 3 and len(ep["t_ms"]) == 300
    store.add({"side": "X", "channels": {}})  # unknown side: ignored
    assert store.version == 1


def test_trend_store_load_and_live_additions():
    tr = TrendStore()
    tr.load({"series": [{"side": "L", "site": "VAGUS", "source": "APS", "t_s": [1, 2, 3],
                         "amplitude_pct": [100, None, 90], "latency_pct": [100, None, 101],
                         "amplitude_uV": [600, None, 540], "latency_ms": [7.9, None, 8.0]},
                        {"side": "L", "site": "RLN", "source": "PROBE", "t_s": [1], "amplitude_pct": [None]}]})
    a = tr.arrays("L")
    assert list(a["t"]) == [1, 2, 3] and math.isnan(a["amp_pct"][1]) and a["amp_pct"][2] == 90
    tr.add({"source": "APS", "side": "L", "t_s": 4, "valid": True, "amplitude_pct": 50, "latency_pct": 120,
            "amplitude_uV": 300, "latency_ms": 9.5})
    tr.add({"source": "APS", "side": "L", "t_s": 5, "valid": False, "amplitude_pct": 1})
    tr.add({"source": "PROBE", "side": "L", "t_s": 6})
    a = tr.arrays("L")
    assert list(a["t"]) == [1, 2, 3, 4, 5] and a["lat_pct"][3] == 120 and math.isnan(a["amp_pct"][4])
    assert not tr.has_data("R")


@given(st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3000), st.integers(1, 400))
def test_decimation_keeps_the_extremes(values, columns):
    x = np.arange(len(values), dtype=float)
    y = np.asarray(values)
    dx, dy = decimate_xy(x, y, columns)
    assert len(dx) <= max(len(x), 2 * columns)
    assert np.all(np.diff(dx) >= 0)
    assert dy.max() == y.max() and dy.min() == y.min()


def test_decimation_drops_gaps():
    x = np.array([0, 1, 2, 3.0])
    y = np.array([1, np.nan, 3, 4.0])
    dx, dy = decimate_xy(x, y, 100)
    assert list(dx) == [0, 2, 3]


def test_site_history_and_event_log():
    h = SiteHistory()
    h.add({"site": "VAGUS", "side": "L", "t_s": 1, "valid": True, "response": True, "amplitude_uV": 600})
    h.add({"site": "VAGUS", "side": "L", "t_s": 2, "valid": False, "amplitude_uV": 5})  # invalid: not kept
    h.add({"site": "UNTAGGED", "side": "L", "t_s": 3, "valid": True})
    h.add({"site": "VAGUS", "side": "L", "t_s": 4, "valid": True, "response": False, "amplitude_uV": None})
    pts = h.since("VAGUS-L", 0)
    assert [p[0] for p in pts] == [1, 4] and math.isnan(pts[1][1]) and pts[0][2] and not pts[1][2]
    log = EventLog(capacity=3)
    log.load([{"seq": 2, "category": "alarm", "kind": "raised"}, {"seq": 1, "category": "case", "kind": "opened"}])
    log.add({"seq": 2, "category": "alarm", "kind": "raised"})  # duplicate after a reconnect
    log.add({"seq": 3, "category": "rule", "kind": "loss_of_signal", "priority": "high"})
    log.add({"seq": 4, "category": "rule", "kind": "baseline_set", "priority": None})
    assert [e["seq"] for e in log.events] == [2, 3, 4]
    assert [e["seq"] for e in log.alarm_history()] == [3, 2]


def test_event_log_merges_the_list_with_events_that_came_first():
    from app.ui.data import EventLog

    log = EventLog()
    log.add({"seq": 9, "kind": "late"})
    log.load([{"seq": i, "kind": f"k{i}"} for i in range(1, 9)])
    assert [e["seq"] for e in log.events] == list(range(1, 10))
    log.add({"seq": 5, "kind": "again"})  # a repeat is not added twice
    assert len(log.events) == 9 and log.last_seq == 9


def _wave(index, side="L", site="VAGUS", source="PROBE", amp=500.0):
    t = np.arange(300) / 5000.0 * 1000.0 - 10.0
    y = np.where(t > 3, amp * np.sin((t - 3) / 2.0 * np.pi) * np.exp(-(t - 3) / 3.0), 0.0)
    return {"type": "waveform", "index": index, "t_s": index / 4.0, "side": side, "site": site, "source": source,
            "sample_rate_hz": 5000.0, "t0_ms": -10.0, "channels": {f"EMG {side}": y.tolist(), "EMG R": [0.0] * 300}}


def test_references_pin_the_waveform_of_the_step_and_the_vagal_baseline():
    from app.ui.data import References

    refs = References(cache=50)
    for i in range(1, 11):
        refs.add(_wave(i, amp=100.0 * i))
    state = {"case": {"case_id": "C1"},
             "steps": {"L": {"V1": {"amplitude_uV": 700.0, "stimulus_index": 7}}, "R": {}},
             "aps": {}}
    refs.update(state)
    name, ref = refs.for_epoch("L", "VAGUS", "PROBE")
    assert name == "V1" and ref["amplitude_uV"] == 700.0
    np.testing.assert_allclose(ref["uV"], _epoch_of(_wave(7, amp=700.0)), rtol=1e-5, atol=1e-3)
    assert refs.for_epoch("L", "RLN", "PROBE") == ("R1", None)  # not recorded yet
    # a step recorded before the waveforms were received: its values, no waveform
    state["steps"]["L"]["R1"] = {"amplitude_uV": 900.0, "stimulus_index": 999}
    refs.update(state)
    assert refs.for_epoch("L", "RLN", "PROBE")[1]["uV"] is None
    # the vagal baseline: the mean of the side's last vagal electrode waveforms
    for i in range(20, 25):
        refs.add(_wave(i, source="APS", amp=400.0))
    state["aps"] = {"L": {"baseline_uV": 400.0, "collecting": False, "baseline_count": 5}}
    refs.update(state)
    name, ref = refs.for_epoch("L", "VAGUS", "APS")
    assert name == "vagal baseline" and ref["uV"] is not None and ref["amplitude_uV"] == 400.0
    # the next case starts with none
    version = refs.version
    refs.update({"case": {"case_id": "C2"}, "steps": {}, "aps": {}})
    assert refs.for_epoch("L", "VAGUS", "PROBE") == ("V1", None) and refs.version > version


def _epoch_of(msg):
    from app.ui.data import epoch_of

    return epoch_of(msg)[1]


def test_trend_store_keeps_the_last_vagal_percentage():
    from app.ui.data import TrendStore

    tr = TrendStore()
    assert tr.last("L") is None
    tr.add({"source": "APS", "side": "L", "t_s": 5.0, "valid": True, "amplitude_pct": 80.0, "latency_pct": 104.0})
    tr.add({"source": "APS", "side": "L", "t_s": 6.0, "valid": False})
    assert tr.last("L") == (5.0, 80.0, 104.0)


def test_the_event_list_starts_empty_with_each_case():
    from app.ui.data import EventLog

    log = EventLog()
    log.add({"seq": 1, "category": "technical", "kind": "board_fault", "priority": "medium"})
    assert [e["seq"] for e in log.of_case()] == [1]  # no case yet: everything
    log.add({"seq": 2, "category": "case", "kind": "opened"})
    log.add({"seq": 3, "category": "rule", "kind": "loss_of_signal", "priority": "high"})
    log.add({"seq": 4, "category": "case", "kind": "closed"})
    assert [e["seq"] for e in log.of_case()] == [2, 3, 4]  # the closed case stays readable
    log.add({"seq": 5, "category": "case", "kind": "opened"})
    assert [e["seq"] for e in log.of_case()] == [5]  # the next case: nothing of the last one
    assert log.alarm_history() == []
    log.add({"seq": 6, "category": "rule", "kind": "loss_of_signal", "priority": "high"})
    assert [e["seq"] for e in log.alarm_history()] == [6]
    log.add({"seq": 7, "category": "case", "kind": "resumed"})  # the engine back after a restart
    assert [e["seq"] for e in log.of_case()] == [5, 6, 7]  # the case keeps its own events


def test_the_event_list_follows_a_restarted_engine():
    from app.ui.data import EventLog

    log = EventLog()
    log.add({"seq": 900, "category": "case", "kind": "opened"})
    log.reset()  # a new connection: the engine restarted and numbers from 1 again
    log.add({"seq": 3, "category": "case", "kind": "opened"})
    assert [e["seq"] for e in log.of_case()] == [3]
