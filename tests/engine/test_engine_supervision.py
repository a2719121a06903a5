"""Thread supervision: the pure registry on a hand-driven clock, then the live engine on
the virtual board with its threads killed and stalled from the outside.

A killed API thread is restarted and clients reconnect (journaled); a stalled thread
stops the systemd watchdog notifications (seen through ``Notifier``'s test sink) until
it is restarted; a stuck documents job costs a new worker, not the engine; a dead board
link reader, or a thread restarted too often, makes the engine fail safe (exit 70).
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.client import CommandFailed, EngineClient, EngineUnavailable
from app.engine.notify import Notifier
from app.engine.supervision import DEAD, FAILED, IDLE, RUNNING, STALLED, Policy, Supervisor
from waiting import wait_until

# ----------------------------------------------------------------------------- the registry


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_silent_heartbeat_stalls_and_a_beat_brings_it_back():
    clock = Clock()
    sup = Supervisor(clock)
    hb = sup.watch("api", "local API", Policy.RESTART, stall_s=3.0)
    assert sup.check() == [] and sup.healthy()
    clock.t += 3.5
    (change,) = sup.check()
    assert (change.name, change.old, change.new) == ("api", RUNNING, STALLED)
    assert "no sign of life for 3.5 s (at most 3 s expected)" in change.reason
    assert not sup.healthy() and [w.name for w in sup.problems()] == ["api"]
    hb.beat()
    assert [c.new for c in sup.check()] == [RUNNING] and sup.healthy()


def test_an_idle_worker_never_stalls_a_busy_one_does():
    clock = Clock()
    sup = Supervisor(clock)
    hb = sup.watch("documents", "documents worker", Policy.RESTART, stall_s=10.0, busy=False)
    clock.t += 1000
    assert sup.check() == [] and sup.get("documents").state == IDLE and sup.healthy()
    hb.busy()
    clock.t += 9
    assert [c.new for c in sup.check()] == [RUNNING]
    clock.t += 2
    assert [c.new for c in sup.check()] == [STALLED]
    hb.idle()
    assert [c.new for c in sup.check()] == [IDLE]


def test_a_dead_thread_and_a_probe_that_fails_are_dead():
    clock = Clock()
    sup = Supervisor(clock)
    alive = {"reader": True}
    sup.watch("reader", "board link reader", Policy.FAIL_SAFE, alive=lambda: alive["reader"], heartbeat=False)

    def broken():
        raise RuntimeError("gone")

    sup.watch("odd", "odd", Policy.FAIL_SAFE, alive=broken, heartbeat=False)
    changes = {c.name: c for c in sup.check()}
    assert changes["odd"].new == DEAD and "cannot be read (RuntimeError: gone)" in changes["odd"].reason
    alive["reader"] = False
    assert [(c.name, c.new, c.reason) for c in sup.check()] == [("reader", DEAD, "the thread has ended")]


def test_restart_budget_and_failure_are_kept():
    clock = Clock()
    sup = Supervisor(clock, max_restarts=2, window_s=60.0)
    sup.watch("api", "local API", Policy.RESTART, stall_s=1.0)
    assert sup.may_restart("api")
    sup.restarted("api")
    sup.restarted("api")
    assert not sup.may_restart("api")
    clock.t += 61
    assert sup.may_restart("api")  # the window has passed
    assert sup.failed("api", "too often") and not sup.failed("api", "again")
    sup.rewatch("api")
    assert sup.get("api").state == RUNNING
    assert sup.snapshot()[0]["restarts"] == 2


def test_registration_is_checked():
    sup = Supervisor(Clock())
    with pytest.raises(ValueError, match="stall time"):
        sup.watch("x", "x", Policy.RESTART)
    with pytest.raises(ValueError, match="heartbeat, a liveness probe"):
        sup.watch("x", "x", Policy.RESTART, heartbeat=False)
    sup.watch("x", "x", Policy.RESTART, stall_s=1)
    with pytest.raises(ValueError, match="already supervised"):
        sup.watch("x", "x", Policy.RESTART, stall_s=1)


@given(st.lists(st.tuples(st.floats(0, 5), st.sampled_from(["beat", "busy", "idle", "none"])), max_size=40))
def test_the_state_always_follows_the_heartbeat(steps):
    clock = Clock()
    sup = Supervisor(clock)
    hb = sup.watch("w", "worker", Policy.RESTART, stall_s=2.0)
    for dt, action in steps:
        clock.t += dt
        if action != "none":
            getattr(hb, action)()
        sup.check()
        state = sup.get("w").state
        if not hb.busy_now:
            assert state == IDLE
        elif clock.t - hb.last > 2.0:
            assert state == STALLED and not sup.healthy()
        else:
            assert state == RUNNING and sup.healthy()


# ----------------------------------------------------------------------------- the live engine


class Running:
    """An ``EngineService`` on the virtual board, run in a thread of the test process."""

    def __init__(self, tmp_path, watchdog_usec: int = 100_000, **config):
        from app.engine.service import EngineConfig, EngineService
        from app.settings import Settings

        self.notices: list[str] = []
        self.sock = tmp_path / "run" / "e.sock"
        self.data = tmp_path / "data"
        cfg = EngineConfig(settings=Settings(), board_url=config.pop("board_url", "sim://?seed=11"),
                           socket_path=self.sock, data_dir=self.data, resume=False, **config)
        notifier = Notifier({"WATCHDOG_USEC": str(watchdog_usec)}, sink=self.notices.append)
        self.svc = EngineService(cfg, notifier=notifier)
        self.result: dict = {}
        self.thread = threading.Thread(target=lambda: self.result.setdefault("rc", self.svc.run()), daemon=True)
        self.thread.start()
        self.client = EngineClient(self.sock, name="test", timeout_s=5.0, reconnect=True, retry_s=0.05)
        assert wait_until(lambda: self.client.connect() is not None, 20, ignore=(EngineUnavailable,))
        self.client.start()

    def call(self, cmd, **kw):
        """A command, through a reconnection if the API restarts meanwhile."""
        box = {}

        def ok():
            try:
                box["r"] = self.client.call(cmd, **kw)
                return True
            except EngineUnavailable:
                return False

        assert wait_until(ok, 15), f"{cmd}: no answer"
        return box["r"]

    def watchdogs(self) -> int:
        return sum(1 for n in self.notices if "WATCHDOG=1" in n)

    def journal_events(self, case_id):
        from app.record.journal import Journal

        with Journal(self.data / "journal.db", readonly=True) as j:
            return [e.payload for e in j.entries(case_id, kinds=["engine"], blobs=False)]

    def stop(self):
        self.client.close()
        self.svc.stop()
        self.thread.join(20)
        return self.result.get("rc")


@pytest.fixture
def engines():
    started = []
    yield started
    for e in started:
        e.stop()


def _threads(e):
    return {t["name"]: t for t in e.call("state.get")["threads"]["list"]}


def test_every_engine_thread_is_listed_and_lnm_status_shows_them(tmp_path, engines):
    from app.api.clients import format_status

    e = Running(tmp_path)
    engines.append(e)
    assert wait_until(lambda: e.call("state.get")["board"]["connected"], 15)
    assert wait_until(lambda: e.call("state.get")["threads"]["watchdog"], 10)  # (after the first verdict)
    threads = e.call("state.get")["threads"]
    names = {t["name"] for t in threads["list"]}
    assert {"engine-loop", "api", "documents", "board-link-reader", "board-link-supervisor"} <= names
    assert threads["healthy"] is True
    assert "threads: engine-loop running, documents idle, api running" in format_status(e.call("state.get"))
    assert wait_until(lambda: e.watchdogs() >= 3, 10)


def test_a_killed_api_thread_is_restarted_clients_reconnect_and_it_is_journaled(tmp_path, engines):
    e = Running(tmp_path)
    engines.append(e)
    case_id = e.call("case.start", patient_id="API-1")["case_id"]
    ui = EngineClient(e.sock, name="ui", reconnect=True, retry_s=0.05)
    ui.start()
    assert ui.wait_connected(10)
    ui.subscribe(["alarms", "state"])
    first = e.svc.server
    first._sel.close()  # the API thread ends (as after a fatal error in its loop)
    assert wait_until(lambda: e.svc.server is not first and e.svc.server.alive, 15)
    assert wait_until(lambda: ui.connected and e.svc.server.client_count >= 2, 15)
    assert _threads(e)["api"]["restarts"] == 1 and _threads(e)["api"]["state"] == RUNNING
    # the reconnected UI gets the alarm list again (kept across the restart)
    assert wait_until(lambda: any(m.get("type") == "alarms" for m in ui.poll()), 10)
    assert wait_until(lambda: any(p.get("event") == "thread_restarted" for p in e.journal_events(case_id)), 10)
    entry = next(p for p in e.journal_events(case_id) if p.get("event") == "thread_restarted")
    assert entry["detail"]["thread"] == "api" and entry["detail"]["state"] == DEAD
    assert any("restarted" in n for n in e.notices)  # STATUS= for systemctl status
    ui.close()
    assert e.stop() == 0


def test_a_stalled_api_thread_stops_the_watchdog_until_it_is_restarted(tmp_path, engines):
    e = Running(tmp_path, api_stall_s=0.5, restart_delay_s=3600.0)
    engines.append(e)
    assert wait_until(lambda: e.watchdogs() >= 2, 10)
    stuck = e.svc.server
    release = threading.Event()
    real = stuck._housekeeping

    def hang():
        release.wait(60)  # the API thread blocks (e.g. a call that never returns)
        real()

    stuck._housekeeping = hang
    try:
        assert wait_until(lambda: e.svc.supervisor.get("api").state == STALLED, 10)
        assert not e.svc.threads_json()["healthy"]
        fed = e.watchdogs()
        t0 = time.monotonic()
        # at least 1 s (twenty watchdog periods) with a fresh verdict each time: nothing fed
        assert wait_until(lambda: time.monotonic() - t0 > 1.0 and e.svc._verdict[1] > t0 + 1.0, 10)
        assert e.watchdogs() == fed
        assert e.svc.exit_code == 0 and e.svc.monitor.fatal is None  # monitoring goes on
        e.svc.config.restart_delay_s = 0.0  # now let the supervisor restart it
        assert wait_until(lambda: e.svc.server is not stuck and e.svc.server.alive, 15)
        assert wait_until(lambda: e.watchdogs() > fed, 10)
        assert e.call("ping") == {"pong": True}
    finally:
        release.set()
    assert e.stop() == 0


def test_a_stuck_documents_job_costs_a_new_worker_not_the_engine(tmp_path, engines):
    e = Running(tmp_path, documents_stall_s=0.5, restart_delay_s=0.0)
    engines.append(e)
    case_id = e.call("case.start", patient_id="DOCS-1")["case_id"]
    release = threading.Event()
    real = e.svc.monitor.offline_job

    def stuck_job(req):
        job = real(req)
        if req.cmd != "report.get":
            return job

        def hang():
            release.wait(60)
            return job()
        return hang

    e.svc.monitor.offline_job = stuck_job
    try:
        late = []
        e.client.call_async("report.get", late.append, pdf=False)
        assert wait_until(lambda: _threads(e)["documents"]["restarts"] == 1, 15)
        assert e.call("cases.list")["cases"][0]["case_id"] == case_id  # the new worker serves
        assert wait_until(lambda: any(p.get("event") == "thread_restarted" and p["detail"]["thread"] == "documents"
                                      for p in e.journal_events(case_id)), 10)
        assert e.svc.exit_code == 0
    finally:
        release.set()
    assert e.stop() == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the reader is killed
def test_a_dead_board_link_reader_makes_the_engine_fail_safe(tmp_path, engines):
    from app.engine.service import EXIT_FAULT

    e = Running(tmp_path)
    engines.append(e)
    assert wait_until(lambda: e.call("state.get")["board"]["board_id"] is not None, 15)
    case_id = e.call("case.start", patient_id="LINK-1", planned_sides=["L"])["case_id"]
    e.call("stim.output", output="aps", on=True)
    board = e.svc.link._port.board
    assert wait_until(lambda: board.stimulating, 10)

    def die(_data):
        raise SystemExit  # not an error the reader handles: the thread ends

    e.svc.link._receive = die
    e.thread.join(30)
    assert e.result.get("rc") == EXIT_FAULT
    assert wait_until(lambda: not board.stimulating, 10)
    faults = [p for p in e.journal_events(case_id) if p.get("event") == "fault"]
    assert faults and "board-link-reader" in faults[0]["detail"] and "has ended" in faults[0]["detail"]
    assert e.svc.supervisor.get("board-link-reader").state == FAILED


def test_a_thread_restarted_too_often_makes_the_engine_fail_safe(tmp_path, engines):
    from app.engine.service import EXIT_FAULT

    e = Running(tmp_path, max_restarts=1)
    engines.append(e)
    first = e.svc.server
    first._sel.close()
    assert wait_until(lambda: e.svc.server is not first and e.svc.server.alive, 15)
    e.svc.server._sel.close()  # and again
    e.thread.join(30)
    assert e.result.get("rc") == EXIT_FAULT
    assert "restarted 1 times within" in (e.svc.monitor.fatal or "")


def test_a_flood_of_idle_clients_never_locks_out_the_ui_or_lnm_status(tmp_path, engines):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from app.ui.link import EngineLink

    e = Running(tmp_path)
    engines.append(e)
    hogs = []
    try:
        while True:  # take every ordinary place
            c = EngineClient(e.sock, name="hog", timeout_s=5.0)
            c.connect()
            try:
                c.call("ping")
            except (EngineUnavailable, CommandFailed):
                c.close()
                break
            hogs.append(c)
        assert len(hogs) >= 15  # (the test's own client holds one)
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "LNM_SOCKET": str(e.sock)}
        r = subprocess.run([sys.executable, "-m", "app.cli", "status"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "threads: engine-loop running" in r.stdout
        link = EngineLink(e.sock)
        link.start()
        got = []
        assert wait_until(lambda: (link.pump() or True) and link.health().ok, 15)
        link.send("alarm.pause_audio", got.append)
        assert wait_until(lambda: (link.pump() or True) and got, 15)
        assert got[0].ok
        link.stop()
    finally:
        for c in hogs:
            c.close()
