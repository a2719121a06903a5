"""The remote publisher: the engine's live case to an MQTT broker, without ever holding the engine up.

Owns: ``OutQueue`` (bounded, never blocks: coalesces state and alarms, drops waveforms and
EMG first, then measurements), ``JournalReader`` (a read-only connection to the case
journal: events after a sequence number, stimuli, epochs), ``Publisher`` (the thread that
owns the paho client: status with a last will, retained state and alarms, events at QoS 1
with the journal's sequence numbers, re-sent from the journal after a broken connection,
backfill and stimulus requests answered from the journal, the inbox validated) and
``PublisherHealth``.
May import: the standard library, ``paho-mqtt``, ``app.remote.protocol``/``config``,
``app.record`` (journal, waveform decoding).

Threads: the engine thread calls ``offer`` only (a lock held for an append, never I/O);
the publisher thread does everything else; paho's network thread runs the callbacks,
which only set flags, count and hand inbox messages on; a single worker thread answers
backfill and stimulus requests so that a long case's history never delays live alarms.

Events are not queued: the journal is their queue. An ``events`` or ``alarms`` message
from the engine only wakes the publisher, which reads the entries written since its
cursor and publishes those of the event kinds (``protocol.EVENT_KINDS``) with ``seq`` (the
journal's) and ``prev`` (the previous published event of the case), so nothing an
overflowing queue could drop is ever lost, and what the reader sees is what the record
says. While the broker is away the cursor stays at the last event the broker
acknowledged; on reconnection everything after it is published again.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from app.remote import protocol as rp
from app.remote.config import RemoteConfig, configure_client

log = logging.getLogger("lnm.remote")

STATE_INTERVAL_S = 0.5  # retained state at most this often
HEALTH_INTERVAL_S = 5.0
EVENT_BATCH = 200  # events read from the journal per round
MAX_UNACKED = 400  # no more events are read while this many wait for the broker's PUBACK
BACKFILL_CHUNK = 200  # events per history message
MEASUREMENT_CHUNK = 1000  # measurements per history message
STREAM_WAIT_S = 5.0  # a stimulus request waits this long for the stream stretch holding its epoch
MAX_PENDING_REQUESTS = 8
READER_MESSAGES_PER_MIN = 12


@dataclass
class Dropped:
    """Counts of what the publisher did not send, by kind."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n


class OutQueue:
    """What the engine hands the publisher: bounded, never blocks (see the module docstring).

    ``latest`` kinds (state, alarms, inbox) keep only their newest message; ``bulk`` kinds
    (measurements, waveforms and EMG) are queued in order up to ``max_items`` in all (and
    ``max_low`` waveforms and EMG): when the queue is full the oldest waveform or EMG message
    goes first, and only when none is left the oldest measurement. Events are a flag: the
    journal holds them.
    """

    LATEST = ("state", "alarms", "inbox")
    LOW = ("waveforms", "emg")

    def __init__(self, max_items: int = 2000, max_low: int = 100) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[Any, float]] = {}
        self._mid: collections.deque[tuple[str, Any, float]] = collections.deque()
        self._low: collections.deque[tuple[str, Any, float]] = collections.deque()
        self.max_items = max_items
        self.max_low = max_low
        self.journal_poke = False
        self.dropped = Dropped()
        self.wake = threading.Event()

    def put(self, stream: str, message: Any, at: float) -> None:
        """From the engine thread: never blocks, never raises for a full queue."""
        with self._lock:
            if stream in self.LATEST:
                self._latest[stream] = (message, at)
            elif stream == "events":
                self.journal_poke = True
            elif stream == "measurements":
                if len(self._mid) + len(self._low) >= self.max_items:
                    # full: waveforms and EMG make room first, measurements only when none is left
                    self.dropped.add((self._low or self._mid).popleft()[0])
                self._mid.append((stream, message, at))
            elif stream in self.LOW:
                if self._low and (len(self._low) >= self.max_low or len(self._mid) + len(self._low) >= self.max_items):
                    self.dropped.add(self._low.popleft()[0])
                elif len(self._mid) >= self.max_items:
                    self.dropped.add(stream)  # the queue holds measurements only: this trace is not kept
                    return
                self._low.append((stream, message, at))
            else:
                return
        if stream in ("alarms", "events", "inbox", "measurements"):
            self.wake.set()

    def take(self) -> tuple[dict[str, tuple[Any, float]], list[tuple[str, Any, float]], bool]:
        """Everything queued: ``(latest, bulk in order of importance, journal poked)``."""
        with self._lock:
            latest, self._latest = self._latest, {}
            bulk = list(self._mid) + list(self._low)
            self._mid.clear()
            self._low.clear()
            poke, self.journal_poke = self.journal_poke, False
        return latest, bulk, poke

    def depth(self) -> int:
        with self._lock:
            return len(self._mid) + len(self._low) + len(self._latest)


class JournalReader:
    """Read-only access to the case journal from the publisher's threads (own connection each)."""

    def __init__(self, path: Path) -> None:
        from app.record.journal import Journal

        self.journal = Journal(path, readonly=True)

    def close(self) -> None:
        self.journal.close()

    def _rows(self, sql: str, args: list[Any]) -> list[tuple]:
        return self.journal.conn.execute(sql, args).fetchall()

    def events_after(self, case_id: str, after_seq: int, limit: int = EVENT_BATCH) -> list[tuple]:
        """``(seq, kind, t_s, wall, payload dict)`` of the case's event entries after ``after_seq``."""
        kinds = list(rp.EVENT_KINDS)
        rows = self._rows(
            "SELECT seq, kind, t_s, wall, payload FROM entries WHERE case_id = ? AND seq > ? AND kind IN ("
            + ",".join("?" * len(kinds)) + ") AND (kind != 'engine' OR json_extract(payload, '$.event') != 'state') "
            "ORDER BY seq LIMIT ?", [case_id, int(after_seq), *kinds, int(limit)])
        return [(seq, kind, t_s, wall, json.loads(payload)) for seq, kind, t_s, wall, payload in rows]

    def last_event_before(self, case_id: str, seq: int) -> int:
        """The seq of the case's last event entry before ``seq`` (-1: none)."""
        kinds = list(rp.EVENT_KINDS)
        row = self._rows(
            "SELECT max(seq) FROM entries WHERE case_id = ? AND seq < ? AND kind IN (" + ",".join("?" * len(kinds))
            + ") AND (kind != 'engine' OR json_extract(payload, '$.event') != 'state')", [case_id, int(seq), *kinds])
        return -1 if not row or row[0][0] is None else int(row[0][0])

    def stimuli(self, case_id: str) -> list[dict[str, Any]]:
        """The measurement of every stimulus of the case (no epochs), in order."""
        rows = self._rows("SELECT payload FROM entries WHERE case_id = ? AND kind = 'stimulus' ORDER BY seq",
                          [case_id])
        out = []
        for (payload,) in rows:
            p = json.loads(payload)
            p.pop("waveform", None)
            out.append(p)
        return out

    def stimulus_seq(self, case_id: str, index: int) -> int | None:
        row = self._rows("SELECT seq FROM entries WHERE case_id = ? AND kind = 'stimulus' AND "
                         "json_extract(payload, '$.index') = ? ORDER BY seq DESC LIMIT 1", [case_id, int(index)])
        return int(row[0][0]) if row else None

    def baseline_index(self, case_id: str, side: str, site: str, index: int) -> int | None:
        """The stimulus at which the baseline in force at stimulus ``index`` was set (same side and site)."""
        row = self._rows(
            "SELECT json_extract(payload, '$.stimulus_index') FROM entries WHERE case_id = ? AND kind = 'rule_event' "
            "AND json_extract(payload, '$.kind') = 'baseline_set' AND json_extract(payload, '$.side') = ? AND "
            "json_extract(payload, '$.site') = ? AND json_extract(payload, '$.stimulus_index') <= ? "
            "ORDER BY seq DESC LIMIT 1", [case_id, side, site, int(index)])
        return int(row[0][0]) if row and row[0][0] is not None else None

    def epoch(self, case_id: str, index: int) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """``(measurement, waveform payload or None)`` of stimulus ``index``."""
        from app.record.export import waveform_loader

        seq = self.stimulus_seq(case_id, index)
        if seq is None:
            return None
        entry = self.journal.entry(case_id, seq)
        if entry is None:
            return None
        measurement = {k: v for k, v in entry.payload.items() if k != "waveform"}
        loaded = waveform_loader(self.journal, case_id)(seq)
        if loaded is None:
            return measurement, None
        samples, rate, pre, labels = loaded
        names = [str(x) for x in labels] if labels else [f"EMG {s}" for s in "LR"][: samples.shape[0]]
        w = {"index": index, "sample_rate_hz": rate, "t0_ms": -1000.0 * pre / rate,
             "channels": {names[i]: samples[i].tolist() for i in range(min(len(names), samples.shape[0]))}}
        return measurement, rp.waveform_payload(w, case_id)


class PublisherHealth:
    """The publisher's own state, published on ``health`` and read by the engine hook."""

    def __init__(self) -> None:
        self.connected = False
        self.connected_since: float | None = None
        self.disconnected_since: float | None = time.monotonic()
        self.reconnects = 0
        self.last_error = ""
        self.refused_inbox = 0
        self.published: collections.Counter[str] = collections.Counter()


def _json_safe(obj: Any) -> bytes | None:
    """Encode, or None when the object changed under us (the engine thread owns it): skipped."""
    try:
        return rp.encode(obj)
    except (RuntimeError, TypeError, ValueError) as exc:
        log.debug("remote: message skipped, not encodable now (%s)", exc)
        return None


class Publisher:
    """See the module docstring. ``deliver(message)`` hands a validated reader message to
    the engine (its queue); ``on_health(ok, message)`` is called when the broker becomes
    reachable or unreachable for longer than ``notice_after_s`` (from the publisher thread)."""

    def __init__(self, config: RemoteConfig, journal_path: Path, *, software: str = "lnm",
                 deliver: Callable[[rp.ReaderMessage], None] | None = None,
                 on_health: Callable[[bool, str], None] | None = None,
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self.journal_path = Path(journal_path)
        self.software = software
        self.queue = OutQueue()
        self.health = PublisherHealth()
        self._deliver = deliver or (lambda msg: None)
        self._on_health = on_health or (lambda ok, message: None)
        self._client_factory = client_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._lock = threading.Lock()  # guards the request counter (never held around a paho call)
        self._connected = False
        self._just_connected = False
        # The event cursor and what waits for the broker's PUBACK belong to the publisher
        # thread alone; paho's callbacks (which run holding paho's own locks) only post
        # ("ack", mid) and ("down",) here, processed in order by the publisher thread.
        self._link_events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._unacked: dict[int, int] = {}  # mid -> event seq
        self._sent: collections.deque[list[int]] = collections.deque()  # [seq, acked] in send order
        self._waiting_since: float | None = None  # monotonic time since which the oldest unconfirmed event waits
        self._acked_cursor = -1
        # the case being published
        self._case_id: str | None = None
        self._cursor = -1  # last event seq handed to the broker
        self._reader: JournalReader | None = None
        self._last_state_at = 0.0
        self._pending_state: tuple[Any, float] | None = None
        self._latest_alarms: tuple[Any, float] | None = None
        self._latest_inbox: Any = None
        self._last_health = 0.0
        self._notice = False
        self._worker: ThreadPoolExecutor | None = None
        self._pending_requests = 0
        self._reader_rate: dict[str, collections.deque[float]] = {}

    # ------------------------------------------------------------------ engine side

    def offer(self, stream: str, message: Any) -> None:
        """From the engine thread: never blocks."""
        self.queue.put(stream, message, time.time())

    def wants(self, stream: str) -> bool:
        """Streams the engine should produce for us (waveforms and EMG only while connected)."""
        if stream in ("waveforms", "emg"):
            return self._connected
        return stream in ("state", "events", "measurements", "alarms")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lnm-remote", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _make_client(self) -> Any:
        if self._client_factory is not None:
            return self._client_factory()
        import paho.mqtt.client as mqtt

        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lnm-{cfg.appliance_id}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        configure_client(client, cfg.broker, username=cfg.appliance_id if cfg.password is not None else None,
                         password=cfg.password, ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key)
        client.will_set(self.topics.of("status"), rp.encode(rp.status_payload(
            cfg.appliance_id, False, time.time(), self.software, "connection lost")), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.max_queued_messages_set(5000)
        return client

    def _run(self) -> None:
        try:
            self._client = self._make_client()
            c = self._client
            c.on_connect = self._on_connect
            c.on_disconnect = self._on_disconnect
            c.on_publish = self._on_publish
            c.on_message = self._on_message
            c.connect_async(self.config.broker.host, self.config.broker.port, keepalive=10)
            c.loop_start()
        except Exception as exc:  # noqa: BLE001 - a broken TLS file or the like: a notice, never a crash
            log.error("remote publisher cannot start: %s", exc)
            self.health.last_error = f"cannot start: {exc}"
            self._on_health(False, self.health.last_error)
            self._client = None
            return
        failures = 0
        try:
            while not self._stop.is_set():
                self.queue.wake.wait(0.25)
                self.queue.wake.clear()
                try:
                    self._round()
                    failures = 0
                except Exception:  # noqa: BLE001 - logged loudly; the engine carries on regardless
                    failures += 1
                    log.exception("remote publisher: a round failed (%d in a row)", failures)
                    self.health.last_error = "the publisher hit an error (see the engine log)"
                    self._stop.wait(min(5.0, 0.5 * failures))
        finally:
            self._close()

    def _close(self) -> None:
        c = self._client
        if c is not None:
            try:
                if self._connected:
                    info = c.publish(self.topics.of("status"), rp.encode(rp.status_payload(
                        self.config.appliance_id, False, time.time(), self.software, "stopped")), qos=1, retain=True)
                    info.wait_for_publish(1.0)
                c.disconnect()
            except Exception as exc:  # noqa: BLE001 - closing down: nothing more to save
                log.info("remote: while disconnecting: %s", exc)
            c.loop_stop()
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
        if self._reader is not None:
            self._reader.close()

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if getattr(reason_code, "is_failure", False):
            self.health.last_error = f"the broker refused the connection: {reason_code}"
            log.warning("remote: %s", self.health.last_error)
            return
        self._connected = True
        self._just_connected = True
        self.queue.wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        was = self._connected
        self._connected = False
        self._link_events.put(("down",))
        if was:
            self.health.last_error = f"connection lost: {reason_code}"
            log.warning("remote: broker connection lost (%s)", reason_code)
        self.queue.wake.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any = None,
                    properties: Any = None) -> None:
        self._link_events.put(("ack", mid))

    def _drain_link_events(self) -> None:
        """Publisher thread: PUBACKs advance the cursor of what the broker holds; a broken
        connection sets the event cursor back to it (everything after is published again)."""
        while True:
            try:
                item = self._link_events.get_nowait()
            except queue.Empty:
                return
            if item[0] == "ack":
                seq = self._unacked.pop(item[1], None)
                if seq is not None:
                    self._acked(seq)
                    # the broker confirms: whatever still waits, waits from now
                    self._waiting_since = time.monotonic() if self._unacked else None
            else:
                self._cursor = self._acked_cursor
                self._unacked.clear()
                self._sent.clear()
                self._waiting_since = None

    def _acked(self, seq: int) -> None:
        for item in self._sent:
            if item[0] == seq:
                item[1] = 1
                break
        while self._sent and self._sent[0][1]:
            self._acked_cursor = self._sent.popleft()[0]

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._inbox(msg)
        except Exception:  # noqa: BLE001 - one bad message never ends the connection
            self.health.refused_inbox += 1
            log.exception("remote: an inbox message could not be handled")

    def _inbox(self, msg: Any) -> None:
        parsed = rp.parse_topic(msg.topic, self.config.topic_prefix)
        if parsed is None or parsed[0] != self.config.appliance_id or parsed[1] != rp.INBOX:
            return
        try:
            item = rp.parse_inbox(parsed[2], bytes(msg.payload))
        except rp.InboxError as exc:
            self.health.refused_inbox += 1
            log.warning("remote: inbox message from %s refused: %s", parsed[2], exc)
            return
        if isinstance(item, rp.ReaderMessage):
            if not self._rate_ok(item.reader):
                self.health.refused_inbox += 1
                log.warning("remote: too many messages from %s; refused", item.reader)
                return
            self._deliver(item)
        else:
            self._request(item)

    def _rate_ok(self, reader: str) -> bool:
        now = time.monotonic()
        q = self._reader_rate.setdefault(reader, collections.deque())
        while q and now - q[0] > 60.0:
            q.popleft()
        if len(q) >= READER_MESSAGES_PER_MIN:
            return False
        q.append(now)
        return True

    # ------------------------------------------------------------------ the publisher thread

    def _publish(self, kind: str, payload: Any, *, encoded: bytes | None = None) -> Any:
        qos, retain = rp.PUBLISHED[kind]
        data = encoded if encoded is not None else _json_safe(payload)
        if data is None:
            return None
        info = self._client.publish(self.topics.of(kind), data, qos=qos, retain=retain)
        self.health.published[kind] += 1
        return info

    def _round(self) -> None:
        latest, bulk, poke = self.queue.take()
        now = time.monotonic()
        if "state" in latest:
            self._pending_state = latest["state"]
            self._follow_case(latest["state"][0])
        if "alarms" in latest:
            self._latest_alarms = latest["alarms"]
        if "inbox" in latest:
            self._latest_inbox = latest["inbox"][0]
        self._drain_link_events()
        connected, fresh = self._connected, self._just_connected
        self._just_connected = False
        self._check_notice(connected, now)
        if not connected:
            for stream, _m, _at in bulk:
                self.queue.dropped.add(stream + "_offline")
            return
        if fresh:
            self._connected_now()
        if "alarms" in latest or fresh:
            self._send_alarms()
        if "inbox" in latest or (fresh and self._latest_inbox is not None):
            self._publish("messages", {"v": rp.VERSION, "appliance": self.config.appliance_id,
                                       **{k: v for k, v in (self._latest_inbox or {}).items() if k != "type"}})
        if self._pending_state is not None and (fresh or now - self._last_state_at >= STATE_INTERVAL_S):
            state, _at = self._pending_state
            self._pending_state = None
            self._last_state_at = now
            self._publish("state", rp.state_payload(state, self.config.appliance_id, time.time()))
        self._publish_events()
        for stream, message, _at in bulk:
            self._publish_bulk(stream, message)
        if now - self._last_health >= HEALTH_INTERVAL_S:
            self._last_health = now
            self._publish("health", self.health_json())

    def _connected_now(self) -> None:
        self.health.reconnects += 1 if self.health.connected_since is not None else 0
        self.health.connected = True
        self.health.connected_since = time.monotonic()
        self.health.disconnected_since = None
        self.health.last_error = ""
        self._client.subscribe(self.topics.inbox_filter, qos=1)
        self._publish("status", rp.status_payload(self.config.appliance_id, True, time.time(), self.software))
        log.info("remote: connected to %s as %s", self.config.broker.url(), self.config.appliance_id)

    def _send_alarms(self) -> None:
        if self._latest_alarms is None:
            return
        alarms, at = self._latest_alarms
        self._publish("alarm", rp.alarm_payload(alarms, self.config.appliance_id, self._case_id, time.time(), at))

    def _publish_bulk(self, stream: str, message: Any) -> None:
        try:
            if stream == "measurements":
                self._publish("measurement", rp.measurement_payload(message, self._case_id))
            elif stream == "waveforms":
                self._publish("waveform", rp.waveform_payload(message, self._case_id))
            elif stream == "emg":
                self._publish("emg", rp.emg_payload(message, self._case_id))
        except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
            self.queue.dropped.add(stream + "_bad")
            log.debug("remote: %s message skipped (%s)", stream, exc)

    # -- events from the journal

    def _follow_case(self, state: Any) -> None:
        case = state.get("case") if isinstance(state, dict) else None
        case_id = case.get("case_id") if isinstance(case, dict) else None
        if case_id == self._case_id:
            return
        if self._case_id is not None and self._connected:
            self._publish_events(drain=True)  # the old case's last events (its closing) first
        self._case_id = case_id
        self._cursor = -1  # a case is published from its beginning (readers drop what they have)
        self._acked_cursor = -1
        self._unacked.clear()
        self._sent.clear()
        self._waiting_since = None

    def _journal(self) -> JournalReader | None:
        if self._reader is None:
            try:
                self._reader = JournalReader(self.journal_path)
            except Exception as exc:  # noqa: BLE001 - the record is the engine's problem; we wait
                log.warning("remote: the case journal cannot be read yet: %s", exc)
                return None
        return self._reader

    def _publish_events(self, drain: bool = False) -> None:
        case_id = self._case_id
        if case_id is None:
            return
        reader = self._journal()
        if reader is None:
            return
        while True:
            self._drain_link_events()
            if not self._connected or len(self._unacked) >= MAX_UNACKED:
                return
            cursor = self._cursor
            try:
                rows = reader.events_after(case_id, cursor)
            except sqlite3.Error as exc:
                log.warning("remote: reading the case journal failed: %s", exc)
                return
            for seq, kind, t_s, wall, payload in rows:
                data = _json_safe(rp.event_payload(case_id, seq, cursor, kind, t_s, wall, payload))
                info = self._client.publish(self.topics.of("event"), data, qos=1, retain=False)
                self._unacked[info.mid] = seq
                self._sent.append([seq, 0])
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                self._cursor = cursor = seq
                self.health.published["event"] += 1
            if not rows or (len(rows) < EVENT_BATCH and not drain):
                return

    # -- requests from readers (worker thread)

    def _request(self, item: rp.BackfillRequest | rp.StimulusRequest) -> None:
        with self._lock:
            if self._pending_requests >= MAX_PENDING_REQUESTS:
                self.health.refused_inbox += 1
                log.warning("remote: request from %s refused: too many waiting", item.reader)
                return
            self._pending_requests += 1
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lnm-remote-history")
        self._worker.submit(self._answer, item)

    def _answer(self, item: rp.BackfillRequest | rp.StimulusRequest) -> None:
        reader: JournalReader | None = None
        try:
            reader = JournalReader(self.journal_path)
            if isinstance(item, rp.BackfillRequest):
                self._answer_backfill(reader, item)
            else:
                self._answer_stimulus(reader, item)
        except Exception as exc:  # noqa: BLE001 - one bad request never stops the publisher
            log.warning("remote: request %s from %s failed: %s", item.request_id, item.reader, exc)
            self._history({"type": "error", "request_id": item.request_id, "reader": item.reader,
                           "message": f"the appliance could not answer: {exc}"})
        finally:
            if reader is not None:
                reader.close()
            with self._lock:
                self._pending_requests -= 1

    def _history(self, body: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            return
        data = rp.encode({"v": rp.VERSION, "appliance": self.config.appliance_id, **body})
        client.publish(self.topics.of("history"), data, qos=1, retain=False)

    def _answer_backfill(self, reader: JournalReader, req: rp.BackfillRequest) -> None:
        case_id = self._case_id
        base = {"type": "backfill", "request_id": req.request_id, "reader": req.reader, "case_id": case_id}
        if case_id is None:
            self._history({**base, "part": 0, "last": True, "events": [], "measurements": None})
            return
        part = 0
        cursor = req.since_seq
        prev = reader.last_event_before(case_id, cursor + 1) if cursor >= 0 else -1
        while True:
            rows = reader.events_after(case_id, cursor, BACKFILL_CHUNK)
            events = []
            for seq, kind, t_s, wall, payload in rows:
                events.append(rp.event_payload(case_id, seq, prev, kind, t_s, wall, payload))
                prev = cursor = seq
            if len(rows) < BACKFILL_CHUNK:
                break
            self._history({**base, "part": part, "last": False, "events": events})
            part += 1
        if not req.measurements:
            self._history({**base, "part": part, "last": True, "events": events})
            return
        self._history({**base, "part": part, "last": False, "events": events})
        stimuli = reader.stimuli(case_id)
        for i in range(0, max(1, len(stimuli)), MEASUREMENT_CHUNK):
            part += 1
            chunk = stimuli[i:i + MEASUREMENT_CHUNK]
            self._history({**base, "part": part, "last": i + MEASUREMENT_CHUNK >= len(stimuli), "events": [],
                           "measurements": chunk})

    @staticmethod
    def _epoch_when_stored(reader: JournalReader, case_id: str,
                           index: int) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """``reader.epoch``; a recent epoch kept as samples of the free-running stream is on
        the disk only once the engine has journaled that stretch of the stream (a few
        seconds): this (history) thread waits for it, up to ``STREAM_WAIT_S``."""
        got = reader.epoch(case_id, index)
        deadline = time.monotonic() + STREAM_WAIT_S
        while got is not None and got[1] is None and "waveform_in_stream" in got[0] and time.monotonic() < deadline:
            time.sleep(0.1)
            got = reader.epoch(case_id, index)
        return got

    def _answer_stimulus(self, reader: JournalReader, req: rp.StimulusRequest) -> None:
        case_id = self._case_id
        base = {"type": "stimulus", "request_id": req.request_id, "reader": req.reader, "case_id": case_id,
                "index": req.index}
        got = self._epoch_when_stored(reader, case_id, req.index) if case_id else None
        if case_id is None or got is None:
            self._history({**base, "found": False})
            return
        measurement, waveform = got
        baseline = None
        b_index = reader.baseline_index(case_id, str(measurement.get("side")), str(measurement.get("site")),
                                        req.index)
        if b_index is not None:
            b = self._epoch_when_stored(reader, case_id, b_index)
            if b is not None:
                baseline = {"index": b_index, "measurement": b[0], "waveform": b[1]}
        self._history({**base, "found": True, "measurement": measurement, "waveform": waveform,
                       "baseline": baseline})

    # -- health and the touchscreen notice

    def _check_notice(self, connected: bool, now: float) -> None:
        h = self.health
        if not connected:
            h.connected = False
            if h.disconnected_since is None:
                h.disconnected_since = now
        # slow: too many events unconfirmed, or the broker confirmed none for notice_after_s
        # (a hung broker or network keeps the connection open until the keepalive gives up)
        stalled = (self._waiting_since is not None and bool(self._unacked)
                   and now - self._waiting_since >= self.config.notice_after_s)
        slow = connected and (len(self._unacked) >= MAX_UNACKED or stalled)
        down_for = (now - h.disconnected_since) if (not connected and h.disconnected_since is not None) else 0.0
        bad = down_for >= self.config.notice_after_s or slow
        if bad and not self._notice:
            self._notice = True
            why = ("the broker is slow: events wait for its confirmation" if slow else
                   f"no connection to the broker {self.config.broker.url()} for {down_for:.0f} s"
                   + (f" ({h.last_error})" if h.last_error else ""))
            self._on_health(False, why)
        elif not bad and self._notice and connected:
            self._notice = False
            self._on_health(True, "")

    def health_json(self) -> dict[str, Any]:
        h = self.health
        unacked = len(self._unacked)
        cursor, acked = self._cursor, self._acked_cursor
        return {"v": rp.VERSION, "appliance": self.config.appliance_id, "at": time.time(),
                "connected_for_s": (None if h.connected_since is None
                                    else round(time.monotonic() - h.connected_since, 1)),
                "reconnects": h.reconnects, "case_id": self._case_id, "event_seq": cursor, "acked_seq": acked,
                "unacked": unacked, "queue": self.queue.depth(), "dropped": dict(self.queue.dropped.counts),
                "refused_inbox": h.refused_inbox, "notice": self._notice, "last_error": h.last_error}
