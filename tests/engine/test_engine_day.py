"""A day, not a case: three cases in a row, each starting with nothing of the one before.

Through the API as the touchscreen sends it (``SteppedSystem.command``: the protocol's
validation, then ``Monitor.handle``) on the virtual board, and once through the real
``EngineService`` on its socket. The first case is made to own everything a case can
own (tube check with breathing, baselines, steps, a loss of signal with its alarm,
troubleshooting, mapping, staging advice, irritation, a lowered threshold, paused alarm
audio); after it, the state must show none of it, and the next case must start empty.
The rules for what may cross (a tube check made between cases) are in
``app.engine.case_state``.
"""

from __future__ import annotations

import threading

import pytest

from app.api import protocol as p
from app.engine.case_state import CASE_ALARM_KINDS, PRE_CASE_TUBE_CHECK_S
from app.engine.core import Monitor
from app.record.journal import Journal
from app.settings import Settings
from engine_testkit import PeakAnalyzer, stepped
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import Electrode, ImpedanceResult
from waiting import wait_until

DEFAULTS = Settings()
CASE_KINDS = {k.value for k in CASE_ALARM_KINDS}


def assert_nothing_of_a_case(st: dict, trend: dict, events: list[dict], before_seq: int) -> None:
    """The state shows nothing that a case owns (``before_seq``: the last event of the case before)."""
    assert st["tube"] is None, st["tube"]
    for side in "LR":
        assert st["steps"][side] == {}, st["steps"]
        assert st["los"][side]["active"] is False and st["los"][side]["type"] is None
        assert st["troubleshooting"][side] is None
        assert st["mapping"][side]["points"] == [] and st["mapping"][side]["type"] is None
        assert st["aps"][side]["baseline_uV"] is None and st["aps"][side]["amplitude_pct"] is None
    assert st["baselines"] == {}
    assert st["staging"]["recommended"] is False and st["staging"]["decision"] is None
    assert st["last"] == {} and st["pending_step"] is None
    assert st["emg"]["irritation_active"] == {} and st["emg"]["irritation_last_s"] == {}
    alarms = st["alarms"]
    assert not [a for a in alarms["active"] if a["kind"] in CASE_KINDS], alarms["active"]
    assert alarms["notices"] == [] and alarms["audio"] == "normal"
    assert trend["series"] == []
    assert all(e["seq"] > before_seq for e in events), [e["kind"] for e in events if e["seq"] <= before_seq]
    assert st["threshold_uV"] == DEFAULTS["analysis.event_threshold_uV"]
    probe = st["stim"]["probe"]
    assert probe["on"] is False and probe["current_mA"] == DEFAULTS["stim.probe_current_mA"]
    assert (probe["site"], probe["side"], probe["step"]) == ("VAGUS", "L", None)
    assert st["stim"]["aps"]["on"] is False and st["stim"]["aps"]["rate_hz"] == DEFAULTS["stim.aps_rate_hz"]


def snapshot(s) -> tuple[dict, dict, list[dict]]:
    return s.must("state.get"), s.must("trend.get"), s.must("events.list", limit=1000)["events"]


def first_case_owning_everything(s) -> str:
    """Case 1: everything a case can own, each checked to be there (so the emptiness after it means something)."""
    case_id = s.must("case.start", patient_id="DAY-1", planned_sides=["L", "R"])["case_id"]
    s.must("tube.check")
    s.run_for(16.5)  # impedances, then the breathing window
    tube = s.must("state.get")["tube"]
    assert tube["pass"] is True and tube["breathing_variation"]["L"]["present"] is True
    s.must("laryngoscopy", phase="L1", side="L", finding="normal")
    s.board.control("irritation", side="L", kind="train", duration_s=2.0, rate_hz=40.0)
    s.run_for(4.0)
    # continuous vagal electrode on the left: a baseline
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.set", output="aps", rate_hz=10.0)
    s.must("stim.output", output="aps", on=True)
    s.run_for(3.0)
    s.must("stim.output", output="aps", on=False)
    # the probe on the left vagus: V1; then on the left RLN, which is lost
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L", step="V1")
    s.must("stim.set", output="probe", rate_hz=30.0, current_mA=2.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(0.5)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("probe.site", site="RLN", side="L", step="none")
    s.run_for(0.5)
    s.must("baseline.capture", site="RLN", side="L")
    s.board.control("probe", contact="tissue")
    s.run_for(0.5)
    s.must("ts.answer", side="L", check="leads_ok", answer="yes")
    s.must("ts.verdict", side="L", verdict="true_los", reason="no twitch on palpation")
    s.must("mapping.result", side="L", position_mm=5.0, response=False)
    s.must("step.tag", step="V2", side="L", which="next")
    # changed while the loss of signal is active: a protected limit, confirmed (app.engine.limits)
    s.must("settings.set", changes={"analysis.event_threshold_uV": 150.0}, confirm=True)
    s.must("alarm.pause_audio")
    s.must("note.add", text="first patient")
    st, trend, events = snapshot(s)
    assert st["tube"]["pass"] is True
    assert st["steps"]["L"]["V1"]["response"] and st["steps"]["L"]["L1"]["finding"] == "normal"
    assert st["aps"]["L"]["baseline_uV"] and st["baselines"]["RLN-L"]
    assert st["los"]["L"]["active"] and st["troubleshooting"]["L"] and st["mapping"]["L"]["points"]
    assert st["staging"]["recommended"] is True
    assert st["last"]["L"] and st["pending_step"]["step"] == "V2"
    assert "L" in st["emg"]["irritation_last_s"]
    assert {"loss_of_signal"} <= {a["kind"] for a in st["alarms"]["active"]}
    assert st["alarms"]["notices"] and st["alarms"]["audio"] == "paused"
    assert trend["series"] and events
    assert st["threshold_uV"] == 150.0 and st["stim"]["probe"]["on"] is True
    return case_id


def test_three_cases_in_a_row_each_starts_empty(tmp_path):
    s = stepped(tmp_path, seed=1)
    s.run_for(0.5)
    one = first_case_owning_everything(s)
    last_seq = s.must("events.list", limit=1000)["last_seq"]
    closed = s.must("case.close", note="first case done")
    assert closed["case_id"] == one
    s.run_for(0.3)
    assert_nothing_of_a_case(*snapshot(s), last_seq)
    assert s.must("state.get")["case"] is None

    # case 2 right after: starts empty; a failed tube check, accepted, then closed
    two = s.must("case.start", patient_id="DAY-2", planned_sides=["R"])["case_id"]
    st, trend, events = snapshot(s)
    assert st["case"]["case_id"] == two
    assert_nothing_of_a_case(st, trend, events, last_seq)
    s.board.control("impedance", electrode="R_POS", ohm=25000)
    s.must("tube.check")
    s.run_for(0.5)
    assert s.must("state.get")["tube"]["pass"] is False
    s.must("tube.override", reason="accepted: tube repositioned")
    s.board.control("aps_attach", side="R")
    s.must("aps.side", side="R")
    s.must("stim.output", output="aps", on=True)
    s.run_for(2.0)
    s.must("case.close")
    st = s.must("state.get")
    assert st["tube"] is None and st["last"] == {}

    # between cases, the nurse checks the next patient's tube: case 3 takes it over
    s.board.control("impedance", electrode="R_POS", ohm=2000)
    s.must("tube.check")
    s.run_for(0.5)
    st = s.must("state.get")
    assert st["case"] is None and st["tube"]["pass"] is True and st["tube"]["override"] is None
    last_seq = s.must("events.list", limit=1000)["last_seq"]
    s.run_for(2.0)
    three = s.must("case.start", patient_id="DAY-3", planned_sides=["L"])["case_id"]
    st, trend, events = snapshot(s)
    assert st["tube"]["pass"] is True and st["tube"]["t_s"] < -1.5  # measured before the case opened
    st["tube"] = None
    assert_nothing_of_a_case(st, trend, [e for e in events if e["seq"] > last_seq], last_seq)

    # the record: each case holds its own, and case 3 says where its tube check comes from
    j = s.monitor.journal
    for cid in (one, two, three):
        assert j.verify(cid).ok
    tube3 = [e.payload for e in j.entries(three, kinds=["tube_check"], blobs=False)]
    assert len(tube3) == 1 and tube3[0]["passed"] and "before the case opened" in tube3[0]["message"]
    assert not [e for e in j.entries(two, kinds=["tube_check"], blobs=False) if e.payload["passed"]]
    ended = [e.payload for e in j.entries(one, kinds=["alarm"], blobs=False) if e.payload.get("who") == "case closed"]
    assert {(a["event_kind"], a["transition"]) for a in ended} >= {("loss_of_signal", "reset")}
    assert any(e.payload["transition"] == "audio_on" for e in j.entries(one, kinds=["alarm"], blobs=False)
               if e.payload.get("who") == "case closed")
    back = [e.payload for e in j.entries(one, kinds=["setting_changed"], blobs=False)]
    assert back[-1] == {**back[-1], "key": "analysis.event_threshold_uV", "old": 150.0, "new": 100.0}
    summary = closed["summary"]
    assert summary["stimuli"] == len(list(j.entries(one, kinds=["stimulus"], blobs=False)))
    assert summary["rule_events"]["loss_of_signal"] >= 1
    assert not [e for e in j.entries(three, kinds=["rule_event", "step", "troubleshooting"], blobs=False)]


def test_technical_alarms_about_the_appliance_stay_when_the_case_closes(tmp_path):
    s = stepped(tmp_path, seed=2, fake_analysis=True)
    s.run_for(0.5)
    s.must("case.start", patient_id="TECH-1")
    s.board.control("lead", electrode="R_NEG", state="off")
    s.run_for(0.5)
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.board.control("output", output="APS", state="open")  # no current: the case's stimulation
    s.run_for(3.0)
    kinds = {a["kind"] for a in s.must("state.get")["alarms"]["active"]}
    assert {"lead_off", "no_current"} <= kinds
    s.must("case.close")
    s.run_for(0.3)
    kinds = {a["kind"] for a in s.must("state.get")["alarms"]["active"]}
    assert "lead_off" in kinds and "no_current" not in kinds


def test_stimuli_still_in_flight_at_the_close_never_become_the_next_cases(tmp_path):
    """At 30 Hz an epoch is always on its way (60 ms window): the one delivered before the
    close arrives after the next case opened, and must not be that case's."""
    s = stepped(tmp_path, seed=4, fake_analysis=True)
    s.run_for(0.5)
    s.must("case.start", patient_id="FLIGHT-1")
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("stim.set", output="probe", rate_hz=30.0)
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    n0 = s.monitor.counters["stimuli"]
    s.must("case.close")
    two = s.must("case.start", patient_id="FLIGHT-2")["case_id"]
    s.run_for(0.3)
    assert s.monitor.counters["stimuli"] > n0  # the epochs in flight did arrive
    st = s.must("state.get")
    assert st["last"] == {} and s.must("trend.get")["series"] == []
    assert not list(s.monitor.journal.entries(two, kinds=["stimulus"], blobs=False))


def _direct_monitor(clock):
    return Monitor(Settings(), clock, analyzer_factory=PeakAnalyzer, detector_factory=None)


def _impedances(ohm=2000):
    return ImpedanceResult(0, tuple((e, ohm) for e in (Electrode.L_POS, Electrode.L_NEG, Electrode.R_POS,
                                                       Electrode.R_NEG)))


def _start(mon, pid):
    req = p.Request(1, "case.start", {"patient_id": pid}, client="ui")
    reply = mon.handle(req)
    assert reply["ok"], reply
    return reply["result"]["case_id"]


@pytest.mark.parametrize("minutes, taken", [(5.0, True), (PRE_CASE_TUBE_CHECK_S / 60.0 + 1.0, False)])
def test_a_tube_check_between_cases_counts_only_when_recent(minutes, taken):
    clock = ManualClock(1000.0)
    mon = _direct_monitor(clock)
    events = []
    mon._sink = lambda stream, msg, sticky: events.append(msg) if stream == "events" else None
    mon.board_message(_impedances())
    assert mon.state_snapshot()["tube"]["pass"] is True  # shown while no case is open
    clock.advance(minutes * 60.0)
    _start(mon, "P1")
    tube = mon.state_snapshot()["tube"]
    if taken:
        assert tube["pass"] is True and tube["t_s"] == pytest.approx(-minutes * 60.0, abs=0.01)
    else:
        assert tube is None
        assert any(e["kind"] == "tube_check_expired" for e in events)


def test_a_tube_check_of_a_closed_case_never_reaches_the_next_one():
    clock = ManualClock(1000.0)
    mon = _direct_monitor(clock)
    _start(mon, "P1")
    mon.board_message(_impedances())
    assert mon.state_snapshot()["tube"]["pass"] is True
    clock.advance(60.0)
    assert mon.handle(p.Request(2, "case.close", {}, client="ui"))["ok"]
    assert mon.state_snapshot()["tube"] is None
    clock.advance(1.0)
    _start(mon, "P2")
    assert mon.state_snapshot()["tube"] is None and mon.case.tube is None


def test_a_profile_chosen_for_a_case_ends_with_it():
    clock = ManualClock(1000.0)
    loaded = []

    def loader(config_dir, profile):
        loaded.append(profile)
        return Settings().with_changes({"analysis.event_threshold_uV": 200.0}, f"profile {profile}")

    mon = Monitor(Settings(), clock, analyzer_factory=PeakAnalyzer, detector_factory=None, settings_loader=loader)
    reply = mon.handle(p.Request(1, "case.start", {"patient_id": "P1", "profile": "smith"}, client="ui"))
    assert reply["ok"] and mon.settings["analysis.event_threshold_uV"] == 200.0 and mon.profile == "smith"
    assert mon.handle(p.Request(2, "case.close", {}, client="ui"))["ok"]
    assert mon.settings["analysis.event_threshold_uV"] == 100.0 and mon.profile is None and loaded == ["smith"]


def test_three_cases_through_the_engine_service_socket(tmp_path):
    from app.api.client import EngineClient
    from app.engine.service import EngineConfig, EngineService

    cfg = EngineConfig(settings=Settings(), board_url="sim://?seed=21", socket_path=tmp_path / "e.sock",
                       data_dir=tmp_path / "data", resume=False)
    svc = EngineService(cfg)
    t = threading.Thread(target=svc.run)
    t.start()
    c = EngineClient(tmp_path / "e.sock", name="ui")
    try:
        assert wait_until(lambda: c.connect() is not None, 20, ignore=(OSError,))
        assert wait_until(lambda: c.call("state.get")["board"]["connected"], 20)
        cases = []
        for n in range(3):
            cases.append(c.call("case.start", patient_id=f"SOCK-{n}", planned_sides=["L"])["case_id"])
            st = c.call("state.get")
            assert st["tube"] is None and st["aps"]["L"]["baseline_uV"] is None and st["last"] == {}
            assert not [a for a in st["alarms"]["active"] if a["kind"] in CASE_KINDS]
            assert c.call("trend.get")["series"] == []
            c.call("tube.check")
            assert wait_until(lambda: (c.call("state.get")["tube"] or {}).get("pass") is True, 10)
            c.call("sim.control", command="aps_attach", args={"side": "L"})
            c.call("aps.side", side="L")
            c.call("stim.set", output="aps", rate_hz=10.0)
            c.call("stim.output", output="aps", on=True)
            assert wait_until(lambda: c.call("state.get")["aps"]["L"]["baseline_uV"] is not None, 20)
            c.call("sim.control", command="output", args={"output": "APS", "state": "open"})
            assert wait_until(lambda: any(a["kind"] == "no_current"
                                          for a in c.call("state.get")["alarms"]["active"]), 10)
            c.call("settings.set", changes={"analysis.event_threshold_uV": 150.0})
            c.call("case.close")
            c.call("sim.control", command="output", args={"output": "APS", "state": "ok"})
            st = c.call("state.get")
            assert st["case"] is None and st["tube"] is None and st["threshold_uV"] == 100.0
            assert not [a for a in st["alarms"]["active"] if a["kind"] in CASE_KINDS]
        assert len(set(cases)) == 3
    finally:
        c.close()
        svc.stop()
        t.join(15)
    with Journal(tmp_path / "data" / "journal.db", readonly=True) as j:
        for cid in cases:
            assert j.verify(cid).ok
            assert len([e for e in j.entries(cid, kinds=["tube_check"], blobs=False)]) >= 1


def test_a_closed_case_state_is_gone_nothing_keeps_it(tmp_path):
    """'Gone when it closes', checked from the outside: once the case is closed, no room
    of the engine holds on to its state, its rules, its tube check or its event list."""
    import gc
    import weakref

    s = stepped(tmp_path, seed=5, fake_analysis=True)
    s.run_for(0.5)
    s.must("case.start", patient_id="GONE-1", planned_sides=["L"])
    s.must("tube.check")
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(2.0)
    case = s.monitor.case
    parts = (case, case.rules, case.rules.procedure, case.tube, case.tube.breathing, case.events, case.emg_chunk)
    refs = [weakref.ref(x) for x in parts]
    del case, parts
    s.must("case.close")
    s.run_for(0.5)
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)
