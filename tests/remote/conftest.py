"""A real Mosquitto broker with TLS, passwords and the shipped ACL; MQTT clients that collect what they receive.

Session-wide: one throwaway CA (openssl), made once. Each test gets its own broker on
free ports (``broker`` fixture), its password file and the ACL that ``lnm station acl``
writes, so that a test may kill and restart its broker.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.remote.mosquitto import Mosquitto, find_mosquitto, throwaway_ca
from app.remote.mqttauth import acl_text, set_password
from remote_accounts import APPLIANCES, READERS
from waiting import wait_until


needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed "
                                     "(Debian package mosquitto; 'make test' installs it)")


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    tls, clients = throwaway_ca(folder, clients=("or-2", "or-9"))
    return tls, clients


class Broker:
    """A test broker and what clients need to reach it."""

    def __init__(self, folder: Path, tls, cert_listener: bool = True) -> None:
        self.folder = folder
        self.tls = tls
        folder.mkdir(parents=True, exist_ok=True)
        pw = folder / "passwd"
        for user, password in APPLIANCES.items():
            set_password(pw, user, password)
        for user, (password, _ors) in READERS.items():
            set_password(pw, user, password)
        acl = folder / "acl"
        acl.write_text(acl_text({u: ors for u, (_p, ors) in READERS.items()}))
        self.mosquitto = Mosquitto(folder / "broker", password_file=pw, acl_file=acl, tls=tls,
                                   cert_listener=cert_listener)

    @property
    def url(self) -> str:
        return self.mosquitto.url

    @property
    def port(self) -> int:
        return self.mosquitto.port


@pytest.fixture
def broker(tmp_path, pki):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto; 'make test' installs it)")
    b = Broker(tmp_path / "mq", pki[0])
    b.mosquitto.start()
    yield b
    b.mosquitto.stop()


class Collector:
    """An MQTT client (paho, MQTT 5, TLS) that records every message it receives."""

    def __init__(self, broker: Broker, user: str | None, password: str | None, *, cert: tuple[Path, Path] | None = None,
                 port: int | None = None, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        from app.remote.config import BrokerAddress, configure_client

        self.messages: list[tuple[str, Any, bool]] = []
        self.queue: queue.Queue = queue.Queue()
        self.acks: dict[int, Any] = {}
        self.connected = threading.Event()
        self.refused: Any = None
        self.topics: list[tuple[str, int]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
        addr = BrokerAddress("localhost", port or broker.port, True)
        configure_client(self.client, addr, username=user, password=password, ca=str(broker.tls.ca),
                         cert=str(cert[0]) if cert else "", key=str(cert[1]) if cert else "")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc)
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.connect_async("localhost", port or broker.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:
        if rc.is_failure:
            self.refused = rc
            return
        for topic, qos in self.topics:  # the broker may have restarted without our session
            client.subscribe(topic, qos=qos)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        item = (msg.topic, payload, bool(msg.retain))
        self.messages.append(item)
        self.queue.put(item)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.topics.append((topic, qos))
        result, mid = self.client.subscribe(topic, qos=qos)
        assert result == 0

    def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False):
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.client.publish(topic, data, qos=qos, retain=retain)

    def on(self, topic_end: str) -> list[Any]:
        return [p for t, p, _r in list(self.messages) if t.endswith(topic_end)]

    def wait_for(self, pred, timeout: float = 10.0) -> Any:
        return wait_until(pred, timeout, interval=0.02)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collectors():
    made: list[Collector] = []

    def make(*args, **kw) -> Collector:
        c = Collector(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class InProcessEngine:
    """``EngineService`` on the virtual board in a thread of the test, publishing as ``appliance``,
    with a sampler that records how late the engine loop ever was (``max_loop_gap``)."""

    def __init__(self, tmp: Path, broker: Broker, appliance: str, board: str = "sim://?seed=7",
                 notice_after_s: float = 2.0) -> None:
        from app.api.client import EngineClient
        from app.engine.service import EngineConfig, EngineService
        from app.settings import Settings

        tmp.mkdir(parents=True, exist_ok=True)
        pw = tmp / "broker-password"
        pw.write_text(APPLIANCES[appliance] + "\n")
        settings = Settings({"remote.enabled": True, "remote.broker_url": broker.url, "remote.appliance_id": appliance,
                             "remote.tls_ca": str(broker.tls.ca), "remote.password_file": str(pw),
                             "remote.notice_after_s": notice_after_s})
        self.data = tmp / "data"
        cfg = EngineConfig(settings=settings, board_url=board, socket_path=tmp / "engine.sock", data_dir=self.data,
                           resume=False)
        self.service = EngineService(cfg)
        self.result: dict[str, int] = {}
        self.thread = threading.Thread(target=lambda: self.result.setdefault("rc", self.service.run()),
                                       name=f"engine-{appliance}", daemon=True)
        self.thread.start()
        self.max_loop_gap = 0.0
        self.guard_tripped = False
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.client = EngineClient(tmp / "engine.sock", name="test", timeout_s=10.0)
        assert wait_until(lambda: self.client.connect() is not None, 20, ignore=(Exception,)), "engine did not start"
        assert wait_until(lambda: self.call("state.get")["board"]["connected"], 20)

    def _sample(self) -> None:
        while not self._sampling.wait(0.005):
            svc = self.service
            if svc.monitor is None:
                continue
            self.max_loop_gap = max(self.max_loop_gap, time.monotonic() - svc._loop_hb.last)
            self.guard_tripped = self.guard_tripped or svc._guard_tripped

    def call(self, cmd: str, **args: Any) -> Any:
        return self.client.call(cmd, **args)

    def journal_events(self, case_id: str) -> list[int]:
        from app.remote.publisher import JournalReader

        r = JournalReader(self.data / "journal.db")
        try:
            return [row[0] for row in r.events_after(case_id, -1, 100000)]
        finally:
            r.close()

    def stop(self) -> None:
        self._sampling.set()
        self.client.close()
        self.service.stop()
        self.thread.join(20)


@pytest.fixture
def engines(tmp_path):
    made: list[InProcessEngine] = []

    def make(broker: Broker, appliance: str, **kw: Any) -> InProcessEngine:
        e = InProcessEngine(tmp_path / appliance, broker, appliance, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture
def station(broker, tmp_path):
    """The reading station (``app.station.server``) on a free port of 127.0.0.1, its users the
    two readers of ``remote_accounts``, its audit log in the test's folder."""
    from app.remote.mosquitto import free_port
    from app.station import config as sc
    from app.station.auth import hash_password
    from app.station.server import Station, StationServer

    users = {name: sc.User(name, "Dr Anna Rossi" if name == "anna.rossi" else "Dr Ben Kim", tuple(ors),
                           hash_password(pw)) for name, (pw, ors) in READERS.items()}
    cfg = sc.StationConfig(tmp_path / "station.toml", "127.0.0.1", free_port(), sc.BrokerAddress.parse(broker.url),
                           str(broker.tls.ca), audit_log=tmp_path / "audit.log", users=users)
    st = Station(cfg)
    server = StationServer(st)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()
    st.close()

