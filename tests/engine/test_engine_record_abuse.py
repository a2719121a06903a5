"""Monitoring never depends on the record, from the outside: real ``lnm engine`` processes on a
small tmpfs filled to the brim, a read-only data folder, a damaged open case, a truncated
journal, and kill -9 while the disk is full, after which nothing the engine confirmed as
recorded (``recorded: true`` replies, entries it had written) is missing.

The small disk is a tmpfs of a few MB. Root mounts it directly; anyone else runs the test again
in a private user and mount namespace (``unshare -rm``, where the kernel allows it), in which
the mount is theirs and vanishes with the test; where neither works the test is skipped (the
same paths are covered in one process by ``test_engine_record_states.py``)."""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from app.api.client import CommandFailed, EngineUnavailable
from app.record.journal import Journal
from engine_process import EngineProcess
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


@functools.cache
def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ran_elsewhere(request, tmp_path: Path) -> bool:
    """Without root: run this test again in a private user and mount namespace (where it is
    root and may mount a tmpfs) and report its result; True when it ran there.
    (``LNM_TEST_UNSHARE=1`` takes that path as root too.)"""
    if os.geteuid() == 0 and not os.environ.get("LNM_TEST_UNSHARE"):
        return False
    if not _can_unshare():
        pytest.skip("a small tmpfs needs root or unprivileged user namespaces (unshare -rm)")
    base = Path(tempfile.mkdtemp(prefix="lnm-ns-"))  # short: the engine's socket path lies below it
    try:
        r = subprocess.run(["unshare", "-rm", PY, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p",
                            "no:cacheprovider", "--basetemp", str(base / "t"), request.node.nodeid],
                           cwd=ROOT, capture_output=True, text=True, timeout=900,
                           env={k: v for k, v in os.environ.items() if k != "LNM_TEST_UNSHARE"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.returncode == 0, f"in a mount namespace:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    return True


def wait_for(pred, timeout=15.0):
    return wait_until(pred, timeout, interval=0.05, ignore=(EngineUnavailable, CommandFailed, OSError))


class Engine(EngineProcess):
    """A real ``lnm engine`` on the in-process virtual board, its data folder wherever asked."""

    def __init__(self, tmp: Path, data: Path, *extra: str) -> None:
        super().__init__(tmp, "sim://?seed=3", *extra, data=data, start_s=30, board_connected_s=20, stop_s=20)


@pytest.fixture
def cleanup():
    things: list = []
    yield things
    for t in reversed(things):
        t() if callable(t) else t.stop()


def _tmpfs(where: Path, size_mb: float, cleanup: list) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * 1024)}k", "tmpfs", str(where)], check=True)
    cleanup.insert(0, lambda: subprocess.run(["umount", "-l", str(where)], check=False))
    return where


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the brim (a file that takes every free block).

    Unbuffered writes: a buffered file would keep the part that did not fit and raise ENOSPC
    again when it is closed."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512):
            chunk = b"\xa5" * size
            try:
                while os.write(fd, chunk) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    st = os.statvfs(folder)
    assert st.f_bavail * st.f_frsize < 64 * 1024
    return filler


def _monitor(eng: Engine, rate_hz: float = 10.0) -> None:
    eng.call("sim.control", command="probe", args={"contact": "nerve", "site": "RLN", "side": "L"})
    eng.call("probe.site", site="RLN", side="L")
    eng.call("stim.set", output="probe", rate_hz=rate_hz)
    eng.call("stim.output", output="probe", on=True)
    assert wait_for(lambda: (eng.state()["last"].get("L") or {}).get("response"), 15)


def _loss_of_signal(eng: Engine) -> None:
    eng.call("sim.control", command="probe", args={"contact": "tissue"})
    assert wait_for(lambda: any(a["kind"] == "loss_of_signal" for a in eng.state()["alarms"]["active"]), 15)


# ----------------------------------------------------------------------------- the disk full, kill -9


def test_kill_9_while_the_disk_is_full_loses_nothing_confirmed(request, tmp_path, cleanup):
    if ran_elsewhere(request, tmp_path):
        return
    mnt = _tmpfs(tmp_path / "mnt", 40, cleanup)
    data = mnt / "data"
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "6")
    cleanup.append(eng)
    assert wait_for(lambda: (data / "journal.reserve").exists() and (data / "journal.reserve").stat().st_size
                    >= 6_000_000, 20)
    case_id = eng.call("case.start", patient_id="FULL-1", planned_sides=["L"])["case_id"]
    _monitor(eng)
    _fill(mnt)  # the disk is full: the raw EMG and then the waveforms go, the reserve is released
    assert wait_for(lambda: eng.state()["recording"]["level"] == 2, 30), eng.output()
    assert not (data / "journal.reserve").exists()
    confirmed, unconfirmed = [], []
    for i in range(30):
        r = eng.reply("note.add", text=f"note {i}")
        assert r["ok"]
        (confirmed if r.get("recorded") else unconfirmed).append(f"note {i}")
        time.sleep(0.02)
    assert len(confirmed) >= 25, (confirmed, unconfirmed, eng.state()["recording"])
    _loss_of_signal(eng)  # alarms on a full disk, and it is recorded
    st = eng.state()
    assert st["recording"]["state"] == "reduced" and "STORAGE FULL" in st["recording"]["message"]
    assert any(a["kind"] == "storage_problem" for a in st["alarms"]["active"])
    eng.call("stim.output", output="probe", on=False)
    assert wait_for(lambda: eng.state()["recording"]["queued"] == 0, 15)
    stimuli = eng.state()["counters"]["stimuli"]
    eng.kill()  # kill -9, the disk still full
    with Journal(data / "journal.db", readonly=True) as j:
        notes = [e.payload["text"] for e in j.entries(case_id, kinds=["note"], blobs=False)]
        assert set(confirmed) <= set(notes)  # every "recorded: true" is on the disk
        idx = [e.payload["index"] for e in j.entries(case_id, kinds=["stimulus"], blobs=False)]
        assert idx == list(range(stimuli))  # every measurement the engine had written
        kinds = [e.payload.get("kind") for e in j.entries(case_id, kinds=["rule_event"], blobs=False)]
        assert "loss_of_signal" in kinds
        assert j.verify(case_id).ok
    # it starts again on the full disk, resumes the case and monitors
    eng2 = Engine(tmp_path, data, "--storage-reserve-mb", "6")
    cleanup.append(eng2)
    st = eng2.state()
    assert st["case"]["case_id"] == case_id and st["case"]["resumed"]
    _monitor(eng2)
    r = eng2.reply("note.add", text="after the restart")
    assert r["ok"] and "recorded" in r
    assert eng2.stop() == 0


def test_a_full_disk_at_start_still_monitors(request, tmp_path, cleanup):
    if ran_elsewhere(request, tmp_path):
        return
    mnt = _tmpfs(tmp_path / "mnt", 8, cleanup)
    data = mnt / "data"
    data.mkdir()
    _fill(mnt)  # not even room for a journal, and no reserve
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    st = eng.state()
    assert st["recording"]["state"] in ("not_recording", "queued"), st["recording"]
    eng.call("case.start", patient_id="FULL-2", planned_sides=["L"])
    _monitor(eng)
    _loss_of_signal(eng)
    r = eng.reply("note.add", text="nowhere to write")
    assert r["ok"] and r["recorded"] is False and "not" in r["record"].lower()
    assert any(a["kind"] == "storage_problem" for a in eng.state()["alarms"]["active"])
    assert eng.stop() == 0


# ----------------------------------------------------------------------------- read-only


def test_a_read_only_data_folder_monitors_without_recording_and_says_so(request, tmp_path, cleanup):
    if ran_elsewhere(request, tmp_path):
        return
    mnt = _tmpfs(tmp_path / "mnt", 16, cleanup)
    data = mnt / "data"
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    case_id = eng.call("case.start", patient_id="RO-1", planned_sides=["L"])["case_id"]
    eng.call("case.close")
    assert eng.stop() == 0
    before = (data / "journal.db").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    st = eng.state()
    assert st["recording"]["state"] == "not_recording" and "NOT RECORDING" in st["recording"]["message"]
    assert "read-only" in st["recording"]["message"]
    alarm = next(a for a in st["alarms"]["active"] if a["kind"] == "storage_problem")
    assert "NOT RECORDING" in alarm["message"] and "Monitoring and alarms continue" in alarm["message"]
    eng.call("case.start", patient_id="RO-2", planned_sides=["L"])
    _monitor(eng)  # stimulates and measures
    _loss_of_signal(eng)  # and alarms
    r = eng.reply("note.add", text="not kept")
    assert r["ok"] and r["recorded"] is False
    assert eng.stop() == 0
    assert (data / "journal.db").read_bytes() == before
    assert case_id


# ----------------------------------------------------------------------------- damaged journals


def _kill_mid_case(tmp_path: Path, data: Path) -> str:
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    try:
        case_id = eng.call("case.start", patient_id="DMG-1", planned_sides=["L"])["case_id"]
        _monitor(eng)
        first = eng.state()["counters"]["stimuli"]
        assert wait_for(lambda: eng.state()["counters"]["stimuli"] >= first + 10, 15)  # a second of stimuli
        eng.call("stim.output", output="probe", on=False)
        assert wait_for(lambda: eng.state()["recording"]["queued"] == 0, 15)
    finally:
        eng.kill()
    return case_id


def test_a_corrupt_row_in_the_open_case_no_longer_stops_the_engine(tmp_path, cleanup):
    """Once, one corrupted payload in the open case made every start end in a traceback."""
    data = tmp_path / "data"
    case_id = _kill_mid_case(tmp_path, data)
    path = data / "journal.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        seq, payload = c.execute("SELECT seq, payload FROM entries WHERE case_id=? AND kind='stimulus' "
                                 "ORDER BY seq LIMIT 1 OFFSET 3", (case_id,)).fetchone()
    raw = bytearray(path.read_bytes())
    at = raw.find(payload.encode())
    raw[at + 1] ^= 0x20  # '"' -> '\x02': not JSON any more
    path.write_bytes(bytes(raw))
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    st = eng.state()
    assert st["case"]["case_id"] == case_id and st["case"]["resumed"]
    alarm = next(a for a in st["alarms"]["active"] if a["id"] == "storage_problem:resume")
    assert f"from entry {seq} on could not be used" in alarm["message"]
    _monitor(eng)
    _loss_of_signal(eng)
    assert eng.stop() == 0


@pytest.mark.parametrize("damage", ["truncated", "malformed"])
def test_a_truncated_or_malformed_journal_is_set_aside_and_monitoring_starts(tmp_path, cleanup, damage):
    data = tmp_path / "data"
    _kill_mid_case(tmp_path, data)
    path = data / "journal.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) * 2 // 5])
    else:  # the page after the header page overwritten with garbage
        path.write_bytes(raw[:8192] + os.urandom(8192) + raw[16384:])
    damaged = path.read_bytes()
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    st = eng.state()
    assert st["recording"]["state"] == "new_journal", st["recording"]
    aside = sorted(data.glob("journal.db.damaged-*.db"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept for service, untouched
    assert aside[0].name in st["recording"]["message"]
    banner = next(a for a in st["alarms"]["active"] if a["id"] == "storage_problem:journal")
    assert "set aside" in banner["message"]
    case_id = eng.call("case.start", patient_id="NEW-1", planned_sides=["L"])["case_id"]
    _monitor(eng)
    assert eng.reply("note.add", text="into the new journal")["recorded"] is True
    eng.call("case.close")
    assert eng.stop() == 0
    with Journal(path, readonly=True) as j:
        assert j.verify(case_id).ok


# ----------------------------------------------------------------------------- too little space for a case


def test_a_case_opened_with_too_little_space_warns_before_monitoring_starts(request, tmp_path, cleanup):
    """record.min_free_hours (8 h) of recording do not fit on a 40 MB disk: the case opens, the
    monitor warns at once (a latched technical alarm) and the case record says so."""
    if ran_elsewhere(request, tmp_path):
        return
    mnt = _tmpfs(tmp_path / "mnt", 40, cleanup)
    data = mnt / "data"
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    assert not [a for a in eng.state()["alarms"]["active"] if a["id"] == "storage_problem:space"]
    case_id = eng.call("case.start", patient_id="LOW-1", planned_sides=["L"])["case_id"]
    assert wait_for(lambda: any(a["id"] == "storage_problem:space" for a in eng.state()["alarms"]["active"]), 15)
    alarm = next(a for a in eng.state()["alarms"]["active"] if a["id"] == "storage_problem:space")
    assert "Storage low" in alarm["message"] and "record.min_free_hours = 8 h" in alarm["message"]
    _monitor(eng)  # it monitors all the same
    eng.call("case.close")
    assert eng.stop() == 0
    with Journal(data / "journal.db", readonly=True) as j:
        notes = [e.payload for e in j.entries(case_id, kinds=["storage"], blobs=False)]
        assert any(n.get("event") == "low_space" for n in notes), notes


# ----------------------------------------------------------------------------- kill -9 in full flow


def test_kill_9_in_full_flow_loses_nothing_confirmed_and_epochs_load(tmp_path, cleanup):
    """kill -9 while stimuli, EMG and notes are being written: every "recorded: true" note and
    every measurement written is there, the chain verifies, and every epoch loads except those
    whose EMG had not reached the journal yet (the last seconds); the engine resumes the case."""
    from app.record.export import waveform_loader

    data = tmp_path / "data"
    eng = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng)
    case_id = eng.call("case.start", patient_id="KILL-1", planned_sides=["L"])["case_id"]
    _monitor(eng, rate_hz=20.0)
    confirmed = []
    for i in range(40):
        r = eng.reply("note.add", text=f"note {i}")
        if r.get("recorded"):
            confirmed.append(f"note {i}")
        time.sleep(0.03)
    assert len(confirmed) >= 30

    def emg_journaled() -> bool:
        with Journal(data / "journal.db", readonly=True) as j:
            return any(True for _ in j.entries(case_id, kinds=["emg_block"], blobs=False))

    # the stream reaches the journal a chunk at a time: kill once some of it has (on a slow
    # machine the notes above may all be written before the first chunk is)
    assert wait_until(emg_journaled, timeout=20.0)
    eng.kill()  # mid-flow: stimuli at 20 Hz and the EMG stream still being written
    with Journal(data / "journal.db", readonly=True) as j:
        assert j.verify(case_id).ok
        notes = [e.payload["text"] for e in j.entries(case_id, kinds=["note"], blobs=False)]
        assert set(confirmed) <= set(notes)
        stims = list(j.entries(case_id, kinds=["stimulus"], blobs=False))
        assert [e.payload["index"] for e in stims] == list(range(len(stims))) and len(stims) > 20
        load = waveform_loader(j, case_id)
        missing = [e.payload["t_s"] for e in stims if load(e.seq) is None]
        last_emg = max(e.payload["t_s"] + e.payload["waveform"]["n"] / e.payload["sample_rate_hz"]
                       for e in j.entries(case_id, kinds=["emg_block"], blobs=False))
        assert all(t > last_emg - 0.1 for t in missing), (missing, last_emg)  # only the unjournaled tail
        # the unjournaled tail: the chunk being filled, the epochs' hold and the write in
        # progress, about two and a half seconds of stimuli at 20 Hz
        assert len(missing) <= 20 * 3.0
    eng2 = Engine(tmp_path, data, "--storage-reserve-mb", "1")
    cleanup.append(eng2)
    st = eng2.state()
    assert st["case"]["case_id"] == case_id and st["case"]["resumed"]
    _monitor(eng2)
    assert eng2.reply("note.add", text="after the restart")["recorded"] is True
    assert eng2.stop() == 0
