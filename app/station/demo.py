"""``lnm station --demo``: a local broker, three virtual operating rooms and the station, in one command.

Owns: ``VirtualOr`` (an ``lnm engine`` process on the virtual board running a scenario,
publishing to the broker as its appliance, and a driver thread that plays the scenario's
operator actions through the engine's local API, then closes the case and starts the next
one), ``DemoBroker`` (Mosquitto with a throwaway CA, passwords and the ACL) and
``run_demo``.
May import: the standard library, ``app.remote`` (broker helpers), ``app.station``,
``app.api.client``, ``firmware_bridge.sim.scenario``.

Everything lives in a temporary folder that is removed at the end; Ctrl-C stops the
engines, the broker and the station.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lnm.station")

DEMO_ORS = (("or-1", "traction_recovery"), ("or-2", "standard_bilateral"), ("or-3", "tube_displacement"))
DEMO_USER = "demo.reader"


class DemoBroker:
    """Mosquitto on a free loopback port, TLS with a throwaway CA when ``openssl`` is there."""

    def __init__(self, folder: Path, appliances: dict[str, str], readers: dict[str, tuple[str, list[str]]],
                 tls: bool = True) -> None:
        from app.remote.mosquitto import Mosquitto, throwaway_ca
        from app.remote.mqttauth import acl_text, set_password

        folder.mkdir(parents=True, exist_ok=True)
        self.tls = throwaway_ca(folder / "pki")[0] if tls and shutil.which("openssl") else None
        pw = folder / "passwd"
        for user, password in appliances.items():
            set_password(pw, user, password)
        for user, (password, _ors) in readers.items():
            set_password(pw, user, password)
        acl = folder / "acl"
        acl.write_text(acl_text({u: ors for u, (_p, ors) in readers.items()}))
        self.mosquitto = Mosquitto(folder / "broker", password_file=pw, acl_file=acl, tls=self.tls)

    @property
    def url(self) -> str:
        return self.mosquitto.url

    @property
    def ca(self) -> str:
        return str(self.tls.ca) if self.tls else ""


def write_engine_config(folder: Path, appliance: str, broker_url: str, password: str, ca: str,
                        notice_after_s: float = 10.0) -> Path:
    """A configuration folder for an engine that publishes as ``appliance``."""
    folder.mkdir(parents=True, exist_ok=True)
    pw = folder / "broker-password"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    (folder / "default.toml").write_text(
        "[remote]\nenabled = true\n"
        f'broker_url = "{broker_url}"\nappliance_id = "{appliance}"\n'
        f'tls_ca = "{ca}"\npassword_file = "{pw}"\nnotice_after_s = {notice_after_s}\n')
    return folder


class VirtualOr:
    """One operating room of the demonstration (see the module docstring)."""

    def __init__(self, folder: Path, appliance: str, scenario: str, config_dir: Path, *, loop: bool = True,
                 speed: float = 1.0) -> None:
        self.folder = folder
        self.appliance = appliance
        self.scenario = scenario
        self.config_dir = config_dir
        self.loop = loop
        self.speed = speed
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"demo-{appliance}", daemon=True)
        self.cases: list[str] = []
        self.problems: list[str] = []

    @property
    def socket(self) -> Path:
        return self.folder / "engine.sock"

    def start(self) -> None:
        self._thread.start()

    def _start_engine(self) -> None:
        root = Path(__file__).resolve().parents[2]
        self.folder.mkdir(parents=True, exist_ok=True)
        log_file = open(self.folder / "engine.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "engine", "--board", f"sim://?scenario={self.scenario}",
             "--config", str(self.config_dir), "--data", str(self.folder / "data"), "--socket", str(self.socket),
             "--no-resume"], cwd=root, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()

    def _stop_engine(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._one_case()
            except Exception as exc:  # noqa: BLE001 - a demonstration room that fails says so and tries again
                self.problems.append(str(exc))
                log.warning("demo %s: %s", self.appliance, exc)
            finally:
                self._stop_engine()
            if not self.loop or self._stop.wait(3.0):
                return

    def _one_case(self) -> None:
        from app.api.client import EngineClient
        from firmware_bridge.sim.scenario import load_scenario

        sc = load_scenario(self.scenario)
        self._start_engine()
        started = time.monotonic()
        client = EngineClient(self.socket, name="demo", timeout_s=10.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.connect()
                break
            except Exception:  # noqa: BLE001 - the engine is still starting
                if time.monotonic() > deadline or self._stop.wait(0.2):
                    raise RuntimeError("the engine did not start (see engine.log)") from None
        try:
            for action in sc.operator_actions:
                if self._stop.wait(max(0.0, started + action.t / self.speed - time.monotonic())):
                    return
                try:
                    result = client.call(action.cmd, **dict(action.args))
                except Exception as exc:  # noqa: BLE001 - a refused action is part of some scenarios
                    log.info("demo %s: %s refused: %s", self.appliance, action.cmd, exc)
                    continue
                if action.cmd == "case.start" and result.get("case_id"):
                    self.cases.append(str(result["case_id"]))
            if self._stop.wait(max(0.0, started + sc.duration_s / self.speed - time.monotonic())):
                return
            try:
                client.call("case.close", note="end of the demonstration scenario")
            except Exception as exc:  # noqa: BLE001 - the scenario may have closed it already
                log.info("demo %s: case.close: %s", self.appliance, exc)
            self._stop.wait(2.0)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._stop_engine()


def run_demo(verbose: bool = False, ors: tuple[tuple[str, str], ...] = DEMO_ORS) -> int:
    """Run until Ctrl-C (see the module docstring)."""
    from app.remote.mosquitto import BrokerError
    from app.station import config as sc
    from app.station.auth import hash_password
    from app.station.server import serve

    tmp = Path(tempfile.mkdtemp(prefix="lnm-station-demo-"))
    reader_password = secrets.token_urlsafe(9)
    appliances = {a: secrets.token_urlsafe(12) for a, _s in ors}
    rooms: list[VirtualOr] = []
    broker: DemoBroker | None = None
    try:
        try:
            broker = DemoBroker(tmp / "broker", appliances, {DEMO_USER: (reader_password, [a for a, _s in ors])})
            broker.mosquitto.start()
        except BrokerError as exc:
            print(f"lnm station --demo: {exc}", file=sys.stderr)
            return 2
        for appliance, scenario in ors:
            cfg_dir = write_engine_config(tmp / appliance / "config", appliance, broker.url, appliances[appliance],
                                          broker.ca)
            room = VirtualOr(tmp / appliance, appliance, scenario, cfg_dir)
            room.start()
            rooms.append(room)
        station_cfg = sc.StationConfig(
            tmp / "station.toml", "127.0.0.1", _free_port(), sc.BrokerAddress.parse(broker.url), broker.ca,
            audit_log=tmp / "audit.log", session_hours=12.0,
            users={DEMO_USER: sc.User(DEMO_USER, "Demo Reader", tuple(a for a, _s in ors),
                                      hash_password(reader_password))})
        sc.write_config(station_cfg)
        print(f"LNM reading station demonstration: a local broker ({broker.url}), three virtual operating rooms:",
              flush=True)
        for appliance, scenario in ors:
            print(f"  {appliance}: scenario {scenario}", flush=True)
        print(f"Files in {tmp} (removed at the end).", flush=True)
        print(f"Log in as {DEMO_USER} with password {reader_password}   (Ctrl-C stops everything)", flush=True)
        return serve(station_cfg)
    finally:
        for room in rooms:
            room._stop.set()
        for room in rooms:
            room.stop()
        if broker is not None:
            broker.mosquitto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _free_port() -> int:
    from app.remote.mosquitto import free_port

    return free_port()


def demo_summary(rooms: list[VirtualOr]) -> dict[str, Any]:
    """The cases each room opened and the problems it met."""
    return {r.appliance: {"cases": r.cases, "problems": r.problems} for r in rooms}
