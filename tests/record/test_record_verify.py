"""Tampering with a stored entry: verify (and ``lnm verify``) finds the first altered entry."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.cli import main
from app.model import Measurement, Side, Site, Source, Stimulus
from app.record import Journal
from app.record import entries as E
from app.record.verify import verify_path

CASE = {"patient_id": "PSN-7", "planned_sides": ["L"]}


@pytest.fixture()
def journal_file(tmp_path):
    path = tmp_path / "j.db"
    with Journal(path) as j:
        cid = j.open_case({**CASE, "case_id": "CASE-1"})
        rng = np.random.default_rng(3)
        for i in range(12):
            stim = Stimulus(i, float(i), Site.VAGUS, Side.L, Source.APS, 1.0, 1.0)
            m = Measurement(stim, "EMG L", True, None, True, 500.0 + i, 7.9, 7.0)
            j.append(cid, "stimulus", *E.stimulus(m, rng.normal(0, 30, (2, 1200)), 20000, 200), t_s=float(i))
            j.append(cid, "note", {"text": f"note {i}"}, t_s=float(i) + 0.5)
        j.close_case(cid)
        other = j.open_case({**CASE, "case_id": "CASE-2"})
        j.append(other, "note", {"text": "other case"})
    return path


def raw(path):
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_update")  # someone with the file and sqlite3 can do this
    conn.execute("DROP TRIGGER entries_no_delete")
    return conn


def seq_of(conn, kind, nth=0):
    return conn.execute("SELECT seq FROM entries WHERE case_id='CASE-1' AND kind=? ORDER BY seq LIMIT 1 OFFSET ?",
                        (kind, nth)).fetchone()[0]


def test_intact_chain_verifies(journal_file, capsys):
    r = verify_path(journal_file, "CASE-1")
    assert r.ok and r.closed and r.entries == 26 and r.last_hash
    assert main(["verify", "CASE-1", "--journal", str(journal_file)]) == 0
    assert "intact" in capsys.readouterr().out


def test_changed_payload_byte_is_found(journal_file, capsys):
    conn = raw(journal_file)
    seq = seq_of(conn, "note", 4)
    text = conn.execute("SELECT payload FROM entries WHERE case_id='CASE-1' AND seq=?", (seq,)).fetchone()[0]
    conn.execute("UPDATE entries SET payload=? WHERE case_id='CASE-1' AND seq=?", (text.replace("4", "5"), seq))
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == seq and r.kind == "note" and "payload changed" in r.problem
    assert main(["verify", "CASE-1", "--journal", str(journal_file)]) == 1
    err = capsys.readouterr().err
    assert f"ALTERED at entry {seq} (note)" in err
    assert verify_path(journal_file, "CASE-2").ok  # the other case is untouched


def test_changed_payload_with_forged_digest_is_found(journal_file):
    import hashlib

    conn = raw(journal_file)
    seq = seq_of(conn, "stimulus", 2)
    text = conn.execute("SELECT payload FROM entries WHERE case_id='CASE-1' AND seq=?", (seq,)).fetchone()[0]
    forged = text.replace('"amplitude_uV":502.0', '"amplitude_uV":902.0')
    assert forged != text
    conn.execute("UPDATE entries SET payload=?, payload_sha256=? WHERE case_id='CASE-1' AND seq=?",
                 (forged, hashlib.sha256(forged.encode()).hexdigest(), seq))
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == seq and r.kind == "stimulus" and "recomputed hash" in r.problem


def test_changed_blob_byte_is_found(journal_file):
    conn = raw(journal_file)
    seq = seq_of(conn, "stimulus", 5)
    blob = bytearray(conn.execute("SELECT blob FROM entries WHERE case_id='CASE-1' AND seq=?", (seq,)).fetchone()[0])
    blob[len(blob) // 2] ^= 0x01
    conn.execute("UPDATE entries SET blob=? WHERE case_id='CASE-1' AND seq=?", (bytes(blob), seq))
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == seq and r.kind == "stimulus" and "blob changed" in r.problem


def test_deleted_entry_is_found(journal_file):
    conn = raw(journal_file)
    conn.execute("DELETE FROM entries WHERE case_id='CASE-1' AND seq=7")
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == 7 and "missing" in r.problem


def test_deleted_and_renumbered_entries_are_found(journal_file):
    conn = raw(journal_file)
    conn.execute("DELETE FROM entries WHERE case_id='CASE-1' AND seq=7")
    conn.execute("UPDATE entries SET seq = seq - 1 WHERE case_id='CASE-1' AND seq > 7")
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == 7


def test_reordered_entries_are_found(journal_file):
    conn = raw(journal_file)
    conn.execute("UPDATE entries SET seq = -1 WHERE case_id='CASE-1' AND seq=9")
    conn.execute("UPDATE entries SET seq = 9 WHERE case_id='CASE-1' AND seq=10")
    conn.execute("UPDATE entries SET seq = 10 WHERE case_id='CASE-1' AND seq=-1")
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == 9 and "out of order" in r.problem


def test_changed_time_and_kind_are_found(journal_file):
    conn = raw(journal_file)
    conn.execute("UPDATE entries SET t_s = t_s + 0.001 WHERE case_id='CASE-1' AND seq=11")
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == 11


def test_inserted_entry_is_found(journal_file):
    conn = raw(journal_file)
    conn.execute("UPDATE entries SET seq = -seq - 1 WHERE case_id='CASE-1' AND seq >= 20")
    conn.execute("UPDATE entries SET seq = -seq WHERE case_id='CASE-1' AND seq < 0")
    row = conn.execute("SELECT * FROM entries WHERE case_id='CASE-1' AND seq=19").fetchone()
    conn.execute("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?)", (row[0], 20) + row[2:])
    conn.commit()
    r = verify_path(journal_file, "CASE-1")
    assert not r.ok and r.seq == 20


def test_unreadable_journal_exits_2(tmp_path, journal_file, capsys):
    assert main(["verify", "CASE-1", "--journal", str(tmp_path / "missing.db")]) == 2
    assert "missing.db" in capsys.readouterr().err
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    assert main(["verify", "CASE-1", "--journal", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "garbage.db" in err and "corrupt" in err
    assert main(["verify", "NO-SUCH-CASE", "--journal", str(journal_file)]) == 2
    assert "NO-SUCH-CASE" in capsys.readouterr().err


def test_corrupt_pages_are_reported_naming_the_file(tmp_path, journal_file, capsys):
    data = bytearray(journal_file.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the SQLite header, destroy every page
    journal_file.write_bytes(bytes(data))
    for name in ("j.db-wal", "j.db-shm"):
        (journal_file.parent / name).unlink(missing_ok=True)
    assert main(["verify", "CASE-1", "--journal", str(journal_file)]) == 2
    assert str(journal_file) in capsys.readouterr().err


def test_cases_lists_open_and_closed(journal_file, capsys):
    assert main(["cases", "--journal", str(journal_file)]) == 0
    out = capsys.readouterr().out
    assert "CASE-1" in out and "CASE-2" in out and "OPEN" in out
    assert main(["cases", "--open", "--journal", str(journal_file)]) == 0
    out = capsys.readouterr().out
    assert "CASE-2" in out and "CASE-1" not in out
