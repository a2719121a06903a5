"""The record from the outside, as a clumsy user and a hostile tester use it: real ``lnm``
processes pointed at the wrong files, two engines on one data folder, entries and whole
cases removed behind the journal's back, exports aimed at system folders and through
links, bad configuration files, retention. Nothing may be overwritten, nothing removed
may go unreported, and every refusal is exit status 2 with one line naming the path."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.model import Measurement, Side, Site, Source, Stimulus
from app.record import Journal
from app.record import entries as E
from app.record.chain import entry_hash, sha256_hex
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CASE = {"patient_id": "PSN-9", "planned_sides": ["L"]}


def lnm(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_journal(path: Path, cases: tuple[str, ...] = ("CASE-A", "CASE-B", "CASE-C"), leave_open: bool = False) -> Path:
    rng = np.random.default_rng(1)
    with Journal(path) as j:
        for n, cid in enumerate(cases):
            j.open_case({**CASE, "case_id": cid})
            for i in range(6):
                stim = Stimulus(i, float(i), Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)
                m = Measurement(stim, "EMG L", True, None, True, 500.0 + i, 7.9, 7.0)
                j.append(cid, "stimulus", *E.stimulus(m, rng.normal(0, 30, (2, 1200)), 20000, 200), t_s=float(i))
                j.append(cid, "note", {"text": f"note {i}"}, t_s=i + 0.5)
            if not (leave_open and n == len(cases) - 1):
                j.close_case(cid)
    return path


def raw(path: Path) -> sqlite3.Connection:
    """What someone with the file and the sqlite3 shell can do."""
    conn = sqlite3.connect(path)
    for name in ("entries_no_update", "entries_no_delete", "case_index_no_update", "case_index_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn


# ----------------------------------------------------------------------------- two engines


def test_a_second_engine_on_the_same_data_folder_refuses_naming_the_pid(tmp_path):
    from app.api.client import EngineClient

    data = tmp_path / "data"
    log = open(tmp_path / "first.log", "w+")
    first = subprocess.Popen([sys.executable, "-m", "app.cli", "engine", "--board", "sim://?seed=3",
                              "--socket", str(tmp_path / "one.sock"), "--data", str(data)],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = EngineClient(tmp_path / "one.sock", name="test", timeout_s=5.0)
        assert wait_until(lambda: client.connect() is not None, 30, interval=0.1, ignore=(OSError,)), log.read()
        case_id = client.call("case.start", patient_id="P-1", planned_sides=["L"])["case_id"]
        second = lnm("engine", "--board", "sim://?seed=4", "--socket", str(tmp_path / "two.sock"), "--data", str(data),
                     timeout=60)
        assert second.returncode == 2
        line = one_line(second)
        assert f"PID {first.pid}" in line and str(data) in line
        assert not (tmp_path / "two.sock").exists()
        assert first.poll() is None  # the first engine runs on, with its case
        assert client.call("state.get")["case"]["case_id"] == case_id
        client.close()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
        log.close()
    assert first.returncode == 0
    # the lock went with the process: a new engine can start (and resumes the case)
    again = subprocess.Popen([sys.executable, "-m", "app.cli", "engine", "--board", "sim://?seed=5",
                              "--socket", str(tmp_path / "three.sock"), "--data", str(data)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (tmp_path / "three.sock").exists() or again.poll() is not None, 30)
        assert again.poll() is None
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(30)


def test_the_data_lock_is_exclusive_within_one_process_too(tmp_path):
    from app.record.lock import DataFolderBusy, DataFolderLock

    with DataFolderLock(tmp_path) as held:
        with pytest.raises(DataFolderBusy, match=f"PID {os.getpid()}") as exc:
            DataFolderLock(tmp_path).acquire()
        assert exc.value.pid == os.getpid() and held.held
    DataFolderLock(tmp_path).acquire().release()  # free again


# ----------------------------------------------------------------------------- clobbering


def test_engine_socket_on_the_journal_is_refused_and_the_journal_kept(tmp_path):
    data = tmp_path / "data"
    journal = make_journal(data / "journal.db")
    before = digest(journal)
    for target in (journal, data):  # a file, and a folder
        r = lnm("engine", "--board", "sim://?seed=1", "--socket", str(target), "--data", str(data), timeout=60)
        assert r.returncode == 2
        line = one_line(r)
        assert str(target) in line and "not a socket" in line
    assert digest(journal) == before
    assert lnm("cases", "--journal", str(journal)).returncode == 0


def test_report_outputs_never_replace_the_journal_or_foreign_files(tmp_path):
    journal = make_journal(tmp_path / "journal.db")
    before = digest(journal)
    for opt in ("--json", "--out", "--edf"):
        r = lnm("report", "last", "--journal", str(journal), opt, str(journal))
        assert r.returncode == 2 and str(journal) in one_line(r) and "journal" in one_line(r)
        r = lnm("report", "last", "--journal", str(journal), opt, str(journal), "--force")
        assert r.returncode == 2
    assert digest(journal) == before
    other = make_journal(tmp_path / "other.db", ("X",))
    r = lnm("report", "last", "--journal", str(journal), "--json", str(other), "--force")
    assert r.returncode == 2 and "SQLite" in one_line(r)
    link = tmp_path / "link.json"
    link.symlink_to(journal)
    r = lnm("report", "last", "--journal", str(journal), "--json", str(link))
    assert r.returncode == 2 and "journal" in one_line(r)
    notes = tmp_path / "notes.txt"
    notes.write_text("the surgeon's own notes\n")
    r = lnm("report", "last", "--journal", str(journal), "--json", str(notes))
    assert r.returncode == 2 and "not touched" in one_line(r)
    r = lnm("report", "last", "--journal", str(journal), "--json", str(notes), "--force")
    assert r.returncode == 2  # --force replaces only a file of the same kind
    assert notes.read_text() == "the surgeon's own notes\n"
    r = lnm("report", "last", "--journal", str(journal), "--json", str(tmp_path))
    assert r.returncode == 2 and "folder" in one_line(r)
    foreign = tmp_path / "foreign.pdf"
    foreign.write_bytes(b"%PDF-1.4\n% someone else's PDF\n")
    r = lnm("report", "last", "--journal", str(journal), "--out", str(foreign))
    assert r.returncode == 2 and "--force" in one_line(r)
    assert lnm("report", "last", "--journal", str(journal), "--out", str(foreign), "--force").returncode == 0
    assert b"/Author (LNM)" in foreign.read_bytes()
    # LNM's own outputs are written again without --force
    assert lnm("report", "last", "--journal", str(journal), "--out", str(foreign), "--json",
               str(tmp_path / "case.json")).returncode == 0
    assert lnm("report", "last", "--journal", str(journal), "--out", str(foreign), "--json",
               str(tmp_path / "case.json")).returncode == 0
    r = lnm("report", "last", "--journal", str(journal), "--out", str(tmp_path / "same"), "--json",
            str(tmp_path / "same"))
    assert r.returncode == 2 and "both" in one_line(r)


def config_dir(tmp_path: Path, roots: str) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(exist_ok=True)
    (cfg / "default.toml").write_text(f'[export]\nmedia_roots = "{roots}"\n')
    return cfg


def test_export_to_a_system_folder_or_through_a_link_is_refused(tmp_path):
    journal = make_journal(tmp_path / "journal.db")
    media = tmp_path / "media"
    (media / "stick").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (media / "link").symlink_to(outside)
    cfg = config_dir(tmp_path, str(media))
    env = {"LNM_EXPORT_DIR": ""}
    before = set(os.listdir("/etc"))
    for target in ("/etc", str(media), str(media / "link"), str(media / "stick" / ".." / ".." / "outside")):
        r = lnm("export", "last", "--journal", str(journal), "--config", str(cfg), "--to", target, env=env)
        assert r.returncode == 2, (target, r.stdout, r.stderr)
        assert target in r.stderr.splitlines()[0] and "Traceback" not in r.stderr
    assert set(os.listdir("/etc")) == before and not any(outside.iterdir())
    r = lnm("export", "last", "--journal", str(journal), "--config", str(cfg), "--to", str(media / "stick"), env=env)
    assert r.returncode == 0, r.stderr
    assert (media / "stick" / "LNM-CASE-C" / "case.json").is_file()
    # the default roots (/media, /mnt, /run/media) keep /tmp out as well
    r = lnm("export", "last", "--journal", str(journal), "--to", str(media / "stick"), env=env)
    assert r.returncode == 2 and "export.media_roots" in r.stderr


def test_a_planted_link_inside_the_export_folder_is_not_followed(tmp_path):
    from app.record.usb import UsbError, export_case

    journal = make_journal(tmp_path / "journal.db", ("CASE-A",))
    media = tmp_path / "media"
    stick = media / "stick"
    stick.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (stick / "LNM-CASE-A").symlink_to(victim)  # an existing name that is a link: a new folder is made instead
    with Journal(journal, readonly=True) as j:
        res = export_case(j, "CASE-A", target=stick, roots=[media], env={})
    assert res.folder.endswith("LNM-CASE-A-2") and not any(victim.iterdir())
    (media / "stick-link").symlink_to(stick)
    with Journal(journal, readonly=True) as j, pytest.raises(UsbError, match="symbolic link"):
        export_case(j, "CASE-A", target=media / "stick-link", roots=[media], env={})


# ----------------------------------------------------------------------------- removed entries and cases


def test_removed_first_entry_tail_and_whole_case_are_reported(tmp_path):
    journal = make_journal(tmp_path / "journal.db")
    assert lnm("verify", "--journal", str(journal)).returncode == 0
    conn = raw(journal)
    conn.execute("DELETE FROM entries WHERE case_id='CASE-A' AND seq=0")
    conn.execute("DELETE FROM entries WHERE case_id='CASE-B' AND seq >= 10")  # its tail, case_closed included
    conn.execute("DELETE FROM entries WHERE case_id='CASE-C'")
    conn.commit()
    conn.close()
    r = lnm("verify", "--journal", str(journal))
    assert r.returncode == 1
    assert "CASE-A" in r.stderr and "first entry" in r.stderr
    assert "CASE-B" in r.stderr and "after seq 9 were removed" in r.stderr
    assert "CASE-C" in r.stderr and "all its entries were removed" in r.stderr
    r = lnm("cases", "--journal", str(journal))
    assert r.returncode == 1
    rows = {ln.split()[0]: ln.split()[-1] for ln in r.stdout.splitlines()[1:]}
    assert rows == {"CASE-A": "DAMAGED", "CASE-B": "DAMAGED", "CASE-C": "MISSING"}
    assert r.stderr.count("WARNING") == 3
    for case, words in (("CASE-A", "first entry"), ("CASE-B", "removed"), ("CASE-C", "removed")):
        r = lnm("verify", case, "--journal", str(journal))
        assert r.returncode == 1 and words in r.stderr


def test_an_open_case_is_pinned_when_the_engine_stops_and_its_unpinned_tail_is_named(tmp_path):
    journal = make_journal(tmp_path / "journal.db", ("CASE-A", "CASE-OPEN"), leave_open=True)
    r = lnm("verify", "CASE-OPEN", "--journal", str(journal))
    assert r.returncode == 0 and "open" in r.stdout
    conn = raw(journal)
    conn.execute("DELETE FROM entries WHERE case_id='CASE-OPEN' AND seq >= 8")
    conn.commit()
    conn.close()
    r = lnm("verify", "CASE-OPEN", "--journal", str(journal))
    assert r.returncode == 1 and "after seq 7 were removed" in r.stderr
    # entries written after the newest pin are named as not yet pinned
    with Journal(tmp_path / "fresh.db", pin_interval_s=3600.0) as j:
        cid = j.open_case({**CASE, "case_id": "LIVE"})
        for i in range(3):
            j.append(cid, "note", {"text": f"n{i}"})
        result = j.verify(cid)
        assert result.ok and any("not yet pinned" in n for n in result.notes)


def test_a_case_rewritten_from_the_start_is_found_by_the_index_and_the_exported_document(tmp_path):
    journal = make_journal(tmp_path / "journal.db", ("CASE-A",))
    doc = tmp_path / "case.json"
    assert lnm("report", "CASE-A", "--journal", str(journal), "--json", str(doc)).returncode == 0
    assert json.loads(doc.read_text())["journal"]["index"]["hash"]
    r = lnm("verify", "--journal", str(journal), "--against", str(doc))
    assert r.returncode == 0 and "matches the document" in r.stdout
    # the attacker changes one note and recomputes every hash of the case from the start
    conn = raw(journal)
    rows = conn.execute("SELECT seq, kind, t_s, wall, payload, blob FROM entries WHERE case_id='CASE-A' "
                        "ORDER BY seq").fetchall()
    prev = "0" * 64
    for seq, kind, t_s, wall, payload, blob in rows:
        if kind == "note" and "note 3" in payload:
            payload = payload.replace("note 3", "note 3 (nothing happened)")
        psha = sha256_hex(payload.encode())
        bsha = sha256_hex(blob) if blob is not None else None
        h = entry_hash("CASE-A", seq, kind, t_s, wall, psha, bsha, len(blob) if blob is not None else None, prev)
        conn.execute("UPDATE entries SET payload=?, payload_sha256=?, prev_hash=?, hash=? WHERE case_id='CASE-A' "
                     "AND seq=?", (payload, psha, prev, h, seq))
        prev = h
    conn.commit()
    conn.close()
    r = lnm("verify", "CASE-A", "--journal", str(journal))
    assert r.returncode == 1 and "case index" in r.stderr
    r = lnm("verify", "--journal", str(journal), "--against", str(doc))
    assert r.returncode == 1 and "does not match the document" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    r = lnm("verify", "--journal", str(journal), "--against", str(bad))
    assert r.returncode == 2 and str(bad) in one_line(r)
    r = lnm("verify", "--journal", str(journal), "--against", str(tmp_path))
    assert r.returncode == 2 and "folder" in one_line(r)


def test_against_finds_a_removed_tail_even_with_the_index_rewritten(tmp_path):
    journal = make_journal(tmp_path / "journal.db", ("CASE-A", "CASE-B"))
    doc = tmp_path / "case.json"
    assert lnm("report", "CASE-A", "--journal", str(journal), "--json", str(doc)).returncode == 0
    conn = raw(journal)
    conn.execute("DELETE FROM entries WHERE case_id='CASE-A' AND seq >= 5")
    conn.execute("DELETE FROM case_index")  # and every trace in the index
    conn.execute("DROP TABLE case_index")
    conn.execute("UPDATE journal_meta SET value='lnm-journal/1' WHERE key='format'")
    conn.commit()
    conn.close()
    r = lnm("verify", "--journal", str(journal), "--against", str(doc))
    assert r.returncode == 1 and "no longer in the journal" in r.stderr


# ----------------------------------------------------------------------------- older journals


def test_an_lnm_journal_1_file_is_read_and_given_an_index_when_opened_for_writing(tmp_path):
    journal = make_journal(tmp_path / "journal.db", ("OLD-1", "OLD-2"))
    conn = raw(journal)
    conn.execute("DROP TABLE case_index")
    conn.execute("DROP TABLE prune_permit")
    conn.execute("UPDATE journal_meta SET value='lnm-journal/1' WHERE key='format'")
    conn.commit()
    conn.close()
    r = lnm("verify", "--journal", str(journal))
    assert r.returncode == 0 and "lnm-journal/1" in r.stdout
    with Journal(journal) as j:  # the engine opening it
        assert j.format == "lnm-journal/2"
        assert [r.event for r in j.index_rows()[0]] == ["adopted", "adopted"]
        j.open_case({**CASE, "case_id": "NEW"})
    r = lnm("verify", "--journal", str(journal))
    assert r.returncode == 0, r.stderr
    conn = raw(journal)
    conn.execute("DELETE FROM entries WHERE case_id='OLD-1' AND seq >= 10")
    conn.commit()
    conn.close()
    assert lnm("verify", "OLD-1", "--journal", str(journal)).returncode == 1


# ----------------------------------------------------------------------------- storage and retention


def test_retention_prunes_only_exported_verified_cases_and_the_chain_still_verifies(tmp_path):
    from app.record.usb import export_case

    journal = make_journal(tmp_path / "journal.db")
    media = tmp_path / "media"
    (media / "stick").mkdir(parents=True)
    with Journal(journal, readonly=True) as j:
        export_case(j, "CASE-A", target=media / "stick", roots=[media], env={})
        export_case(j, "CASE-C", target=media / "stick", roots=[media], env={})
    doc = media / "stick" / "LNM-CASE-A" / "case.json"
    r = lnm("storage", "--journal", str(journal))
    assert r.returncode == 0 and "CASE-B" in r.stdout and "free" in r.stdout and "retention: off" in r.stdout
    # CASE-C changed after its export: not pruned
    conn = raw(journal)
    conn.execute("UPDATE entries SET payload=replace(payload, 'note 2', 'note 2!') WHERE case_id='CASE-C' AND seq=6")
    conn.commit()
    conn.close()
    r = lnm("storage", "--journal", str(journal), "--prune")
    assert r.returncode == 0 and "retention is off" in r.stdout
    r = lnm("storage", "--journal", str(journal), "--prune", "--older-than", "0.0000001")
    verdicts = [ln for ln in r.stdout.splitlines() if ln.startswith("case CASE-")]
    assert any("case CASE-A pruned" in v for v in verdicts) and any("CASE-C not pruned" in v for v in verdicts)
    assert not any("CASE-B" in v for v in verdicts)
    assert r.returncode == 1  # one eligible case was refused
    r = lnm("cases", "--journal", str(journal))
    states = {ln.split()[0]: ln.split()[-1] for ln in r.stdout.splitlines()[1:]}
    assert states["CASE-A"] == "pruned" and states["CASE-B"] == "closed"
    r = lnm("verify", "CASE-A", "--journal", str(journal))
    assert r.returncode == 0 and "pruned" in r.stdout
    r = lnm("verify", "--journal", str(journal), "--against", str(doc))
    assert r.returncode == 0, r.stderr
    r = lnm("verify", "CASE-B", "--journal", str(journal))
    assert r.returncode == 0
    with Journal(journal, readonly=True) as j:
        assert j.conn.execute("SELECT count(*) FROM entries WHERE case_id='CASE-A'").fetchone()[0] == 0
        rows, problem = j.index_rows()
        assert problem is None and rows[-1].event == "pruned" and rows[-1].data["patient_id"] == "PSN-9"
    # a pruned case cannot come back quietly
    conn = raw(journal)
    conn.execute("INSERT INTO entries SELECT 'CASE-A', seq, kind, t_s, wall, payload, payload_sha256, blob, "
                 "blob_sha256, prev_hash, hash FROM entries WHERE case_id='CASE-B' AND seq=0")
    conn.commit()
    conn.close()
    assert lnm("verify", "CASE-A", "--journal", str(journal)).returncode == 1


def test_low_space_before_a_case_is_journaled(tmp_path, monkeypatch):
    from app.record import storage

    monkeypatch.setattr(storage, "free_bytes", lambda journal: 300_000_000)  # 2 h at 150 MB/h
    with Journal(tmp_path / "journal.db") as j:
        cid = j.open_case(CASE)
        assert j.space_warning and "2.0 h" in j.space_warning and "record.min_free_hours" in j.space_warning
        low = [e.payload for e in j.entries(cid, kinds=["storage"])]
        assert low[0]["event"] == "low_space" and low[0]["min_hours"] == 8.0 and low[0]["free_bytes"] == 300_000_000
    with Journal(tmp_path / "roomy.db", min_free_hours=1.0) as j:
        cid = j.open_case(CASE)
        assert j.space_warning is None and not list(j.entries(cid, kinds=["storage"]))


def test_measured_bytes_per_hour_comes_from_closed_cases(tmp_path):
    from app.record.storage import DEFAULT_BYTES_PER_HOUR, measured_bytes_per_hour

    class Clock:
        t = 0.0

        def now(self):
            return self.t

    clock = Clock()
    with Journal(tmp_path / "j.db", clock=clock) as j:
        assert measured_bytes_per_hour(j) == (DEFAULT_BYTES_PER_HOUR, False)
        cid = j.open_case(CASE)
        for _ in range(20):
            j.append(cid, "note", {"text": "x" * 1000})
        clock.t = 600.0
        j.close_case(cid)
        bph, measured = measured_bytes_per_hour(j)
    assert measured and 20_000 * 6 < bph < 60_000 * 6


# ----------------------------------------------------------------------------- bad input


def test_bad_configuration_is_one_line_and_exit_2_for_every_command(tmp_path):
    latin1 = tmp_path / "latin1"
    latin1.mkdir()
    (latin1 / "default.toml").write_bytes(b"# r\xe9glages\n[rules]\nlos_consecutive = 2\n")
    missing = tmp_path / "missing"
    crossed = tmp_path / "crossed"
    crossed.mkdir()
    (crossed / "default.toml").write_text("[link]\nheartbeat_ms = 200\ntimeout_ms = 150\n")
    journal = make_journal(tmp_path / "journal.db", ("CASE-A",))
    for cfg, words in ((latin1, "not UTF-8"), (missing, "not found"), (crossed, "link.heartbeat_ms")):
        for cmd in (["config-check", str(cfg)],
                    ["engine", "--config", str(cfg), "--data", str(tmp_path / "d"), "--socket", str(tmp_path / "s")],
                    ["storage", "--journal", str(journal), "--config", str(cfg)],
                    ["export", "last", "--journal", str(journal), "--config", str(cfg)]):
            r = lnm(*cmd, timeout=60)
            assert r.returncode == 2, (cmd, r.stdout, r.stderr)
            line = one_line(r)
            assert words in line and str(cfg) in line or words in line, (cmd, line)
    assert not (tmp_path / "s").exists()


def test_unreadable_journals_are_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    for path in (folder, garbage, tmp_path / "none.db"):
        for cmd in (["cases"], ["verify"], ["report", "last", "--json", str(tmp_path / "x.json")],
                    ["export", "last"], ["storage"]):
            r = lnm(*cmd, "--journal", str(path))
            assert r.returncode == 2, (cmd, path, r.stderr)
            assert str(path) in one_line(r)
