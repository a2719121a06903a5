"""Crash safety: a real ``kill -9`` of the writing process loses nothing it reported committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from app.record import Journal

CHILD = r"""
import os, sys
import numpy as np
from app.record import Journal
from app.record import entries as E
path = sys.argv[1]
j = Journal(path)
cid = j.find_open_case()
event = "resumed" if cid else "started"
if cid is None:
    cid = j.open_case({"patient_id": "PSN-CRASH", "planned_sides": ["L", "R"]})
else:
    j.resume_case(cid)
j.append(cid, "engine", {"event": event, "detail": {"pid": os.getpid()}})
print("CASE", cid, flush=True)
rng = np.random.default_rng(os.getpid())
n = 0
while True:
    n += 1
    if n % 3 == 0:
        payload, blob = E.emg_block(float(n), n * 20000, 20000, rng.normal(0, 5, (2, 4000)))
        payload["marker"] = f"{os.getpid()}-{n}"
        seq = j.append(cid, "emg_block", payload, blob)
    else:
        seq = j.append(cid, "note", {"text": f"{os.getpid()}-{n}"})
    print("OK", seq, f"{os.getpid()}-{n}", flush=True)
"""


def run_and_kill(path, min_lines: int, rng: random.Random) -> tuple[str, dict[int, str]]:
    errfile = open(path.parent / "child-stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, stderr=errfile,
                            text=True)
    committed: dict[int, str] = {}
    case_id = ""
    target = rng.randint(min_lines, min_lines + 150)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            parts = line.split()
            if parts[0] == "CASE":
                case_id = parts[1]
            elif parts[0] == "OK":
                committed[int(parts[1])] = parts[2]
                if len(committed) >= target:
                    break
        # a real wait on purpose: a random 0-10 ms lands the kill somewhere inside the
        # child's next write (the assertions hold wherever it lands, so load cannot flake it)
        time.sleep(rng.uniform(0, 0.01))
        os.kill(proc.pid, signal.SIGKILL)
        # entries whose "OK" was printed before the kill are committed too
        # (the kill can cut the last line short: only whole lines are reports)
        for line in proc.stdout:
            parts = line.split()
            if line.endswith("\n") and len(parts) == 3 and parts[0] == "OK":
                committed[int(parts[1])] = parts[2]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        errfile.close()
    stderr = (path.parent / "child-stderr.txt").read_text()
    assert proc.returncode == -signal.SIGKILL, f"the child ended by itself ({proc.returncode}): {stderr}"
    return case_id, committed


def test_kill_9_at_random_points_loses_no_committed_entry(tmp_path):
    path = tmp_path / "journal.db"
    rng = random.Random(20260304)
    all_committed: dict[int, str] = {}
    case_ids = set()
    for _round in range(5):
        case_id, committed = run_and_kill(path, 5, rng)
        assert committed, f"the child committed nothing before it was killed ({case_id!r})"
        case_ids.add(case_id)
        all_committed.update(committed)
        with Journal(path, readonly=True) as j:
            assert j.find_open_case() == case_id, (j.cases(), case_id)  # left open by the crash
            stored = {}
            for e in j.entries(case_id, kinds=["note", "emg_block"], blobs=False):
                stored[e.seq] = e.payload.get("text") or e.payload.get("marker")
            for seq, marker in all_committed.items():
                assert stored.get(seq) == marker, f"committed entry {seq} lost after kill -9"
            result = j.verify(case_id)
            assert result.ok, result.describe()
    assert len(case_ids) == 1  # every restart resumed the same case
    with Journal(path) as j:
        (cid,) = case_ids
        j.resume_case(cid)
        j.close_case(cid, {"reason": "test end"})
        assert j.open_cases() == []
        assert j.verify(cid).ok
