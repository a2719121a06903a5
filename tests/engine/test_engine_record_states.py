"""Monitoring never depends on the record, in one process: a stalled disk, a full disk with its
reserve, damaged journals at start-up, a damaged open case. Every test checks that the engine
keeps measuring and alarming, and that what it calls recorded is on the disk.

(The same from the outside, with real ``lnm engine`` processes, tmpfs and kill -9:
``test_engine_record_abuse.py``.)"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from app.engine.resume import resume_open_case
from app.engine.writer import JournalWriter
from app.record.journal import Journal, open_for_engine
from engine_testkit import stepped
from firmware_bridge.clock import ManualClock
from waiting import wait_until


def _start(s, **kw):
    s.run_for(0.5)
    return s.must("case.start", patient_id="P1", planned_sides=["L"], **kw)["case_id"]


def _probe_on_nerve(s, rate=30.0):
    s.must("probe.site", site="RLN", side="L")
    s.must("stim.set", output="probe", rate_hz=rate)
    s.board.control("probe", contact="nerve", site="RLN", side="L")
    s.must("stim.output", output="probe", on=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- a stalled disk


class _StallingJournal:
    """A real journal whose writes block while ``gate`` is clear (a disk that stops answering)."""

    def __init__(self, journal: Journal) -> None:
        self._j = journal
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()

    def _wait(self) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(60)

    def append(self, *a, **kw):
        self._wait()
        return self._j.append(*a, **kw)

    def append_many(self, *a, **kw):
        self._wait()
        return self._j.append_many(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._j, name)


def test_a_stalled_disk_never_holds_up_measuring_or_alarming(tmp_path):
    journal = _StallingJournal(Journal(tmp_path / "journal.db"))
    clock = ManualClock()
    writer = JournalWriter(journal, threaded=True, now=clock.now)  # waiting times on the engine's clock
    s = stepped(journal=journal, monitor_kwargs={"writer": writer}, clock=clock)
    mon = s.monitor
    sounded = []
    sound = mon.outputs.alarm_state
    mon.outputs.alarm_state = lambda st: (sounded.append((s.clock.now(), st.sounding_id)), sound(st))[-1]
    writer.start()
    try:
        case_id = _start(s)
        _probe_on_nerve(s)
        s.run_for(0.5)
        assert wait_until(lambda: writer.idle(), 10)
        assert mon.last["L"]["response"]
        journal.gate.clear()  # the disk stops answering
        s.run_for(0.2)
        assert journal.blocked.wait(10)  # the writer is stuck inside a journal write
        n0 = mon.counters["stimuli"]
        before = mon.clock.now()
        s.board.control("probe", contact="tissue")  # -> loss of signal within two stimuli
        s.run_for(0.3)
        assert journal.blocked.is_set() and not journal.gate.is_set()  # still stuck
        los = [t for t, sid in sounded if sid and sid.startswith("loss_of_signal")]
        assert los, "the loss-of-signal alarm never reached the outputs while the disk was stuck"
        assert los[0] - before <= 0.15  # two stimuli at 30 Hz, measured on the engine's own clock
        assert mon.counters["stimuli"] >= n0 + 8  # still measuring
        assert any(a["kind"] == "loss_of_signal" for a in mon.alarms_json()["active"])
        # an operator's note is accepted but not yet recorded, and says so
        reply = s.command("note.add", text="during the stall")
        assert reply["ok"] and reply["recorded"] is False and "not yet recorded" in reply["record"]
        stalled_ticket = mon.reply_ticket
        s.run_for(2.5)
        rec = mon.state_snapshot()["recording"]
        assert rec["state"] == "queued" and rec["queued"] > 0
        assert any(a["kind"] == "storage_problem" for a in mon.alarms_json()["active"])
        journal.gate.set()  # the disk answers again: everything follows, in order
        assert wait_until(lambda: writer.idle(), 20)
        s.run_for(0.1)
        assert mon.ledger.outcome(stalled_ticket) == "durable"
        assert mon.state_snapshot()["recording"]["state"] == "recording"
        s.must("case.close")
        assert wait_until(lambda: writer.idle(), 20)
    finally:
        journal.gate.set()
        writer.close(5)
    with Journal(tmp_path / "journal.db", readonly=True) as j:
        assert j.verify(case_id).ok
        idx = [e.payload["index"] for e in j.entries(case_id, kinds=["stimulus"], blobs=False)]
        assert idx == list(range(len(idx))) and len(idx) >= mon.counters["stimuli"] - 1
        notes = [e.payload["text"] for e in j.entries(case_id, kinds=["note"], blobs=False)]
        assert notes == ["during the stall"]
        assert any(e.payload.get("kind") == "loss_of_signal" for e in j.entries(case_id, kinds=["rule_event"]))


# ----------------------------------------------------------------------------- a full disk and its reserve


class _PagesReserve:
    """The reserve, for a journal whose 'disk' is its page limit: releasing it gives pages."""

    def __init__(self, journal: Journal, pages: int) -> None:
        self.j, self.pages, self.size, self.released = journal, pages, pages * 8192, False
        self.path = Path(journal.path).with_name("journal.reserve")

    @property
    def present(self) -> bool:
        return not self.released

    def free_bytes(self) -> int:
        c = self.j.conn
        used, limit = c.execute("PRAGMA page_count").fetchone()[0], c.execute("PRAGMA max_page_count").fetchone()[0]
        return (limit - used) * 8192

    def ensure(self, margin: int = 0) -> bool:
        return self.present

    def release(self) -> bool:
        if self.released:
            return False
        self.released = True
        limit = self.j.conn.execute("PRAGMA max_page_count").fetchone()[0]
        self.j.conn.execute(f"PRAGMA max_page_count={limit + self.pages}")
        return True


def test_a_full_disk_drops_raw_emg_then_waveforms_never_the_essentials(tmp_path):
    journal = Journal(tmp_path / "journal.db", retry_interval_s=0.2)
    s = stepped(journal=journal)
    mon = s.monitor
    writer = mon.ledger.writer
    writer.reserve = _PagesReserve(journal, pages=400)
    writer.low_free_bytes = 600 * 8192
    writer.check_s = 0.5
    case_id = _start(s)
    _probe_on_nerve(s, rate=10.0)
    s.run_for(2.0)
    pages = journal.conn.execute("PRAGMA page_count").fetchone()[0]
    journal.conn.execute(f"PRAGMA max_page_count={pages + 150}")  # less free than an hour of full recording
    s.run_for(1.0)
    assert mon.state_snapshot()["recording"]["level"] == 1  # the raw EMG goes first
    assert mon.state_snapshot()["recording"]["state"] == "reduced"
    n_stim = mon.counters["stimuli"]
    s.run_for(60.0)  # the waveforms fill the rest: the disk is full, the reserve is released
    rec = mon.state_snapshot()["recording"]
    assert rec["level"] == 2 and writer.reserve.released
    assert rec["not_recorded"]["emg_block"] > 0 and rec["not_recorded"]["waveforms"] > 0
    assert "STORAGE FULL" in rec["message"]
    assert mon.counters["stimuli"] > n_stim + 500  # measuring all along
    reply = s.command("note.add", text="written into the reserve")
    assert reply["recorded"] is True  # the essentials still go to the disk
    s.board.control("probe", contact="tissue")
    s.run_for(1.0)
    assert any(a["kind"] == "loss_of_signal" for a in mon.alarms_json()["active"])
    s.must("stim.output", output="probe", on=False)
    s.must("case.close")
    assert writer.idle()
    stims = list(journal.entries(case_id, kinds=["stimulus"], blobs=True))
    assert [e.payload["index"] for e in stims] == list(range(mon.counters["stimuli"]))  # every measurement
    stripped = [e for e in stims if "waveform_not_recorded" in e.payload]
    assert stripped and all(e.blob is None and e.payload["amplitude_uV"] is not None or not e.payload["valid"]
                            or not e.payload["response"] for e in stripped)
    kinds = {e.kind for e in journal.entries(case_id, blobs=False)}
    assert {"rule_event", "alarm", "note", "operator", "storage", "case_closed"} <= kinds
    dropped = [e.payload for e in journal.entries(case_id, kinds=["storage"]) if e.payload["event"] == "not_recorded"]
    assert dropped and dropped[-1]["dropped"]["emg_block"] > 0
    assert journal.verify(case_id).ok


# ----------------------------------------------------------------------------- damaged journals at start-up


def _a_case(path: Path, close: bool, seconds: float = 6.0) -> tuple[str, int]:
    s = stepped(journal=Journal(path), fake_analysis=True)
    case_id = _start(s)
    _probe_on_nerve(s, rate=10.0)
    s.run_for(seconds)
    s.must("stim.output", output="probe", on=False)
    s.run_for(0.2)
    n = s.monitor.counters["stimuli"]
    if close:
        s.must("case.close")
    s.monitor.journal.close()  # (or the process dies here)
    return case_id, n


def _flip_payload_byte(path: Path, case_id: str, seq: int) -> None:
    """Change one byte of one entry's payload in the file itself (as a failing card would)."""
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        payload = c.execute("SELECT payload FROM entries WHERE case_id=? AND seq=?", (case_id, seq)).fetchone()[0]
    raw = bytearray(path.read_bytes())
    at = raw.find(payload.encode())
    assert at > 0
    i = at + payload.index('"') + 1
    raw[i] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_damaged_open_case_resumes_what_verifies_and_names_the_rest(tmp_path):
    path = tmp_path / "journal.db"
    case_id, n = _a_case(path, close=False)
    with Journal(path, readonly=True) as j:
        stims = [e.seq for e in j.entries(case_id, kinds=["stimulus"], blobs=False)]
        total = sum(1 for _ in j.entries(case_id, blobs=False))
    bad = stims[len(stims) // 2]
    _flip_payload_byte(path, case_id, bad)
    opened = open_for_engine(tmp_path)  # the file itself is sound
    assert opened.state == "recording"
    s2 = stepped(journal=opened.journal, fake_analysis=True)
    assert resume_open_case(s2.monitor, opened.journal) == case_id
    m2 = s2.monitor
    alarm = next(a for a in m2.alarms_json()["active"] if a["id"] == "storage_problem:resume")
    assert f"{total - bad} entries from entry {bad} on could not be used" in alarm["message"]
    assert m2.case_resumed and m2.case_id == case_id
    s2.run_for(1.0)
    _probe_on_nerve(s2, rate=10.0)
    s2.run_for(1.0)
    assert m2.last["L"]["response"]  # monitoring goes on
    s2.must("case.close")
    v = opened.journal.verify(case_id)
    assert not v.ok and v.seq == bad  # the damage is still there for service to see


def test_a_case_whose_opening_is_damaged_is_not_resumed_and_monitoring_starts_afresh(tmp_path):
    path = tmp_path / "journal.db"
    case_id, _n = _a_case(path, close=False)
    _flip_payload_byte(path, case_id, 0)
    opened = open_for_engine(tmp_path)
    s2 = stepped(journal=opened.journal, fake_analysis=True)
    assert resume_open_case(s2.monitor, opened.journal) is None
    alarm = next(a for a in s2.monitor.alarms_json()["active"] if a["id"] == "storage_problem:resume")
    assert case_id in alarm["message"] and "could not be resumed" in alarm["message"]
    assert opened.journal.find_open_case() is None  # closed as not resumed: not tried again at every start
    new_case = _start(s2)
    assert new_case != case_id


def test_a_damaged_closed_case_does_not_concern_start_up(tmp_path):
    path = tmp_path / "journal.db"
    case_id, _n = _a_case(path, close=True)
    _flip_payload_byte(path, case_id, 5)
    opened = open_for_engine(tmp_path)
    assert opened.state == "recording"
    listed = {c["case_id"]: c for c in opened.journal.cases()}
    assert case_id in listed
    assert not opened.journal.verify(case_id).ok
    opened.journal.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "cut_header", "not_a_journal"])
def test_a_journal_file_that_cannot_be_used_is_set_aside_untouched_and_a_new_one_started(tmp_path, damage):
    path = tmp_path / "journal.db"
    _a_case(path, close=False, seconds=20.0)
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) * 2 // 5])
    elif damage == "cut_header":
        path.write_bytes(raw[:60])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 1000)
    else:
        path.unlink()
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE notes (x TEXT)")
    before = _sha(path)
    opened = open_for_engine(tmp_path)
    assert opened.state == "new_journal" and opened.journal is not None
    assert opened.set_aside is not None and _sha(opened.set_aside) == before  # kept, byte for byte
    assert opened.set_aside.name in opened.message and "set aside" in opened.message
    s = stepped(journal=opened.journal, fake_analysis=True)
    assert resume_open_case(s.monitor, opened.journal) is None
    case_id = _start(s)
    _probe_on_nerve(s)
    s.run_for(0.5)
    assert s.monitor.last["L"]["response"]
    s.must("case.close")
    assert opened.journal.verify(case_id).ok
    opened.journal.close()
    again = open_for_engine(tmp_path)  # the next start finds a sound journal
    assert again.state == "recording"
    again.journal.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="chattr +i needs root")
def test_a_read_only_journal_file_records_beside_it_and_resumes_there(tmp_path):
    import subprocess

    path = tmp_path / "journal.db"
    _a_case(path, close=True)
    before = _sha(path)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        opened = open_for_engine(tmp_path)
        assert opened.state == "new_journal" and opened.journal.path.name.startswith("journal-")
        assert "kept untouched" in opened.message
        s = stepped(journal=opened.journal, fake_analysis=True)
        case_id = _start(s)
        s.run_for(1.0)
        opened.journal.close()  # the engine dies with the case open
        again = open_for_engine(tmp_path)  # the next start uses the same new journal: the case resumes
        assert again.journal.path == opened.journal.path
        s2 = stepped(journal=again.journal, fake_analysis=True)
        assert resume_open_case(s2.monitor, again.journal) == case_id
        again.journal.close()
        assert _sha(path) == before
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_nothing_writable_monitors_without_a_record_and_says_so(tmp_path):
    folder = tmp_path / "data"
    folder.write_text("a file where the data folder should be")
    opened = open_for_engine(folder)
    assert opened.state == "not_recording" and opened.journal is None
    writer = JournalWriter(None, start_note=(opened.state, opened.message))
    s = stepped(monitor_kwargs={"writer": writer})
    case_id = _start(s)
    _probe_on_nerve(s)
    s.run_for(0.5)
    mon = s.monitor
    assert mon.last["L"]["response"] and case_id
    rec = mon.state_snapshot()["recording"]
    assert rec["state"] == "not_recording" and "NOT RECORDING" in rec["message"]
    assert any(a["kind"] == "storage_problem" and "NOT RECORDING" in a["message"]
               for a in mon.alarms_json()["active"])
    reply = s.command("note.add", text="not kept")
    assert reply["ok"] and reply["recorded"] is False and "NOT recorded" in reply["record"]
    s.board.control("probe", contact="tissue")
    s.run_for(0.5)
    assert any(a["kind"] == "loss_of_signal" for a in mon.alarms_json()["active"])


def test_the_writer_waits_in_memory_while_the_journal_fails_and_writes_in_order_after(tmp_path):
    """The journal's own failure (a full page limit): no entry is lost or reordered."""
    journal = Journal(tmp_path / "journal.db", retry_interval_s=0.5)
    s = stepped(journal=journal, fake_analysis=True)
    case_id = _start(s)
    _probe_on_nerve(s, rate=10.0)
    s.run_for(1.0)
    pages = journal.conn.execute("PRAGMA page_count").fetchone()[0]
    journal.conn.execute(f"PRAGMA max_page_count={pages}")
    s.run_for(3.0)
    rec = s.monitor.state_snapshot()["recording"]
    assert rec["state"] == "queued" and rec["queued"] > 10
    reply = s.command("note.add", text="while full")
    assert reply["recorded"] is False
    ticket = s.monitor.reply_ticket
    journal.conn.execute("PRAGMA max_page_count=1073741823")
    s.run_for(2.0)
    assert s.monitor.ledger.outcome(ticket) == "durable"
    assert s.monitor.state_snapshot()["recording"]["state"] == "recording"
    idx = [e.payload["index"] for e in journal.entries(case_id, kinds=["stimulus"], blobs=False)]
    assert idx == list(range(s.monitor.counters["stimuli"]))
    assert journal.verify(case_id).ok
