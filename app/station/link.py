"""One reader's connection to the broker, under the reader's own broker identity.

Owns: ``ReaderLink``: a paho client logged in as the reader (so the broker's ACL decides
what this reader may read and write), the ``OrModel`` of every OR assigned to the reader,
backfill requests (on connection, when an appliance comes back online, and whenever the
events' ``prev`` chain shows a gap), stimulus requests answered by the appliance, and the
reader's messages to an OR's inbox.
May import: the standard library, ``paho-mqtt``, ``app.remote.protocol``/``config``,
``app.station.model``.

Threads: paho's network thread runs the callbacks, which update the models under
``lock`` and hand the deltas to ``on_deltas`` (the server's fan-out, which never blocks);
HTTP threads call ``request_stimulus`` and ``send_message``, which wait with a time limit.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from app.remote import protocol as rp
from app.remote.config import BrokerAddress, configure_client
from app.station.model import OrModel

log = logging.getLogger("lnm.station")

BACKFILL_RETRY_S = 10.0


@dataclass(frozen=True)
class BrokerSettings:
    """How the station reaches the broker."""

    broker: BrokerAddress
    tls_ca: str = ""
    topic_prefix: str = rp.DEFAULT_PREFIX


class ReaderLink:
    """See the module docstring."""

    def __init__(self, user: str, password: str, ors: list[str], settings: BrokerSettings, *,
                 on_deltas: Callable[[str, list[dict[str, Any]]], None], display_name: str = "") -> None:
        self.user = user
        self.display_name = display_name or user
        self.settings = settings
        self.models = {o: OrModel(o) for o in ors}
        self.topics = {o: rp.Topics(settings.topic_prefix, o) for o in ors}
        self.lock = threading.RLock()
        self._on_deltas = on_deltas
        self._password = password
        self.connected = threading.Event()
        self.refused: str | None = None
        self.last_error = ""
        self._client: Any = None
        self._backfill: dict[str, tuple[str, float]] = {}
        self._waiters: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"station-{self.user}-{secrets.token_hex(4)}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        configure_client(c, self.settings.broker, username=self.user, password=self._password,
                         ca=self.settings.tls_ca)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        c.connect_async(self.settings.broker.host, self.settings.broker.port, keepalive=10)
        c.loop_start()
        self._ticker = threading.Thread(target=self._tick_loop, name=f"station-{self.user}", daemon=True)
        self._ticker.start()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected; False when refused or still not connected after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.connected.is_set() and self.refused is None:
            self.connected.wait(0.05)
        return self.connected.is_set()

    def close(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.warning("station: the broker refused %s: %s", self.user, reason_code)
            if "authori" in self.refused.lower() or "password" in self.refused.lower():
                client.disconnect()  # wrong credentials do not get better by retrying
            return
        self.refused = None
        for appliance, t in self.topics.items():
            client.subscribe(f"{t.base}/+", qos=1)
            self._backfill.pop(appliance, None)
        self.connected.set()
        for appliance in self.topics:
            self.request_backfill(appliance)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        self.connected.clear()
        self.last_error = str(reason_code)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._handle(msg)
        except Exception:  # noqa: BLE001 - one bad message never ends the reader's connection
            log.exception("station: a message on %s could not be handled", msg.topic)

    def _handle(self, msg: Any) -> None:
        parsed = rp.parse_topic(msg.topic, self.settings.topic_prefix)
        if parsed is None or parsed[0] not in self.models:
            return
        appliance, kind, _rest = parsed
        try:
            payload = json.loads(bytes(msg.payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.models[appliance].refused += 1
            return
        now = time.time()
        if kind == "history":
            self._on_history(appliance, payload, now)
            return
        with self.lock:
            model = self.models[appliance]
            was_online = (model.status or {}).get("status") == "online"
            deltas = model.apply(kind, payload, now)
            gap = kind == "event" and model.has_gap()
            back_online = kind == "status" and not was_online and (model.status or {}).get("status") == "online"
        if deltas:
            self._on_deltas(self.user, deltas)
        if gap or back_online:
            self.request_backfill(appliance, force=back_online)

    def _on_history(self, appliance: str, payload: Any, now: float) -> None:
        if not isinstance(payload, dict) or payload.get("reader") != self.user:
            return
        rid = payload.get("request_id")
        waiter = self._waiters.get(rid) if isinstance(rid, str) else None
        if waiter is not None:
            waiter[1].append(payload)
            waiter[0].set()
            return
        if payload.get("type") != "backfill":
            return
        with self.lock:
            deltas = self.models[appliance].apply_history(payload, now)
            if payload.get("last"):
                pending = self._backfill.get(appliance)
                if pending and pending[0] == rid:
                    del self._backfill[appliance]
            gap = self.models[appliance].has_gap()
        if deltas:
            self._on_deltas(self.user, deltas)
        if payload.get("last") and gap:
            self.request_backfill(appliance)

    # ------------------------------------------------------------------ requests

    def _publish_inbox(self, appliance: str, body: dict[str, Any]) -> Any:
        data = rp.encode({"v": rp.VERSION, **body})
        return self._client.publish(self.topics[appliance].inbox(self.user), data, qos=1)

    def request_backfill(self, appliance: str, force: bool = False) -> None:
        """Ask the appliance for the events after the last contiguous one (and, the first
        time, every measurement of the case so far)."""
        if not self.connected.is_set():
            return
        now = time.monotonic()
        with self.lock:
            pending = self._backfill.get(appliance)
            if pending and not force and now - pending[1] < BACKFILL_RETRY_S:
                return
            model = self.models[appliance]
            since = model.contiguous
            rid = secrets.token_hex(8)
            self._backfill[appliance] = (rid, now)
            want_measurements = not model.backfilled
        self._publish_inbox(appliance, {"type": "backfill", "request_id": rid, "since_seq": since,
                                        "measurements": want_measurements})

    def _tick_loop(self) -> None:
        while not self._stop.wait(2.0):
            for appliance, model in self.models.items():
                with self.lock:
                    gap = model.has_gap() or (model.case_id is not None and not model.backfilled)
                if gap:
                    self.request_backfill(appliance)

    def request_stimulus(self, appliance: str, index: int, timeout: float = 8.0) -> dict[str, Any] | None:
        """The appliance's answer for stimulus ``index`` (its epoch and the baseline's), or None."""
        if not self.connected.is_set():
            return None
        rid = secrets.token_hex(8)
        ev: threading.Event = threading.Event()
        box: list[Any] = []
        self._waiters[rid] = (ev, box)
        try:
            self._publish_inbox(appliance, {"type": "stimulus", "request_id": rid, "index": int(index)})
            ev.wait(timeout)
            return box[0] if box else None
        finally:
            self._waiters.pop(rid, None)

    def send_message(self, appliance: str, text: str, kind: str = "message",
                     timeout: float = 5.0) -> tuple[bool, str, str]:
        """Send a reader's message to an OR: ``(accepted by the broker, message id, problem)``."""
        if not self.connected.is_set():
            return False, "", "the station is not connected to the broker"
        mid = secrets.token_hex(8)
        info = self._publish_inbox(appliance, {"type": "message", "id": mid, "from": self.display_name,
                                               "text": text, "kind": kind,
                                               "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            return False, mid, f"not sent: {exc}"
        if not info.is_published():
            return False, mid, "the broker did not confirm the message in time"
        return True, mid, ""

    # ------------------------------------------------------------------ views

    def tiles(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            return {o: m.tile(now) for o, m in self.models.items()}

    def case_view(self, appliance: str) -> dict[str, Any] | None:
        with self.lock:
            m = self.models.get(appliance)
            return None if m is None else m.case_view()

    def broker_state(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "refused": self.refused, "last_error": self.last_error,
                "broker": self.settings.broker.url()}
