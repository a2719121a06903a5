"""The engine at its boundaries, on the virtual board through the real wire protocol.

- A response at 0.9x and 1.1x the event threshold (the default and other thresholds, two
  sample rates), measured by the real analysis: every valid epoch is a response exactly
  when its amplitude reaches the threshold in force, the 1.1x responses are responses and
  the 0.9x ones are not. A threshold applied wrongly anywhere (a constant, another
  setting, a stale analyzer) fails here.
- The cautery override (``StimulusPipeline.epoch``): while the free-running detector says
  electrocautery is on, an epoch the analysis calls valid is invalid (``cautery``): never
  a response, never a loss of signal. An analyzer that calls every epoch valid shows the
  override at work; without it, these tests fail.
"""

from __future__ import annotations

import statistics

import pytest

from app.model import InvalidReason, Measurement
from app.settings import Settings
from engine_testkit import rule_events, stepped


def _collect(s, seconds, side="L"):
    """Every measurement of ``side`` shown during ``seconds`` (the state's ``last``)."""
    out: dict[int, dict] = {}

    def grab():
        last = s.monitor.last.get(side)
        if last is not None:
            out[last["index"]] = last

    s.run_for(seconds, grab)
    return list(out.values())


@pytest.mark.parametrize(("rate_hz", "threshold_uV"), [(20000, 100.0), (10000, 100.0), (20000, 200.0),
                                                       (10000, 150.0)])
def test_responses_at_0_9_and_1_1_times_the_threshold(tmp_path, rate_hz, threshold_uV):
    st = Settings().with_changes({"acq.sample_rate_hz": rate_hz, "analysis.event_threshold_uV": threshold_uV}, "test")
    s = stepped(tmp_path, seed=41, settings=st)
    s.run_for(0.3)
    case_id = s.must("case.start", patient_id="PSN-EDGE", planned_sides=["L"])["case_id"]
    s.board.control("probe", contact="nerve", site="RLN", side="L", position=0.3)
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=10.0)
    s.must("stim.output", output="probe", on=True)
    full = statistics.median(m["amplitude_uV"] for m in _collect(s, 2.0) if m["valid"])
    seen = {}
    for factor in (1.1, 0.9):  # the recording scaled so that the response lies at factor x threshold
        s.board.control("tube", left=factor * threshold_uV / full, over_s=0.05)
        s.run_for(0.3)
        ms = [m for m in _collect(s, 3.0) if m["valid"]]
        assert len(ms) >= 25, (factor, len(ms))
        for m in ms:  # the verdict follows the threshold in force, epoch by epoch
            assert m["response"] == (m["amplitude_uV"] >= threshold_uV), (factor, m)
        seen[factor] = ms
    hi, lo = seen[1.1], seen[0.9]
    assert statistics.median(m["amplitude_uV"] for m in lo) < threshold_uV < \
        statistics.median(m["amplitude_uV"] for m in hi)
    assert sum(m["response"] for m in hi) >= 0.9 * len(hi)
    assert sum(m["response"] for m in lo) < 0.5 * len(lo)  # noise lifts some peak-to-peak values over it
    # the record holds the threshold each stimulus was judged with
    stims = [e.payload for e in s.monitor.journal.entries(case_id, kinds=["stimulus"], blobs=False)]
    assert {p["threshold_uV"] for p in stims} == {threshold_uV}
    # and a run of 0.9x responses is a loss of signal at that site (they are no responses)
    assert rule_events(s.events, "loss_of_signal")


class _AlwaysValid:
    """An analysis that calls every epoch valid: a response, or (``silent``, while the
    engine's detector says cautery is on) none. It notes which stimuli it measured while
    the detector said cautery was on."""

    silent = False
    monitor = None
    in_cautery: list[int] = []

    def __init__(self, settings: Settings) -> None:
        pass

    def measure_board_epoch(self, e, stim) -> Measurement:
        cautery = _AlwaysValid.monitor is not None and _AlwaysValid.monitor.emg.cautery
        if cautery:
            _AlwaysValid.in_cautery.append(stim.index)
        if _AlwaysValid.silent and cautery:
            return Measurement(stim, stim.side.channel, True, None, False, 12.0, None, None)
        return Measurement(stim, stim.side.channel, True, None, True, 800.0, 3.6, 3.1)


def _cautery_case(tmp_path, seed):
    _AlwaysValid.silent = False
    _AlwaysValid.in_cautery = []
    s = stepped(tmp_path, seed=seed, monitor_kwargs={"analyzer_factory": _AlwaysValid})
    _AlwaysValid.monitor = s.monitor
    s.run_for(0.3)
    case_id = s.must("case.start", patient_id="PSN-CAU", planned_sides=["L"])["case_id"]
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=10.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    return s, case_id


def _during_cautery(s, case_id, seconds):
    """The journaled stimuli measured while the engine's detector said cautery was on."""
    _AlwaysValid.in_cautery = []
    s.board.control("cautery", duration_s=seconds)
    s.run_for(seconds + 1.0)
    stims = {e.payload["index"]: e.payload
             for e in s.monitor.journal.entries(case_id, kinds=["stimulus"], blobs=False)}
    return [stims[i] for i in _AlwaysValid.in_cautery]


def test_a_valid_response_during_cautery_is_invalid_never_a_response(tmp_path):
    s, case_id = _cautery_case(tmp_path, seed=51)
    during = _during_cautery(s, case_id, 2.0)
    assert len(during) >= 10
    assert all(not m["valid"] and m["invalid_reason"] == InvalidReason.CAUTERY.value and not m["response"]
               for m in during), during
    s.run_for(1.0)
    assert s.monitor.last["L"]["valid"] and s.monitor.last["L"]["response"]  # after it: responses again


def test_silence_during_cautery_is_never_a_loss_of_signal(tmp_path):
    s, case_id = _cautery_case(tmp_path, seed=52)
    assert not rule_events(s.events, "loss_of_signal")
    _AlwaysValid.silent = True  # valid silence while the room is full of cautery: two would be a loss
    during = _during_cautery(s, case_id, 2.0)
    _AlwaysValid.silent = False
    assert len(during) >= 10 and all(m["invalid_reason"] == "cautery" for m in during)
    assert not rule_events(s.events, "loss_of_signal")
    assert not [a for a in s.must("state.get")["alarms"]["active"] if a["kind"] == "loss_of_signal"]
