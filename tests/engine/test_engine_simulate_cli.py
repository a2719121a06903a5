"""``lnm simulate`` and ``lnm run`` from the outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


from app import cli

ROOT = Path(__file__).resolve().parents[2]


def test_simulate_writes_the_documentation_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["simulate", "--scenario", "standard_bilateral", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, text + captured.err
    assert "scenario expectations: all met" in text
    for step in ("V1", "R1", "R2", "V2"):
        assert step in text
    for name in ("report.pdf", "case.json", "case.edf", "journal.db"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    doc = json.loads((out / "case.json").read_text())
    assert doc["format"].startswith("lnm-case/")
    import pyedflib

    with pyedflib.EdfReader(str(out / "case.edf")) as edf:
        labels = edf.getSignalLabels()
        onsets, _durations, texts = edf.readAnnotations()
    assert "EMG L" in labels and "EMG R" in labels
    stims = [t for t in texts if t.startswith("STIM ")]
    assert len(stims) > 100 and any("site=VAGUS" in t for t in stims)


def test_simulate_json_summary_and_scenario_time(tmp_path, capsys):
    rc = cli.main(["simulate", "--scenario", "traction_recovery", "--out", str(tmp_path), "--quiet", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["ok"] and res["closed"]
    ce = [a for a in res["alarms"] if a["kind"] == "combined_event"]
    assert len(ce) == 1 and ce[0]["priority"] == "high"


def test_unknown_scenario_lists_the_shipped_ones(tmp_path, capsys):
    rc = cli.main(["simulate", "--scenario", "no_such_case", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_case" in err and "standard_bilateral" in err


def test_bad_speed_and_missing_scenario_are_refused(tmp_path, capsys):
    assert cli.main(["simulate", "--scenario", "standard_bilateral", "--speed", "fast", "--out", str(tmp_path)]) == 2
    assert "--speed" in capsys.readouterr().err
    assert cli.main(["simulate"]) == 2
    assert "standard_bilateral" in capsys.readouterr().err


def test_list_names_every_scenario(capsys):
    assert cli.main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    from firmware_bridge.sim.scenario import list_scenarios

    for name in list_scenarios():
        assert name in out


def test_paced_simulation_follows_the_speed():
    from app.engine.simulate import run_scenario
    from app.settings import Settings
    from firmware_bridge.sim.scenario import load_scenario

    t = time.perf_counter()
    res = run_scenario(load_scenario("standard_bilateral"), Settings(), speed=10.0, until_s=3.0,
                       write_documents=False)
    wall = time.perf_counter() - t
    assert res.duration_s == 3.0
    assert 0.28 <= wall < 3.0  # 3 s of case at 10x: about 0.3 s


def test_run_starts_the_engine_shows_it_and_stops_it(tmp_path):
    sock = tmp_path / "engine.sock"
    env = {**os.environ, "LNM_SOCKET": str(sock)}
    r = subprocess.run([sys.executable, "-m", "app.cli", "run", "--headless", "--data", str(tmp_path / "data"),
                        "--duration", "6", "--refresh", "0.5"], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=90)
    assert r.returncode == 0, r.stderr
    assert "board: connected" in r.stdout
    assert "case" in r.stdout and "DEMO-1" in r.stdout
    assert "APS ON" in r.stdout
    assert not sock.exists()  # the engine it started was stopped
