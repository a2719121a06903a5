"""The appliance's publisher against a real broker (TLS, passwords, the shipped ACL) and the
station's reader link: the broker killed and restarted in the middle of a case, the
engine's loop never held up, the reader ends with every event of the journal."""

from __future__ import annotations

import json
import os
import signal

import pytest

from app.station.link import BrokerSettings, ReaderLink
from app.remote.config import BrokerAddress
from remote_accounts import READERS
from waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def reader(broker, user="anna.rossi"):
    deltas = []
    link = ReaderLink(user, READERS[user][0], READERS[user][1], BrokerSettings(
        BrokerAddress("localhost", broker.port, True), str(broker.tls.ca)),
        on_deltas=lambda u, d: deltas.extend(d), display_name="Dr Anna Rossi")
    link.start()
    assert link.wait_connected(10)
    return link, deltas


def alarm_kinds(state):
    return {a["kind"]: a for a in state["alarms"]["active"]}


def test_broker_killed_mid_case_reader_ends_with_every_event_and_the_engine_never_waits(broker, engines, collectors):
    eng = engines(broker, "or-1")
    spy = collectors(broker, "anna.rossi", READERS["anna.rossi"][0])
    assert spy.wait_connected()
    spy.subscribe("lnm/v1/#")
    link, deltas = reader(broker)
    try:
        case_id = eng.call("case.start", patient_id="PSEUDO-77", planned_sides=["L"], surgeon="Dr Secret Surgeon",
                           procedure="left hemithyroidectomy")["case_id"]
        eng.call("sim.control", command="aps_attach", args={"side": "L"})
        eng.call("stim.set", output="aps", rate_hz=5.0)
        eng.call("stim.output", output="aps", on=True)
        model = link.models["or-1"]
        assert wait_until(lambda: model.case_id == case_id and len(model.measurements) >= 5, 20), (
            model.case_id, case_id, len(model.measurements), eng.service.remote.publisher.health_json(),
            link.broker_state(), eng.call("state.get")["stim"])
        assert wait_until(lambda: model.contiguous >= 0 and not model.has_gap(), 10)
        before_gap = eng.max_loop_gap

        broker.mosquitto.kill()
        for i in range(3):
            eng.call("note.add", text=f"while the broker is down #{i}")
        eng.call("sim.control", command="lead", args={"electrode": "L_POS", "state": "off"})
        # the alarm path does not wait for the network: the engine raises it at once
        assert wait_until(lambda: "lead_off" in alarm_kinds(eng.call("state.get")), 10)
        # and after remote.notice_after_s the nurse sees a low-priority notice, nothing more
        assert wait_until(lambda: "remote_unreachable" in alarm_kinds(eng.call("state.get")), 15)
        notice = alarm_kinds(eng.call("state.get"))["remote_unreachable"]
        assert notice["priority"] == "low" and notice["technical"] and "not affected" in notice["message"]
        eng.call("sim.control", command="lead", args={"electrode": "L_POS", "state": "ok"})
        eng.call("snapshot", comment="mark while down")
        down_gap = eng.max_loop_gap

        broker.mosquitto.start()
        # the appliance re-sends from the journal, the reader asks for what it still misses
        journal = eng.journal_events(case_id)
        assert wait_until(lambda: link.connected.is_set(), 20)
        assert wait_until(lambda: set(eng.journal_events(case_id)) <= set(model.events), 30), (
            sorted(set(eng.journal_events(case_id)) - set(model.events)))
        assert wait_until(lambda: not model.has_gap(), 10)
        journal = eng.journal_events(case_id)
        assert sorted(model.events)[: len(journal)] == journal
        texts = [model.events[s]["text"] for s in sorted(model.events)]
        assert sum("while the broker is down" in t for t in texts) == 3
        assert any("lead_off" in t for t in texts)
        # the notice is gone once the broker is back, and the station saw the alarm list
        assert wait_until(lambda: "remote_unreachable" not in alarm_kinds(eng.call("state.get")), 15)
        assert wait_until(lambda: model.alarms is not None and model.status["status"] == "online", 10)
        # the engine loop never stalled (its own stall limit, stall_s, is 1 s) and the guard never tripped
        assert not eng.guard_tripped
        assert down_gap < eng.service.config.stall_s, (before_gap, down_gap)
        # only pseudonymised data left the appliance
        raw = json.dumps([p for _t, p, _r in spy.messages], default=str)
        assert "PSEUDO-77" in raw and "Secret Surgeon" not in raw
    finally:
        link.close()


def test_a_hung_broker_is_a_low_notice_and_the_reader_still_gets_everything(broker, engines):
    """A broker that stops answering but keeps its connections open (a hung host, a stalled
    network): the events wait unconfirmed; after remote.notice_after_s the touchscreen says
    so, the engine never waits, and when the broker answers again nothing is missing."""
    eng = engines(broker, "or-1")
    link, _deltas = reader(broker)
    try:
        case_id = eng.call("case.start", patient_id="P-HUNG", planned_sides=["L"])["case_id"]
        model = link.models["or-1"]
        assert wait_until(lambda: model.case_id == case_id and not model.has_gap(), 20)
        pid = broker.mosquitto.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(3):
                eng.call("note.add", text=f"while the broker hangs #{i}")
            assert wait_until(lambda: "remote_unreachable" in alarm_kinds(eng.call("state.get")), 15)
            notice = alarm_kinds(eng.call("state.get"))["remote_unreachable"]
            assert notice["priority"] == "low" and "not affected" in notice["message"], notice
            assert "slow" in notice["message"], notice  # still connected: the confirmations stopped
            hung_gap = eng.max_loop_gap
        finally:
            os.kill(pid, signal.SIGCONT)
        assert wait_until(lambda: "remote_unreachable" not in alarm_kinds(eng.call("state.get")), 30)
        assert wait_until(lambda: set(eng.journal_events(case_id)) <= set(model.events), 30), (
            sorted(set(eng.journal_events(case_id)) - set(model.events)))
        texts = [model.events[s]["text"] for s in sorted(model.events)]
        assert sum("while the broker hangs" in t for t in texts) == 3
        assert hung_gap < eng.service.config.stall_s and not eng.guard_tripped
    finally:
        link.close()


def test_refused_inbox_messages_are_counted_and_change_nothing(broker, engines, collectors):
    eng = engines(broker, "or-1")
    case_id = eng.call("case.start", patient_id="P-INBOX", planned_sides=["R"])["case_id"]
    anna = collectors(broker, "anna.rossi", READERS["anna.rossi"][0])
    assert anna.wait_connected()
    anna.subscribe("lnm/v1/or-1/+")
    assert wait_until(lambda: anna.on("/health"), 10)
    pub = eng.service.remote.publisher
    for bad in (b"not json", json.dumps({"v": 2, "type": "message"}), json.dumps({"v": 1, "type": "stim.set"}),
                json.dumps({"v": 1, "type": "message", "id": "x" * 100, "text": "hi"}),
                json.dumps({"v": 1, "type": "message", "id": "m1", "text": ""}),
                json.dumps({"v": 1, "type": "message", "id": "m2", "text": "x" * 501}),
                json.dumps({"v": 1, "cmd": "alarm.ack"}), b"\xff" * 5000):
        anna.publish("lnm/v1/or-1/inbox/anna.rossi", bad).wait_for_publish(5)
    assert wait_until(lambda: pub.health.refused_inbox >= 8, 10), pub.health.refused_inbox
    st = eng.call("state.get")
    assert st["case"]["case_id"] == case_id and not st["stim"]["probe"]["on"] and not st["stim"]["aps"]["on"]
    assert not [a for a in st["alarms"]["active"] if a.get("acknowledged")]


def test_backfill_and_stimulus_requests_answer_from_the_journal(broker, engines):
    eng = engines(broker, "or-2")
    case_id = eng.call("case.start", patient_id="P-BACK", planned_sides=["L"])["case_id"]
    eng.call("sim.control", command="aps_attach", args={"side": "L"})
    eng.call("stim.set", output="aps", rate_hz=10.0)
    eng.call("stim.output", output="aps", on=True)
    assert wait_until(lambda: eng.call("state.get")["aps"]["L"]["baseline_uV"] is not None, 20)
    base = eng.call("state.get")["counters"]["stimuli"]
    assert wait_until(lambda: eng.call("state.get")["counters"]["stimuli"] >= base + 5, 20)  # some after the baseline
    # a reader that arrives late gets the case so far
    link, _deltas = reader(broker)
    try:
        model = link.models["or-2"]
        assert wait_until(lambda: model.backfilled and model.case_id == case_id, 20)
        assert set(eng.journal_events(case_id)) <= set(model.events) or wait_until(
            lambda: set(eng.journal_events(case_id)) <= set(model.events), 10)
        ms = sorted(model.measurements)
        assert len(ms) >= 20
        late = [model.measurements[i] for i in ms if model.measurements[i]["amplitude_pct"] is not None]
        assert late, "percent of the APS baseline computed for backfilled stimuli"
        answer = link.request_stimulus("or-2", late[-1]["index"])
        assert answer and answer["found"] and answer["measurement"]["index"] == late[-1]["index"]
        assert answer["waveform"]["channels"]["EMG L"] and answer["baseline"]["waveform"]
        assert link.request_stimulus("or-2", 10**9)["found"] is False
    finally:
        link.close()
