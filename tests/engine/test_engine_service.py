"""The real ``lnm engine`` process: start-up, configuration refused, systemd notifications,
SIGKILL mid-case and resume, board unplugged and replugged, clients that die or stop
reading, nonsense on the socket, the fail-safe exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from app.api.client import CommandFailed, EngineClient
from engine_process import ROOT, PY, EngineProcess, wait_for
from waiting import LineReader, wait_until



class Engine(EngineProcess):
    """``lnm engine`` on ``board``, its data in ``tmp/data``."""

    def __init__(self, tmp: Path, board: str, *extra: str, env: dict | None = None) -> None:
        super().__init__(tmp, board, *extra, env=env)


class BoardSim:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([PY, "-m", "app.cli", "board-sim", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.address = self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        t.stop()


def test_a_refused_configuration_never_stops_monitoring(tmp_path, cleanup):
    """Changed: a bad configuration no longer exits 2 (under systemd a restart loop with no
    monitoring): the engine runs on the last valid configuration, else the shipped defaults,
    and its technical alarm names the setting, its unit and its range."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "default.toml").write_text("[rules]\nlos_consecutive = 40\n")
    eng = Engine(tmp_path, "sim://?seed=3", "--config", str(cfg), "--storage-reserve-mb", "1")
    cleanup.append(eng)
    st = eng.state()
    alarm = next(a for a in st["alarms"]["active"] if a["kind"] == "config_problem")
    assert "rules.los_consecutive" in alarm["message"] and "1-10 stimuli" in alarm["message"]
    assert "shipped defaults" in alarm["message"] and alarm["technical"]
    assert eng.call("settings.get")["values"]["rules.los_consecutive"] == 2
    assert eng.call("case.start", patient_id="CFG-1")["case_id"]  # it monitors
    eng.call("case.close")
    assert not (tmp_path / "data" / "last-valid-config.json").exists()  # a refused one is never kept
    assert eng.stop() == 0
    # a valid configuration is kept as the last valid one ...
    (cfg / "default.toml").write_text("[rules]\nlos_consecutive = 3\n")
    eng = Engine(tmp_path, "sim://?seed=3", "--config", str(cfg), "--storage-reserve-mb", "1")
    cleanup.append(eng)
    assert eng.call("settings.get")["values"]["rules.los_consecutive"] == 3
    assert not [a for a in eng.state()["alarms"]["active"] if a["kind"] == "config_problem"]
    assert eng.stop() == 0
    assert (tmp_path / "data" / "last-valid-config.json").exists()
    # ... and a bad one (a rule across settings, a non-UTF-8 file) runs on it
    for bad in (b"[link]\nheartbeat_ms = 150\ntimeout_ms = 200\n", b"[rules]\nlos_consecutive = \xff\n"):
        (cfg / "default.toml").write_bytes(bad)
        eng = Engine(tmp_path, "sim://?seed=3", "--config", str(cfg), "--storage-reserve-mb", "1")
        cleanup.append(eng)
        assert eng.call("settings.get")["values"]["rules.los_consecutive"] == 3
        alarm = next(a for a in eng.state()["alarms"]["active"] if a["kind"] == "config_problem")
        assert "last valid configuration" in alarm["message"]
        assert ("link.timeout_ms" in alarm["message"]) if bad.startswith(b"[link]") else ("UTF-8" in alarm["message"])
        assert eng.stop() == 0
    r = subprocess.run([PY, "-m", "app.cli", "config-check", str(cfg)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "UTF-8" in r.stderr  # the same validator


def test_a_bad_command_line_still_exits_2(tmp_path):
    r = subprocess.run([PY, "-m", "app.cli", "engine", "--stream-decimation", "0", "--socket", str(tmp_path / "s"),
                        "--data", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--stream-decimation" in r.stderr
    assert not (tmp_path / "s").exists()


def test_engine_serves_clients_refuses_nonsense_and_notifies_systemd(tmp_path, cleanup):
    notify = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify))
    rx.settimeout(15)
    eng = Engine(tmp_path, "sim://?seed=3", env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})
    cleanup.append(eng)
    got = set()
    deadline = time.monotonic() + 15
    while not {"READY=1", "WATCHDOG=1"} <= got and time.monotonic() < deadline:
        got |= set(rx.recv(4096).decode().split("\n"))
    assert {"READY=1", "WATCHDOG=1"} <= got
    assert stat.S_IMODE(os.stat(eng.sock).st_mode) == 0o660
    assert wait_for(lambda: ready(eng))
    # the command-line clients
    env = {**os.environ, "LNM_SOCKET": str(eng.sock)}
    r = subprocess.run([PY, "-m", "app.cli", "status"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "board: connected" in r.stdout
    r = subprocess.run([PY, "-m", "app.cli", "ack"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "nothing to acknowledge" in r.stdout
    r = subprocess.run([PY, "-m", "app.cli", "events", "--json"], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 0 and any(json.loads(x)["kind"] == "link_connected" for x in r.stdout.splitlines())
    follow = subprocess.Popen([PY, "-m", "app.cli", "events", "--follow", "-n", "1"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = LineReader(follow.stdout), LineReader(follow.stderr)
        out.expect("")  # the most recent event
        err.expect("connected to the engine", 30)  # printed once the subscription is in place
        eng.call("alarm.pause_audio")
        out.expect("audio_paused")
    finally:
        follow.terminate()
        follow.wait(10)
    # nonsense over the raw socket: clear errors, the engine carries on
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(eng.sock))
    f = s.makefile("rwb")
    assert json.loads(f.readline())["api"] == 1
    f.write(b'{"id":0,"cmd":"stim.output","output":"probe","on":true}\n')  # before its hello
    f.flush()
    reply = json.loads(f.readline())
    assert reply["error"]["code"] == "bad_request" and "say hello first" in reply["error"]["message"]
    f.write(b'{"id":0,"cmd":"hello","client":"nonsense"}\n')
    f.flush()
    assert json.loads(f.readline())["result"]["client"].startswith("nonsense#")
    for line, code in ((b"{not json", "bad_json"), (b'{"id":1,"cmd":"stim.launch"}', "unknown_command"),
                       (b'{"id":2,"cmd":"stim.set","output":"probe","current_mA":99}', "invalid_argument"),
                       (b'{"id":3,"cmd":"stim.output","output":"probe","on":true}', "bad_state"),
                       (b'{"id":4,"cmd":"settings.set","changes":{"stim.pulse_width_us":7}}', "setting_rejected")):
        f.write(line + b"\n")
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert reply["error"]["message"]
    s.close()
    assert eng.call("ping")["pong"]
    assert eng.stop() == 0


def test_no_engine_gives_a_clear_message(tmp_path):
    env = {**os.environ, "LNM_SOCKET": str(tmp_path / "none.sock")}
    r = subprocess.run([PY, "-m", "app.cli", "status"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 3 and "no engine is running" in r.stderr and "lnm engine" in r.stderr


def ready(eng):
    b = eng.state()["board"]
    return b["connected"] and b["board_id"] is not None


def _journalled_alarms(path, case_id):
    """Alarm kinds in the newest engine-state entry of the journal (what a resume restores)."""
    from app.record.journal import Journal

    with Journal(path, readonly=True) as j:
        states = [e.payload["detail"] for e in j.entries(case_id, kinds=["engine"], blobs=False)
                  if e.payload.get("event") == "state"]
    return {a["kind"] for a in states[-1]["alarms"]["alarms"]} if states else set()


def _baseline_and_alarms(eng):
    st = eng.state()
    return st["aps"]["L"]["baseline_uV"], {a["kind"]: a for a in st["alarms"]["active"]}


def test_engine_killed_mid_case_resumes_baselines_steps_and_alarms(tmp_path, cleanup):
    board = BoardSim("--pty", "--seed", "3")
    cleanup.append(board)
    eng = Engine(tmp_path, board.address)
    cleanup.append(eng)
    assert wait_for(lambda: ready(eng))
    case_id = eng.call("case.start", patient_id="KILL-1", planned_sides=["L"])["case_id"]
    eng.call("sim.control", command="probe", args={"contact": "nerve", "site": "VAGUS", "side": "L"})
    eng.call("probe.site", site="VAGUS", side="L", step="V1")
    eng.call("stim.set", output="probe", rate_hz=10.0)
    eng.call("stim.output", output="probe", on=True)
    assert wait_for(lambda: (eng.state()["steps"]["L"].get("V1") or {}).get("count", 0) >= 5, 10)
    eng.call("stim.output", output="probe", on=False)
    eng.call("sim.control", command="probe", args={"contact": "none"})
    eng.call("sim.control", command="aps_attach", args={"side": "L"})
    eng.call("aps.side", side="L")
    eng.call("stim.set", output="aps", rate_hz=10.0)
    eng.call("stim.output", output="aps", on=True)
    assert wait_for(lambda: _baseline_and_alarms(eng)[0] is not None, 15)
    v1 = eng.state()["steps"]["L"]["V1"]
    assert v1["response"]
    # a latched alarm: the continuous electrode's lead breaks -> no current (acknowledge needed)
    eng.call("sim.control", command="output", args={"output": "APS", "state": "open"})
    assert wait_for(lambda: "no_current" in _baseline_and_alarms(eng)[1], 10)
    baseline, alarms = _baseline_and_alarms(eng)
    # the engine-state entry after the alarm is written at once: kill only once it is on disk
    assert wait_for(lambda: "no_current" in _journalled_alarms(tmp_path / "data" / "journal.db", case_id))
    eng.kill()
    # the board's watchdog stops stimulation while no engine runs
    eng2 = Engine(tmp_path, board.address)
    cleanup.append(eng2)
    st = eng2.state()
    assert st["case"]["case_id"] == case_id and st["case"]["resumed"] is True
    assert st["aps"]["L"]["baseline_uV"] == pytest.approx(baseline, rel=1e-6)
    assert st["steps"]["L"]["V1"]["amplitude_uV"] == pytest.approx(v1["amplitude_uV"])
    restored = {a["kind"]: a for a in st["alarms"]["active"]}
    assert "no_current" in restored and restored["no_current"]["acknowledged"] is False
    assert st["stim"]["aps"]["on"] is True
    # it talks to the board again and monitoring continues
    assert wait_for(lambda: ready(eng2))
    eng2.call("sim.control", command="output", args={"output": "APS", "state": "ok"})
    assert wait_for(lambda: "aps" in eng2.state()["board"]["stimulating"], 10)
    assert wait_for(lambda: (eng2.state()["last"].get("L") or {}).get("source") == "APS", 10)
    eng2.call("case.close")
    assert eng2.stop() == 0
    from app.record.journal import Journal

    with Journal(tmp_path / "data" / "journal.db", readonly=True) as j:
        assert j.verify(case_id).ok
        events = [e.payload.get("event") for e in j.entries(case_id, kinds=["engine"], blobs=False)]
        assert "resumed" in events


def test_board_unplugged_raises_link_lost_within_a_second_and_recovers_on_replug(tmp_path, cleanup):
    board = BoardSim("--tcp", "0", "--seed", "4")
    cleanup.append(board)
    port = board.address.rsplit(":", 1)[1]
    eng = Engine(tmp_path, board.address)
    cleanup.append(eng)
    assert wait_for(lambda: ready(eng))
    watcher = EngineClient(eng.sock, name="watch")
    watcher.connect()
    watcher.subscribe(["events"])
    t_kill = time.monotonic()
    board.kill()  # the cable is pulled: the board's end disappears
    raised_at = None
    while time.monotonic() - t_kill < 5 and raised_at is None:
        m = watcher.get(0.1)
        if (m and m.get("type") == "event" and m.get("kind") == "raised"
                and m["detail"].get("kind") == "board_link_lost"):
            raised_at = time.monotonic()
    assert raised_at is not None, eng.output()
    assert raised_at - t_kill < 1.0
    assert eng.state()["alarms"]["sounding"] == "high"
    board2 = BoardSim("--tcp", port, "--seed", "4")  # plugged in again
    cleanup.append(board2)
    assert wait_for(lambda: eng.state()["board"]["connected"], 15)
    link = [a for a in eng.state()["alarms"]["active"] if a["kind"] == "board_link_lost"]
    assert link and link[0]["condition_active"] is False
    watcher.close()


def test_clients_that_vanish_or_stop_reading_never_stall_monitoring(tmp_path, cleanup):
    eng = Engine(tmp_path, "sim://?seed=5")
    cleanup.append(eng)
    assert wait_for(lambda: ready(eng))
    eng.call("case.start", patient_id="SLOW-1", planned_sides=["L"])
    eng.call("sim.control", command="aps_attach", args={"side": "L"})
    eng.call("aps.side", side="L")
    eng.call("stim.output", output="aps", on=True)
    # a client that subscribes to everything and never reads again
    stuck = socket.socket(socket.AF_UNIX)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(eng.sock))
    stuck.sendall(b'{"id":0,"cmd":"hello","client":"stuck"}\n{"id":1,"cmd":"subscribe","state_hz":10}\n')
    # a client that dies mid-stream
    gone = EngineClient(eng.sock, name="gone")
    gone.connect()
    gone.subscribe()
    gone._sock.close()  # abrupt: no goodbye
    # an alarm during all this: the continuous electrode's lead breaks
    eng.call("sim.control", command="output", args={"output": "APS", "state": "open"})
    assert wait_for(lambda: any(a["kind"] == "no_current" for a in eng.state()["alarms"]["active"]), 10)
    seq0 = eng.state()["seq"]
    t0 = time.monotonic()

    def sounding_for_12_s() -> bool:
        assert eng.state()["alarms"]["sounding"] is not None
        return time.monotonic() - t0 >= 12

    # real time must pass: the stuck client is only dropped after the engine's stall
    # timeout (10 s); meanwhile every answer (twice a second) shows the alarm still sounding
    assert wait_until(sounding_for_12_s, timeout=30, interval=0.5)
    assert eng.state()["seq"] > seq0
    assert eng.state()["counters"]["stimuli"] > 5
    # the stuck client was disconnected: reading now ends in EOF
    stuck.settimeout(5)
    total = 0
    while True:
        chunk = stuck.recv(65536)
        if not chunk:
            break
        total += len(chunk)
    assert total > 0
    assert "disconnected (not reading" in eng.output()
    assert eng.stop() == 0


def test_unexpected_error_stops_stimulation_raises_engine_fault_and_exits_70(tmp_path):
    from app.engine.service import EXIT_FAULT, EngineConfig, EngineService
    from app.record.journal import Journal
    from app.settings import Settings

    cfg = EngineConfig(settings=Settings(), board_url="sim://?seed=6", socket_path=tmp_path / "e.sock",
                       data_dir=tmp_path / "data", resume=False)
    svc = EngineService(cfg)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", svc.run()))
    t.start()
    c = EngineClient(tmp_path / "e.sock")
    assert wait_for(lambda: c.connect() is not None, 20)
    assert wait_for(lambda: c.call("state.get")["board"]["connected"])
    case_id = c.call("case.start", patient_id="FAULT-1", planned_sides=["L"])["case_id"]
    c.call("stim.output", output="aps", on=True)
    assert wait_for(lambda: "aps" in c.call("state.get")["board"]["stimulating"])
    board = svc.link._port.board
    mon = svc.monitor

    def broken():
        raise RuntimeError("simulated defect in the engine loop")

    mon.tick = broken
    t.join(15)
    assert result["rc"] == EXIT_FAULT
    c.close()
    # stop commands sent, then no heartbeat: the board is stopped either way
    assert wait_until(lambda: not board.stimulating, 5.0)
    with Journal(tmp_path / "data" / "journal.db", readonly=True) as j:
        entries = list(j.entries(case_id, blobs=False))
    faults = [e.payload for e in entries if e.kind == "engine" and e.payload.get("event") == "fault"]
    assert faults and "simulated defect" in faults[0]["detail"]
    alarms = [e.payload for e in entries if e.kind == "alarm" and e.payload.get("event_kind") == "engine_fault"]
    assert alarms


def test_subscription_stream_carries_what_the_ui_draws(tmp_path, cleanup):
    eng = Engine(tmp_path, "sim://?seed=7")
    cleanup.append(eng)
    assert wait_for(lambda: ready(eng))
    ui = EngineClient(eng.sock, name="ui")
    ui.connect()
    ui.subscribe(state_hz=5)
    eng.call("case.start", patient_id="UI-1", planned_sides=["L"])
    eng.call("sim.control", command="aps_attach", args={"side": "L"})
    eng.call("aps.side", side="L")
    eng.call("stim.set", output="aps", rate_hz=5.0)
    eng.call("stim.output", output="aps", on=True)
    got: dict[str, list] = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4 and not {"state", "alarms", "event", "measurement", "waveform", "emg"} <= set(got):
        m = ui.get(0.2)
        if m:
            got.setdefault(m["type"], []).append(m)
    ui.close()
    assert {"state", "alarms", "event", "measurement", "waveform", "emg"} <= set(got), sorted(got)
    st = got["state"][-1]
    for key in ("engine", "board", "case", "stim", "last", "aps", "steps", "alarms", "tube", "los", "staging"):
        assert key in st
    m = got["measurement"][-1]
    assert m["source"] == "APS" and m["side"] == "L" and "amplitude_uV" in m and "latency_ms" in m
    w = got["waveform"][-1]
    assert set(w["channels"]) == {"EMG L", "EMG R"} and w["sample_rate_hz"] == 5000.0 and w["t0_ms"] == -10.0
    assert len(w["channels"]["EMG L"]) == 300  # 60 ms at 5 kHz
    e = got["emg"][-1]
    lo, hi = e["channels"]["EMG L"]["min"], e["channels"]["EMG L"]["max"]
    assert e["bin_hz"] == 1000.0 and len(lo) == len(hi) > 10 and all(a <= b for a, b in zip(lo, hi, strict=True))
    rates = [x["seq"] for x in got["state"]]
    assert rates == sorted(rates)


def test_report_and_usb_export_through_the_api(tmp_path, cleanup):
    # exports go only below the removable-media folders or the installation's $LNM_EXPORT_DIR
    eng = Engine(tmp_path, "sim://?seed=8", env={"LNM_EXPORT_DIR": str(tmp_path / "stick")})
    cleanup.append(eng)
    assert wait_for(lambda: ready(eng))
    case_id = eng.call("case.start", patient_id="DOC-1", planned_sides=["L"])["case_id"]
    eng.call("sim.control", command="probe", args={"contact": "nerve", "site": "VAGUS", "side": "L"})
    eng.call("probe.site", site="VAGUS", side="L", step="V1")
    eng.call("stim.set", output="probe", rate_hz=10.0)
    eng.call("stim.output", output="probe", on=True)
    assert wait_for(lambda: "V1" in eng.state()["steps"]["L"], 10)
    eng.call("laryngoscopy", phase="L1", side="L", finding="normal")
    eng.call("note.add", text="V1 recorded")
    eng.call("case.close", note="short case")
    rep = eng.client.call("report.get", timeout_s=120)
    assert rep["case_id"] == case_id and Path(rep["pdf_path"]).read_bytes().startswith(b"%PDF")
    assert rep["document"]["format"].startswith("lnm-case/")
    stick = tmp_path / "stick"
    stick.mkdir()
    res = eng.client.call("export.usb", target=str(stick), timeout_s=120)
    assert res["verified"] and res["safe_to_remove"] and res["pseudonymised"]
    folder = Path(res["folder"])
    assert {"report.pdf", "case.json", "SHA256SUMS"} <= {p.name for p in folder.iterdir()}
    with pytest.raises(CommandFailed) as info:
        eng.client.call("export.usb", target=str(tmp_path / "no-such-stick"), timeout_s=60)
    assert info.value.code == "bad_state" and "no-such-stick" in info.value.message
    cases = eng.call("cases.list")["cases"]
    assert cases[0]["case_id"] == case_id


def test_a_stalled_engine_loop_stops_the_board_heartbeat_and_recovers(tmp_path):
    from app.engine.service import EngineConfig, EngineService
    from app.settings import Settings

    cfg = EngineConfig(settings=Settings(), board_url="sim://?seed=9", socket_path=tmp_path / "e.sock",
                       data_dir=tmp_path / "data", resume=False, stall_s=0.5)
    svc = EngineService(cfg)
    t = threading.Thread(target=svc.run)
    t.start()
    c = EngineClient(tmp_path / "e.sock")
    stalled, release = threading.Event(), threading.Event()
    try:
        assert wait_for(lambda: c.connect() is not None, 20)
        assert wait_for(lambda: c.call("state.get")["board"]["board_id"] is not None)
        c.call("case.start", patient_id="STALL-1", planned_sides=["L"])
        c.call("stim.output", output="aps", on=True)
        board = svc.link._port.board
        assert wait_for(lambda: board.stimulating)
        mon = svc.monitor
        real_tick = mon.tick

        def stall():
            if not stalled.is_set():
                stalled.set()
                release.wait(30)  # the loop hangs (e.g. a blocked call) until the test lets it go
            real_tick()

        mon.tick = stall
        assert stalled.wait(10)
        # within the stall: no heartbeat -> the board stops stimulating, then beeps
        assert wait_for(lambda: not board.stimulating, 10)
        assert wait_for(lambda: any(on for _t, on in board.beeper_history), 10)
        assert svc.exit_code == 0  # a stall is not a fault: the engine waits it out
        # a command sent into the stall times out for its client ...
        late: list = []
        c.call_async("stim.output", late.append, output="aps", on=False)
        assert wait_for(lambda: late, 10)
        assert late[0]["ok"] is False and late[0]["error"]["code"] == "timeout"
        release.set()
        # the loop runs again: heartbeat back, beeper off, stimulation commanded again
        assert wait_for(lambda: board.stimulating and not board.beeper_on, 10)
        # ... and never takes effect afterwards: the APS stays on
        assert c.call("state.get")["stim"]["aps"]["on"] is True
        assert board.stimulating
        assert any(e["kind"] == "host_silent" for e in c.call("events.list", limit=200)["events"])
    finally:
        release.set()
        c.close()
        svc.stop()
        t.join(15)
