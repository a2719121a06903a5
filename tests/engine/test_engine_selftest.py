"""The self-test through the API: readback where the monitor observes, the nurse where it cannot.

The shipped outputs (the simulated and the real GPIO, the capturing and the ALSA
loudspeaker) have no readback: the loudspeaker, the LEDs and the buzzer are played and
reported "confirm", never "ok", until the nurse answers; the answers are journaled, in
the open case or in the next one that opens.
"""

from __future__ import annotations

from app.engine.selftest import SelfTest
from engine_testkit import stepped

NURSE_ITEMS = {"audio", "leds", "buzzer"}


def _run(s):
    return s.must("selftest.run", client="ui")


def test_played_outputs_wait_for_the_nurse_and_are_never_ok_by_themselves(tmp_path):
    s = stepped(tmp_path, seed=61, fake_analysis=True)
    s.run_for(0.5)
    r = _run(s)
    by = {i["item"]: i for i in r["items"]}
    assert r["status"] == "confirm" and r["ok"] is False
    assert set(r["pending"]) == NURSE_ITEMS and r["by_nurse"] == [] and set(r["by_readback"]) == {"board", "storage"}
    for name in NURSE_ITEMS:
        it = by[name]
        assert it["status"] == "confirm" and it["ok"] is None and it["check"] == "nurse", it
        assert "played, confirm" in it["message"] and it["question"].endswith("?")
    # the outputs were really driven: the chime, then each LED and the buzzer
    s.run_for(2.0)
    gpio = s.monitor.outputs.gpio
    assert all(gpio.changes(role) for role in ("red_led", "yellow_led", "green_led", "buzzer"))
    assert s.monitor.outputs.audio.tagged("tone-selftest")
    # the nurse confirms two and did not hear the third
    s.must("selftest.confirm", client="ui", item="leds", seen=True)
    r = s.must("selftest.confirm", client="ui", item="audio", seen=True)
    assert r["status"] == "confirm" and r["pending"] == ["buzzer"] and r["confirmed"]["by"] == "ui"
    r = s.must("selftest.confirm", client="ui", item="buzzer", seen=False, note="silent")
    assert r["status"] == "failed" and r["failed"] == ["buzzer"] and r["ok"] is False
    assert set(r["by_nurse"]) == {"leds", "audio"}
    ev = [e for e in s.events if e.get("kind") == "self_test"][-1]
    assert "FAILED" in ev["message"] and "confirmed by the nurse" in ev["message"] and ev["priority"] == "medium"
    # answered again (the buzzer heard after all): passed
    r = s.must("selftest.confirm", client="ui", item="buzzer", seen=True)
    assert r["status"] == "passed" and r["ok"] is True and set(r["by_nurse"]) == NURSE_ITEMS


def test_answers_that_cannot_be_given_are_refused(tmp_path):
    s = stepped(tmp_path, seed=62, fake_analysis=True)
    s.run_for(0.3)
    assert s.command("selftest.confirm", item="leds", seen=True)["error"]["code"] == "bad_state"
    _run(s)
    assert s.command("selftest.confirm", item="board", seen=True)["error"]["code"] == "invalid_argument"
    assert s.command("selftest.confirm", item="leds")["error"]["code"] == "invalid_argument"


def test_the_self_test_before_a_case_goes_into_its_record_with_the_nurse_s_answers(tmp_path):
    s = stepped(tmp_path, seed=63, fake_analysis=True)
    s.run_for(0.5)
    _run(s)
    for item in sorted(NURSE_ITEMS):
        s.must("selftest.confirm", client="ui", item=item, seen=True)
    cid = s.must("case.start", client="ui", patient_id="PSN-ST", planned_sides=["L"])["case_id"]
    j = s.monitor.journal
    entries = [e.payload["detail"] for e in j.entries(cid, kinds=["engine"], blobs=False)
               if e.payload["event"] == "self_test"]
    assert len(entries) == 1 and entries[0]["before_case"] is True and entries[0]["status"] == "passed"
    assert set(entries[0]["by_nurse"]) == NURSE_ITEMS and set(entries[0]["by_readback"]) == {"board", "storage"}
    assert all(i["by"] == "ui" for i in entries[0]["items"] if i["check"] == "nurse")
    from app.record.document import build_document

    line = next(t["text"] for t in build_document(j, cid)["timeline"] if "self-test" in t["text"])
    assert line == ("Monitor: self-test passed (board, case storage by readback; loudspeaker, alarm lights, "
                    "backup buzzer confirmed by the nurse) (before the case)")
    # a confirmation during the case is journaled in it (operator entry and the self-test again)
    _run(s)
    s.must("selftest.confirm", client="ui", item="audio", seen=False)
    ops = [e.payload for e in j.entries(cid, kinds=["operator"], blobs=False)
           if e.payload["action"] == "selftest.confirm"]
    assert ops[-1]["detail"] == {"item": "audio", "seen": False} and ops[-1]["who"] == "ui"
    last = [e.payload["detail"] for e in j.entries(cid, kinds=["engine"], blobs=False)
            if e.payload["event"] == "self_test"][-1]
    assert last["status"] == "failed" and last["failed"] == ["audio"]
    # the next case does not take this case's self-test again
    s.must("case.close")
    cid2 = s.must("case.start", patient_id="PSN-ST2")["case_id"]
    assert not [e for e in j.entries(cid2, kinds=["engine"], blobs=False) if e.payload["event"] == "self_test"]


def test_a_failed_loudspeaker_is_known_by_readback(tmp_path):
    s = stepped(tmp_path, seed=64, fake_analysis=True)
    s.run_for(0.3)
    s.monitor.outputs.audio.fail("device unplugged")
    r = _run(s)
    audio = next(i for i in r["items"] if i["item"] == "audio")
    assert audio == {**audio, "status": "failed", "ok": False, "check": "readback"}
    assert "device unplugged" in audio["message"] and r["status"] == "failed"


def test_items_without_a_status_are_readback_items():
    t = SelfTest([{"item": "board", "ok": True, "message": "x"}, {"item": "storage", "ok": False, "message": "y"}],
                 None, "2026-01-01T00:00:00Z")
    r = t.result()
    assert [(i["status"], i["check"]) for i in r["items"]] == [("ok", "readback"), ("failed", "readback")]
    assert r["status"] == "failed" and r["by_readback"] == ["board"]


def test_a_pulse_into_air_at_the_end_of_a_case_does_not_fail_the_next_self_test(tmp_path):
    # the probe touched nothing: the board's compliance-limit flag stays set until a pulse
    # reaches its current; that is the last pulse's condition, not a board fault
    s = stepped(tmp_path, seed=61, fake_analysis=True)
    s.run_for(0.5)
    s.must("case.start", patient_id="P1", planned_sides=["L"])
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", current_mA=3.0)
    s.board.control("probe", contact="none")
    s.must("stim.output", output="probe", on=True)
    s.run_for(1.0)
    s.must("stim.output", output="probe", on=False)
    s.run_for(0.5)
    from firmware_bridge.messages import Fault

    assert s.monitor.board.faults == int(Fault.COMPLIANCE_LIMIT)  # the board reports it ...
    s.must("case.close")
    r = _run(s)
    board = next(i for i in r["items"] if i["item"] == "board")
    assert board["ok"] is True and board["status"] == "ok", board  # ... the self-test passes it, and says so
    assert "could not reach its set current" in board["message"] and "not a board fault" in board["message"]
    assert "faults:" not in board["message"]
