"""The pure parts of remote monitoring: topics, payloads, pseudonymisation, the inbox's
validation (fuzzed), the publisher's queue (never blocks, drops traces before
measurements, never events) and the station's model (gaps, backfill, a new case)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.remote import protocol as rp
from app.remote.config import BrokerAddress, RemoteConfig, RemoteConfigError
from app.remote.publisher import OutQueue
from app.settings import Settings
from app.station.model import OrModel


def test_topics_and_their_parsing():
    t = rp.Topics("lnm", "or-1")
    assert t.of("state") == "lnm/v1/or-1/state" and t.inbox("anna.rossi") == "lnm/v1/or-1/inbox/anna.rossi"
    assert rp.parse_topic("lnm/v1/or-1/alarm") == ("or-1", "alarm", "")
    assert rp.parse_topic("lnm/v1/or-1/inbox/anna.rossi") == ("or-1", "inbox", "anna.rossi")
    for bad in ("lnm/v1/or-1/inbox/Anna", "lnm/v2/or-1/state", "lnm/v1/OR 1/state", "lnm/v1/or-1/state/x",
                "other/v1/or-1/state", "lnm/v1/or-1/nonsense"):
        assert rp.parse_topic(bad) is None, bad
    with pytest.raises(ValueError):
        rp.Topics("lnm", "or.1")  # a dot is a reader's, never an appliance's


def test_nothing_personal_leaves_at_any_depth():
    state = {"type": "state", "case": {"case_id": "C", "patient_id": "P-7", "surgeon": "Dr Who", "operator": "ui#1"},
             "alarms": {}, "x": [{"surgeon": "Dr Who"}]}
    p = rp.state_payload(state, "or-1", 1.0)
    assert p["case_id"] == "C" and p["state"]["case"]["patient_id"] == "P-7"
    assert "Dr Who" not in json.dumps(p) and "alarms" not in p["state"]
    ev = rp.event_payload("C", 3, 1, "operator", 1.0, "w", {"action": "case.start", "who": "ui#1",
                                                            "detail": {"surgeon": "Dr Who", "patient_id": "P-7"}})
    assert "Dr Who" not in json.dumps(ev) and ev["prev"] == 1 and ev["category"] == "operator"


def test_events_have_words_for_people():
    ev = rp.event_payload("C", 9, 4, "rule_event", 81.2, "w", {"kind": "loss_of_signal", "side": "L", "site": "VAGUS",
                                                               "priority": "high", "stimulus_index": 3, "detail": {}})
    assert ev["text"] == "Loss of signal, left vagus" and ev["priority"] == "high" and ev["side"] == "L"
    assert rp.event_text("alarm", {"transition": "acknowledged", "alarm_id": "loss_of_signal:VAGUS-L"}).startswith(
        "Acknowledged")
    assert "45 %" in rp.event_text("reader_message", {"event": "received", "from": "Dr A", "reader": "a.b",
                                                      "text": "vagal 45 %"})
    for kind in rp.EVENT_KINDS:
        assert isinstance(rp.event_text(kind, {}), str)


def test_decimation_keeps_the_shape():
    w = rp.waveform_payload({"type": "waveform", "index": 1, "side": "L", "sample_rate_hz": 5000.0, "t0_ms": -10.0,
                             "channels": {"EMG L": [float(i) for i in range(300)]}}, "C")
    assert w["sample_rate_hz"] == 2500.0 and len(w["channels"]["EMG L"]) == 150 and w["channels"]["EMG L"][0] == 0.5
    e = rp.emg_payload({"t_s": 1.0, "bin_hz": 1000, "channels": {"EMG L": {"min": list(range(-100, 0)),
                                                                            "max": list(range(100))}}}, "C")
    assert e["bin_hz"] == 200.0 and e["channels"]["EMG L"]["max"][:2] == [4, 9]
    assert e["channels"]["EMG L"]["min"][0] == -100


def test_a_valid_message_and_requests_are_accepted():
    m = rp.parse_inbox("anna.rossi", json.dumps({"v": 1, "type": "message", "id": "m1", "from": "Dr A\x07",
                                                 "text": " release ", "kind": "interpretation"}).encode())
    assert isinstance(m, rp.ReaderMessage) and m.text == "release" and m.sender == "Dr A" and m.reader == "anna.rossi"
    b = rp.parse_inbox("anna.rossi", b'{"v": 1, "type": "backfill", "request_id": "r1", "since_seq": 7}')
    assert isinstance(b, rp.BackfillRequest) and b.since_seq == 7 and b.measurements
    s = rp.parse_inbox("anna.rossi", b'{"v": 1, "type": "stimulus", "request_id": "r2", "index": 12}')
    assert isinstance(s, rp.StimulusRequest) and s.index == 12


@pytest.mark.parametrize("data", [
    b"", b"[]", b'{"v": 1}', b'{"v": 1, "type": "stim.set", "output": "probe"}',
    b'{"v": 1, "type": "alarm.ack"}', b'{"v": 1, "type": "settings.set"}',
    b'{"v": 1, "type": "message", "id": "m", "text": ""}', b'{"v": 1, "type": "message", "id": "m/1", "text": "x"}',
    b'{"v": 1, "type": "stimulus", "request_id": "r", "index": -1}',
    b'{"v": 1, "type": "stimulus", "request_id": "r", "index": true}',
    b'{"v": 1, "type": "backfill", "request_id": "r", "since_seq": "0"}', b"\xff\xfe",
])
def test_anything_else_is_refused_with_a_reason(data):
    with pytest.raises(rp.InboxError):
        rp.parse_inbox("anna.rossi", data)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), st.builds(lambda o: json.dumps(o).encode(), st.dictionaries(
    st.sampled_from(["v", "type", "id", "text", "from", "kind", "index", "since_seq", "request_id", "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=600),
              st.sampled_from([1, "message", "backfill", "stimulus"])), max_size=8))),
       st.text(max_size=40))
def test_the_inbox_never_raises_anything_but_its_refusal(data, reader):
    try:
        item = rp.parse_inbox(reader, data)
    except rp.InboxError:
        return
    assert isinstance(item, (rp.ReaderMessage, rp.BackfillRequest, rp.StimulusRequest))
    if isinstance(item, rp.ReaderMessage):
        assert 0 < len(item.text) <= rp.MAX_TEXT and "\x00" not in item.text


def test_the_queue_never_blocks_drops_traces_first_and_never_events():
    q = OutQueue(max_items=5, max_low=3)
    for i in range(10):
        q.put("waveforms", {"i": i}, 0.0)
        q.put("events", {"seq": i}, 0.0)
        q.put("state", {"i": i}, 0.0)
        q.put("alarms", {"i": i}, 0.0)
    for i in range(7):
        q.put("measurements", {"i": i}, 0.0)
    latest, bulk, poke = q.take()
    assert poke  # events are read from the journal: a flag, never dropped
    assert latest["state"][0] == {"i": 9} and latest["alarms"][0] == {"i": 9}
    kinds = [k for k, _m, _a in bulk]
    assert kinds.count("measurements") == 5 and [m["i"] for k, m, _a in bulk if k == "measurements"] == [2, 3, 4, 5, 6]
    assert kinds.count("waveforms") == 0  # the waveforms made room for the measurements first
    assert q.dropped.counts["waveforms"] >= 7 and q.dropped.counts["measurements"] == 2
    assert q.take() == ({}, [], False)
    for i in range(6):
        q.put("measurements", {"i": i}, 0.0)
    q.put("emg", {}, 0.0)  # a queue full of measurements keeps them: the trace goes
    assert [k for k, _m, _a in q.take()[1]] == ["measurements"] * 5


def ev(seq, prev, case="C", kind="note"):
    return {"v": 1, "case_id": case, "seq": seq, "prev": prev, "t_s": 1.0, "wall": "w", "kind": kind,
            "category": "note", "text": f"e{seq}", "detail": {}}


def test_the_model_sees_gaps_and_backfill_closes_them():
    m = OrModel("or-1")
    m.apply("state", {"v": 1, "case_id": "C", "state": {"case": {"case_id": "C"}}}, 1.0)
    m.apply("event", ev(0, -1), 1.0)
    m.apply("event", ev(4, 2), 1.0)  # 1..3 missing: 2 is this one's predecessor
    assert m.has_gap() and m.contiguous == 0 and m.missing() == [(2, 4)]
    out = m.apply_history({"v": 1, "type": "backfill", "case_id": "C", "events": [ev(2, 0), ev(0, -1)],
                           "last": True}, 2.0)
    assert not m.has_gap() and m.contiguous == 4 and sorted(m.events) == [0, 2, 4]
    # what only the backfill brought reaches the browsers like a live event (a duplicate does not)
    assert [(d["kind"], d["data"].get("seq")) for d in out] == [("event", 2), ("backfilled", None)]
    m.apply("event", ev(4, 2), 1.0)  # a duplicate changes nothing
    assert len(m.events) == 3
    assert m.apply("event", {**ev(5, 4), "seq": "5"}, 1.0) == [] and m.refused == 1
    m.apply("messages", {"v": 1, "case_id": "C", "messages": [{"id": "m1", "text": "case C"}]}, 2.0)
    assert m.messages["messages"][0]["text"] == "case C"
    # the inbox of the next case may come before its first event: kept for it
    m.apply("messages", {"v": 1, "case_id": "D", "messages": []}, 2.5)
    assert m.messages["case_id"] == "C"
    # a new case: everything case-scoped starts empty
    out = m.apply("event", ev(0, -1, case="D", kind="case_opened"), 3.0)
    assert out[0]["kind"] == "case" and m.case_id == "D" and list(m.events) == [0]
    assert m.messages == {"v": 1, "case_id": "D", "messages": []}
    assert m.state is None and ("state", None) in [(d["kind"], d["data"]) for d in out]  # C's steps and values
    assert m.apply("event", ev(6, 5, case="C"), 3.0) == []  # a late event of the old case
    m.apply("event", ev(0, -1, case="E", kind="case_opened"), 4.0)
    assert m.messages is None  # nothing came for E


def test_the_model_computes_percent_of_the_baseline_in_force():
    m = OrModel("or-1")
    m.apply("state", {"v": 1, "case_id": "C", "state": {}}, 1.0)
    base = {**ev(1, -1, kind="rule_event"), "side": "L", "site": "VAGUS",
            "detail": {"kind": "baseline_set", "stimulus_index": 20, "detail": {"amplitude_uV": 500.0,
                                                                                "latency_ms": 8.0, "source": "APS"}}}
    m.apply("event", base, 1.0)
    meas = {"v": 1, "case_id": "C", "side": "L", "site": "VAGUS", "source": "APS", "valid": True,
            "amplitude_uV": 250.0, "latency_ms": 8.8}
    m.apply("measurement", {**meas, "index": 10}, 1.0)
    m.apply("measurement", {**meas, "index": 30}, 1.0)
    assert m.measurements[10]["amplitude_pct"] is None
    assert m.measurements[30]["amplitude_pct"] == 50.0 and m.measurements[30]["latency_pct"] == 110.0
    assert m.tile(2.0)["trend"]["L"]["amplitude_pct"] == [None, 50.0]


def test_remote_settings_are_checked_together(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    base = {"remote.enabled": True, "remote.password_file": str(pw)}
    cfg = RemoteConfig.from_settings(Settings(base))
    assert cfg.password == "secret" and cfg.broker == BrokerAddress("localhost", 8883, True)
    for extra, words in (({"remote.password_file": ""}, "needs credentials"),
                         ({"remote.tls_cert": "/etc/x.crt"}, "give both"),
                         ({"remote.password_file": str(tmp_path / "none")}, "no such file"),
                         ({"remote.broker_url": "mqtt://localhost", "remote.tls_ca": str(pw)}, "not mqtts")):
        with pytest.raises(RemoteConfigError, match=words):
            RemoteConfig.from_settings(Settings({**base, **extra}))
    with pytest.raises(RemoteConfigError, match="needs TLS"):
        BrokerAddress.parse("mqtt://broker.example")
    with pytest.raises(Exception, match="remote.broker_url"):
        Settings({"remote.broker_url": "mqtt://10.0.0.1:1883"})
