"""The engine core through the real wire protocol (stepped, one thread): case life cycle,
stimulation commands, technical conditions, journal-first, resume."""

from __future__ import annotations

import pytest

from app.engine.resume import resume_open_case
from app.record.journal import Journal
from engine_testkit import alarm_raises, stepped
from firmware_bridge.messages import Output


def start_case(system, **kw):
    system.run_for(0.5)
    assert system.monitor.link_up
    return system.must("case.start", patient_id="P1", planned_sides=["L", "R"], **kw)["case_id"]


def test_case_opens_stimulates_and_closes_with_a_verified_journal(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    case_id = start_case(s)
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L", step="V1")
    s.must("stim.output", output="probe", on=True)
    s.run_for(2.0)
    assert Output.PROBE in s.board.stimulating
    assert s.monitor.counters["stimuli"] >= 6
    last = s.monitor.last["L"]
    assert last["valid"] and last["response"] and last["step"] == "V1"
    result = s.must("step.tag", step="V1", side="L")
    assert result["recorded"] and result["value"]["response"]
    res = s.must("case.close", note="done")
    assert res["case_id"] == case_id
    s.run_for(0.3)
    assert Output.PROBE not in s.board.stimulating
    j = s.monitor.journal
    assert j.verify(case_id).ok
    kinds = [e.kind for e in j.entries(case_id, blobs=False)]
    for k in ("case_opened", "settings", "operator", "stimulus", "step", "case_closed", "emg_block", "engine"):
        assert k in kinds, k
    # journal first: the stimulus entry of every measured stimulus is there
    assert kinds.count("stimulus") == s.monitor.counters["stimuli"]


def test_current_above_the_confirmation_limit_needs_confirm(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    start_case(s)
    r = s.command("stim.set", output="probe", current_mA=4.0)
    assert not r["ok"] and r["error"]["code"] == "needs_confirmation" and "3 mA" in r["error"]["message"]
    assert s.monitor.probe.current_mA == 1.0
    r = s.command("stim.set", output="probe", current_mA=4.0, confirm=True)
    assert r["ok"] and r["result"]["current_mA"] == 4.0
    r = s.command("stim.set", output="aps", rate_hz=20.0)
    assert not r["ok"] and "0.5-10 Hz" in r["error"]["message"]
    r = s.command("stim.set", output="probe", current_mA=0.05)
    assert not r["ok"] and r["error"]["code"] == "invalid_argument"


def test_commands_needing_a_case_or_a_failed_tube_check_are_refused(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    s.run_for(0.5)
    r = s.command("stim.output", output="probe", on=True)
    assert r["error"]["code"] == "bad_state" and "no case" in r["error"]["message"]
    start_case(s)
    s.board.control("impedance", electrode="L_POS", ohm=20000)
    s.must("tube.check")
    s.run_for(0.5)
    tube = s.monitor.state_snapshot()["tube"]
    assert tube["pass"] is False and "L_POS" in tube["message"]
    r = s.command("stim.output", output="aps", on=True)
    assert r["error"]["code"] == "bad_state" and "tube check failed" in r["error"]["message"]
    s.must("tube.override", reason="surgeon accepts: tube repositioned after the check")
    assert s.command("stim.output", output="aps", on=True)["ok"]


def test_settings_change_is_validated_and_journaled(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    case_id = start_case(s)
    r = s.command("settings.set", changes={"alarms.audio_pause_s": 9999})
    assert r["error"]["code"] == "setting_rejected"
    assert "alarms.audio_pause_s" in r["error"]["message"] and "10-300 s" in r["error"]["message"]
    r = s.command("settings.set", changes={"no.such": 1})
    assert r["error"]["code"] == "setting_rejected" and "no.such" in r["error"]["message"]
    assert s.must("settings.set", changes={"analysis.event_threshold_uV": 150})["values"] == {
        "analysis.event_threshold_uV": 150.0}
    assert s.monitor.settings["analysis.event_threshold_uV"] == 150.0
    changed = [e.payload for e in s.monitor.journal.entries(case_id, kinds=["setting_changed"])]
    assert changed and changed[0]["key"] == "analysis.event_threshold_uV" and changed[0]["new"] == 150.0


def test_start_up_only_settings_are_refused_live_and_acquisition_changes_reach_the_board(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    start_case(s)
    s.run_for(0.5)
    for key, value in (("gpio.buzzer_pin", 5), ("link.heartbeat_ms", 50), ("audio.alsa_device", "hw:1")):
        r = s.command("settings.set", changes={key: value})
        assert r["error"]["code"] == "setting_rejected" and r["error"]["setting"] == key
        assert "start-up only" in r["error"]["message"] and "restart" in r["error"]["message"]
    assert s.must("settings.set", changes={"gpio.buzzer_pin": 23})  # unchanged: nothing to refuse
    schema = {x["key"]: x for x in s.must("settings.get")["schema"]}
    assert schema["gpio.buzzer_pin"]["live"] is False and schema["analysis.event_threshold_uV"]["live"] is True
    assert s.board._gen.fs == 20000
    s.must("settings.set", changes={"acq.sample_rate_hz": 10000})
    s.run_for(0.5)
    assert s.board._gen.fs == 10000  # the board samples at the new rate, no restart needed
    s.must("settings.set", changes={"analysis.window_ms": 80.0})
    s.run_for(0.5)
    assert s.board._post_n == 800


def test_board_unplugged_raises_link_lost_within_a_second_and_recovers(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    start_case(s)
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(1.0)
    assert Output.APS in s.board.stimulating
    t_unplug = s.clock.now() - s.monitor._origin
    s.board.control("unplug", duration_s=3.0)
    s.run_for(1.0)
    lost = alarm_raises(s.events, "board_link_lost")
    assert lost, "no link-lost alarm"
    assert lost[0]["t_s"] - t_unplug <= 1.0
    assert not s.monitor.link_up
    assert s.monitor.state_snapshot()["alarms"]["sounding"] == "high"
    s.run_for(4.0)  # replugged after 3 s: the link comes back, stimulation is commanded again
    assert s.monitor.link_up
    assert Output.APS in s.board.stimulating
    st = s.monitor.state_snapshot()
    link_alarm = [a for a in st["alarms"]["active"] if a["kind"] == "board_link_lost"]
    assert link_alarm and link_alarm[0]["condition_active"] is False  # latched until acknowledged
    s.must("alarm.ack", alarm=link_alarm[0]["id"])
    assert not [a for a in s.monitor.state_snapshot()["alarms"]["active"] if a["kind"] == "board_link_lost"]


def test_silent_host_makes_the_board_stop_and_the_engine_restarts_stimulation(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    start_case(s)
    s.must("stim.output", output="aps", on=True)
    s.run_for(0.5)
    s.host_heartbeat_paused = True
    s.run_for(0.8)
    assert not s.board.stimulating  # the board's own safety contract
    s.host_heartbeat_paused = False
    s.run_for(1.5)
    assert Output.APS in s.board.stimulating
    assert any(e["kind"] == "host_silent" for e in s.events)


def test_sim_control_is_forwarded_and_a_refusal_is_reported(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    start_case(s)
    assert s.must("sim.control", command="probe", args={"contact": "air"})["sent"]
    r = s.command("sim.control", command="teleport", args={})
    assert r["ok"]  # sent; the board's refusal arrives as an event
    s.run_for(0.2)
    assert any(e["kind"] == "board_refused" and "teleport" in e["message"] for e in s.events)


def test_killed_engine_resumes_baselines_steps_and_alarms(tmp_path):
    path = tmp_path / "journal.db"
    s = stepped(journal=Journal(path), fake_analysis=True)
    case_id = start_case(s)
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.board.control("probe", contact="nerve", site="VAGUS", side="R")
    s.must("probe.site", site="VAGUS", side="R", step="V1")
    s.must("stim.output", output="probe", on=True)
    s.run_for(26.0)
    base = s.monitor.rules.aps_baseline(__import__("app.model", fromlist=["Side"]).Side.L)
    assert base is not None and base["count"] == 20
    s.board.control("unplug", duration_s=30.0)
    s.run_for(1.0)
    assert alarm_raises(s.events, "board_link_lost")
    steps_before = s.monitor.rules.procedure.step("R", "V1")
    assert steps_before is not None
    # the process dies here: no close, no shutdown; a new engine opens the same journal
    s.monitor.journal.close()
    s2 = stepped(journal=Journal(path), fake_analysis=True)
    assert resume_open_case(s2.monitor, s2.monitor.journal) == case_id
    m2 = s2.monitor
    from app.model import Side

    assert m2.rules.aps_baseline(Side.L)["amplitude_uV"] == pytest.approx(base["amplitude_uV"])
    assert m2.rules.procedure.step("R", "V1")["amplitude_uV"] == pytest.approx(steps_before["amplitude_uV"])
    active = {a["kind"] for a in m2.state_snapshot()["alarms"]["active"]}
    assert "board_link_lost" in active
    assert m2.aps.on and m2.probe.on and m2.case_resumed
    assert m2.now_t() >= 26.0  # the last entry (link lost) plus the wall time away
    s2.run_for(1.0)  # the new engine talks to its board: monitoring continues
    assert Output.APS in s2.board.stimulating
    assert s2.monitor.journal.verify(case_id).ok


def test_storage_full_raises_the_technical_alarm_monitoring_goes_on_nothing_lost(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    case_id = start_case(s)
    s.board.control("probe", contact="nerve", site="VAGUS", side="L")
    s.must("probe.site", site="VAGUS", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    j = s.monitor.journal
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
    n0 = s.monitor.counters["stimuli"]
    s.run_for(3.0)
    st = s.monitor.state_snapshot()
    assert st["storage"]["ok"] is False and "full" in st["storage"]["message"].lower()
    assert any(a["kind"] == "storage_problem" for a in st["alarms"]["active"])
    assert s.monitor.counters["stimuli"] > n0 + 8  # still measuring
    assert st["last"]["L"]["response"]
    j.conn.execute("PRAGMA max_page_count=1073741823")  # space again
    s.run_for(2.0)
    st = s.monitor.state_snapshot()
    assert st["storage"]["ok"] is True
    stimuli = [e.payload["index"] for e in j.entries(case_id, kinds=["stimulus"], blobs=False)]
    assert stimuli == list(range(s.monitor.counters["stimuli"]))  # every stimulus, in order
    assert j.verify(case_id).ok


def test_lead_off_board_fault_and_audio_failure_are_technical_alarms(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    case_id = start_case(s)
    s.must("stim.output", output="aps", on=True)
    s.run_for(0.5)
    s.board.control("lead", electrode="R_NEG", state="off")
    s.run_for(1.5)
    kinds = {a["kind"]: a for a in s.monitor.state_snapshot()["alarms"]["active"]}
    assert "lead_off" in kinds and kinds["lead_off"]["technical"]
    s.board.control("lead", electrode="R_NEG", state="on")
    s.run_for(1.5)
    assert "lead_off" not in {a["kind"] for a in s.monitor.state_snapshot()["alarms"]["active"]}
    s.board.control("fault", kind="over_current", state="on")
    s.run_for(1.5)
    st = s.monitor.state_snapshot()
    assert "board_fault" in {a["kind"] for a in st["alarms"]["active"]}
    assert "over_current" in st["board"]["faults"] and not s.board.stimulating
    s.monitor.outputs.audio.fail("speaker cable cut")
    s.run_for(0.5)
    st = s.monitor.state_snapshot()
    assert "audio_failure" in {a["kind"] for a in st["alarms"]["active"]}
    assert st["audio"]["ok"] is False and "speaker" in st["audio"]["message"]
    kinds = [e.payload.get("event") for e in s.monitor.journal.entries(case_id, kinds=["engine", "link"], blobs=False)]
    assert "audio_failure" in kinds and "board_status" in kinds


class _RecordingJournal:
    """A real journal that also logs each write call (one call = one transaction)."""

    def __init__(self, journal, log):
        self._j, self._log = journal, log

    def append(self, case_id, kind, payload, blob=None, t_s=None):
        self._log.append(("write", [kind], [payload]))
        return self._j.append(case_id, kind, payload, blob, t_s=t_s)

    def append_many(self, case_id, items):
        items = list(items)
        self._log.append(("write", [i[0] for i in items], [i[1] for i in items]))
        return self._j.append_many(case_id, items)

    def __getattr__(self, name):
        return getattr(self._j, name)


def test_a_stimulus_and_the_alarm_it_causes_are_one_transaction_written_before_anything_is_announced(tmp_path):
    log = []
    s = stepped(journal=_RecordingJournal(Journal(tmp_path / "journal.db"), log))
    mon = s.monitor
    sink = mon._sink

    def recording_sink(stream, msg, sticky):
        log.append(("publish", stream, msg))
        sink(stream, msg, sticky)

    mon._sink = recording_sink
    mon._wants = lambda stream: True
    sound = mon.outputs.alarm_state
    mon.outputs.alarm_state = lambda st: (log.append(("sound", st.sounding_id)), sound(st))[-1]
    case_id = start_case(s)
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=30.0)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("stim.output", output="probe", on=True)
    s.run_for(0.5)
    assert mon.last["L"]["response"] and mon.counters["stimuli"] >= 10
    del log[:]
    s.board.control("probe", contact="tissue")
    s.run_for(0.3)
    los = [i for i, e in enumerate(log) if e[0] == "write" and "rule_event" in e[1]
           and any(p.get("kind") == "loss_of_signal" for p in e[2])]
    assert len(los) == 1, [e[:2] for e in log if e[0] == "write"]
    i = los[0]
    kinds = log[i][1]
    assert kinds[0] == "stimulus" and "alarm" in kinds  # the stimulus, its rule event and the alarm: one write
    alarm = next(p for k, p in zip(kinds, log[i][2], strict=True) if k == "alarm")
    assert alarm["event_kind"] == "loss_of_signal" and alarm["transition"] == "raised"
    # nothing about it was published or sounded before that write
    announced = [j for j, e in enumerate(log) if e[0] == "publish" and e[1] == "events"
                 and e[2].get("kind") in ("loss_of_signal", "raised")]
    sounded = [j for j, e in enumerate(log) if e[0] == "sound" and e[1] and "loss_of_signal" in e[1]]
    assert announced and sounded and min(announced) > i and min(sounded) > i
    # every stimulus made exactly one write (its stimulus entry first)
    writes = [e[1] for e in log if e[0] == "write" and "stimulus" in e[1]]
    assert all(w[0] == "stimulus" and w.count("stimulus") == 1 for w in writes)
    assert len(writes) == sum(1 for e in log if e[0] == "write" and e[1][0] == "stimulus")
    assert mon.journal.verify(case_id).ok


def test_rebaseline_ends_the_amplitude_decrease_condition_of_that_vagus(tmp_path):
    """A re-baseline after tube displacement ends the 'check tube' episode in the rules
    (without a recovery event); the alarm condition must end with it, not stay active."""
    s = stepped(journal=Journal(tmp_path / "journal.db"))
    start_case(s)
    s.board.control("aps_attach", side="L")
    s.must("aps.side", side="L")
    s.must("stim.output", output="aps", on=True)
    s.run_for(26.0)
    s.board.control("tube", left=0.3, over_s=1.0)
    s.run_for(8.0)
    assert alarm_raises(s.events, "amplitude_decrease")

    def decrease():
        return [a for a in s.monitor.state_snapshot()["alarms"]["active"] if a["kind"] == "amplitude_decrease"]

    assert decrease() and decrease()[0]["condition_active"]
    s.must("baseline.rebaseline", side="L")
    s.run_for(0.5)
    assert all(not a["condition_active"] for a in decrease())
