"""The reader's message at the OR, through the engine core (stepped, one thread): journal first,
the inbox stream the touchscreen shows, the chime that is not an alarm, the nurse's
acknowledgement, the case document and report, resume after a crash, a new case starts empty."""

from __future__ import annotations

import sys
from pathlib import Path

from app.engine.inbox import inbox_of, receive
from app.engine.resume import resume_open_case
from app.record.document import build_document
from app.record.journal import Journal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_testkit import stepped  # noqa: E402

MSG = {"id": "m-1", "reader": "anna.rossi", "from": "Dr Anna Rossi", "text": "vagal amplitude 45 %: please release "
       "retraction", "kind": "message", "sent_at": "2026-11-21T10:43:12Z"}


def capture(system):
    got = []
    system.monitor.ledger.sink = lambda stream, msg, sticky: got.append((stream, dict(msg), sticky))
    return got


def played(system):
    return [p.tag for p in system.monitor.outputs.annunciator.audio.played]


def test_message_journaled_first_shown_chimed_acknowledged_and_in_the_report(tmp_path):
    s = stepped(tmp_path, fake_analysis=True)
    s.run_for(0.5)
    case_id = s.must("case.start", patient_id="P-INBOX", planned_sides=["L"])["case_id"]
    got = capture(s)
    alarms_before = [(a.id, a.acknowledged) for a in s.monitor.alarms.state().alarms]
    receive(s.monitor, MSG)
    receive(s.monitor, MSG)  # QoS 1 may deliver twice: shown once
    entries = [e.payload for e in s.monitor.journal.entries(case_id, kinds=["reader_message"], blobs=False)]
    assert len(entries) == 1 and entries[0]["event"] == "received" and entries[0]["reader"] == "anna.rossi"
    inbox = [m for stream, m, sticky in got if stream == "inbox"]
    assert len(inbox) == 1 and inbox[0]["unacknowledged"] == 1 and inbox[0]["case_id"] == case_id
    assert inbox[0]["messages"][0]["from"] == "Dr Anna Rossi"
    assert [m["kind"] for stream, m, _s in got if stream == "events"] == ["reader_message"]
    assert any("message" in name for name in played(s)), played(s)
    # a message is not an alarm, and touches none
    assert [(a.id, a.acknowledged) for a in s.monitor.alarms.state().alarms] == alarms_before
    r = s.command("inbox.ack", message="nope")
    assert not r["ok"] and r["error"]["code"] == "invalid_argument"
    r = s.must("inbox.ack")
    assert r == {"acknowledged": ["m-1"], "unacknowledged": 0}
    assert s.must("inbox.ack") == {"acknowledged": [], "unacknowledged": 0}
    acked = [m for stream, m, _s in got if stream == "inbox"][-1]["messages"][0]
    assert acked["acknowledged"] and acked["acknowledged_by"]
    doc = build_document(s.monitor.journal, case_id, identified=True)
    rm = doc["reader_messages"]
    assert rm[0]["text"].startswith("vagal amplitude") and rm[0]["acknowledged_t_s"] is not None
    assert build_document(s.monitor.journal, case_id)["reader_messages"][0]["from"] == "remote reader"
    from app.record.report import write_pdf

    write_pdf(doc, tmp_path / "r.pdf")
    from pypdf import PdfReader

    text = "".join(page.extract_text() for page in PdfReader(tmp_path / "r.pdf").pages)
    assert "reader's messages" in text and "release retraction" in text


def test_inbox_comes_back_after_a_crash_and_a_new_case_starts_empty(tmp_path):
    path = tmp_path / "journal.db"
    s = stepped(journal=Journal(path), fake_analysis=True)
    s.run_for(0.5)
    case_id = s.must("case.start", patient_id="P-RES", planned_sides=["L"])["case_id"]
    receive(s.monitor, MSG)
    receive(s.monitor, {**MSG, "id": "m-2", "text": "second"})
    s.must("inbox.ack", message="m-1")
    s.monitor.journal.close()  # the engine dies
    s2 = stepped(journal=Journal(path), fake_analysis=True)
    got = capture(s2)
    assert resume_open_case(s2.monitor, s2.monitor.journal) == case_id
    # the resumed case tells the touchscreen at once: the banner is back without a new message
    shown = [m for stream, m, sticky in got if stream == "inbox" and sticky][-1]
    assert shown["case_id"] == case_id and shown["unacknowledged"] == 1
    box = inbox_of(s2.monitor)
    assert box is s2.monitor.case.inbox  # the case owns it
    assert [m["id"] for m in box.waiting()] == ["m-2"] and box.find("m-1")["acknowledged"]
    s2.must("case.close")
    closed = [m for stream, m, _s in got if stream == "inbox"][-1]
    assert closed == {"type": "inbox", "case_id": None, "messages": [], "unacknowledged": 0}
    # between cases: shown, journaled in no case, gone when the next case opens
    receive(s2.monitor, {**MSG, "id": "m-3", "text": "between cases"})
    assert [m["id"] for m in inbox_of(s2.monitor).waiting()] == ["m-3"]
    new_id = s2.must("case.start", patient_id="P-NEXT", planned_sides=["R"])["case_id"]
    assert inbox_of(s2.monitor).messages == []
    opened = [m for stream, m, _s in got if stream == "inbox"][-1]
    assert opened == {"type": "inbox", "case_id": new_id, "messages": [], "unacknowledged": 0}
    assert s2.command("inbox.ack", message="m-3")["error"]["code"] == "invalid_argument"
    assert not list(s2.monitor.journal.entries(new_id, kinds=["reader_message"], blobs=False))
