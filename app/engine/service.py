"""The live engine: the thin threaded shell around ``core.Monitor``.

Owns: ``EngineService`` (board link, engine loop, API server, journal, outputs, systemd
notifications, loop supervision, fail-safe exit) and ``EngineConfig``.
May import: everything the engine composes (``firmware_bridge.link``, ``app.record``,
``app.engine.*``, ``app.api.server``), the standard library.

Threads:

- the board link's reader and supervisor (``BoardLink``): decoded messages and link
  events go into the engine queue; the link sends the host heartbeat, but only while
  the engine loop is healthy (see *supervision*);
- the API server (``ApiServer``): requests go into the engine queue with a ``respond``
  callback; stream messages come back through ``publish``, which never blocks;
- the engine loop (the main thread): takes everything from the queue in order, hands it
  to the monitor, ticks it at about 100 Hz, sends the monitor's host messages to the
  board, tells the link whether an alarm sounds, and notifies systemd's watchdog;
- the loop guard: if the engine loop makes no progress for ``stall_s`` it stops the
  board heartbeat (the board then stops stimulating within 500 ms and sounds its backup
  beeper after 2 s) and withholds the systemd watchdog, so systemd restarts the engine.

Fail safe: an unexpected exception in the loop stops stimulation, raises the
engine-fault alarm, journals it, stops the board heartbeat and exits with status 70;
systemd restarts the engine, which resumes the open case from the journal.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import __version__
from app.api import protocol as p
from app.api.server import ApiServer
from app.engine.core import EngineOptions, Monitor
from app.engine.notify import Notifier
from app.settings import Settings
from firmware_bridge.clock import Clock, MonotonicClock

log = logging.getLogger("lnm.engine")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FAULT = 70  # EX_SOFTWARE: an unexpected error; the supervisor restarts us


@dataclass
class EngineConfig:
    """How the engine service runs: settings, board, socket, data folder, outputs, timing."""

    settings: Settings
    board_url: str
    socket_path: Path
    data_dir: Path
    audio: str = "capture"
    gpio: str = "sim"
    profile: str | None = None
    config_dir: Path | None = None
    options: EngineOptions = field(default_factory=EngineOptions)
    tick_s: float = 0.01
    stall_s: float = 1.0
    resume: bool = True


class EngineService:
    """Run the engine until stopped (``stop()``, SIGTERM/SIGINT) or a fault."""

    def __init__(self, config: EngineConfig, clock: Clock | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.notifier = notifier or Notifier()
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._loop_beat = time.monotonic()
        self._guard_tripped = False
        self.monitor: Monitor | None = None
        self.link: Any = None
        self.server: ApiServer | None = None
        self.journal: Any = None
        self.outputs: Any = None
        self.exit_code = EXIT_OK
        self.resumed_case: str | None = None
        self._wants: set[str] = set()
        self.worker: ThreadPoolExecutor | None = None
        self.remote: Any = None  # app.remote.hook.RemoteHook while [remote] is enabled

    # ------------------------------------------------------------------ start

    def _open(self) -> None:
        from app.engine.documents import Documents
        from app.engine.outputs import make_outputs
        from app.record.journal import Journal
        from app.remote.hook import attach as attach_remote
        from app.settings import load as load_settings
        from firmware_bridge.link import BoardLink

        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(cfg.data_dir / "journal.db", clock=self.clock,
                               on_status=lambda st: self.queue.put(("storage", st)))
        self.remote = attach_remote(self)  # the remote publisher (app.remote), when [remote] is enabled
        self.monitor = Monitor(
            cfg.settings, self.clock, journal=self.journal, options=cfg.options,
            sink=self._publish, wants=self._wanted, board_url=cfg.board_url, profile=cfg.profile,
            config_dir=cfg.config_dir, settings_loader=load_settings,
            documents=Documents(self.journal, cfg.data_dir, cfg.settings),
        )
        self.outputs = make_outputs(self.monitor.alarms, self.clock, cfg.settings, audio=cfg.audio, gpio=cfg.gpio,
                                    on_footswitch=lambda ev: self.monitor.footswitch(ev) if self.monitor else None)
        self.monitor.outputs = self.outputs
        if cfg.resume:
            from app.engine.resume import resume_open_case

            self.resumed_case = resume_open_case(self.monitor, self.journal)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lnm-documents")
        self.server = ApiServer(cfg.socket_path, self._handle_request, self._hello,
                                on_client=lambda what, who: self.queue.put(("client", what, who)),
                                slow_commands={c: 600.0 for c in Monitor.OFFLINE})
        self.server.start()
        hb = float(cfg.settings["link.heartbeat_ms"]) / 1000.0
        timeout = float(cfg.settings["link.timeout_ms"]) / 1000.0
        self.link = BoardLink(cfg.board_url, clock=self.clock, heartbeat_s=hb, timeout_s=timeout,
                              on_message=lambda m: self.queue.put(("msg", m)),
                              on_event=lambda e: self.queue.put(("link", e.kind.value, e.detail)))
        self.link.start()

    def _hello(self) -> dict[str, Any]:
        m = self.monitor
        caps = m.capabilities if m else None
        return p.hello(f"lnm {__version__}", simulated=bool(caps and caps.simulated),
                       board_url=self.config.board_url, case_id=m.case_id if m else None)

    def _handle_request(self, req: p.Request, respond: Any) -> None:
        self.queue.put(("cmd", req, respond))

    def _publish(self, stream: str, message: Any, sticky: bool) -> None:
        if self.server is not None:
            self.server.publish(stream, message, sticky=sticky)
        if self.remote is not None:
            self.remote.offer(stream, message)  # never blocks (app.remote.publisher.OutQueue)

    def _wanted(self, stream: str) -> bool:
        return stream in self._wants or (self.remote is not None and self.remote.wants(stream))

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        installed = self._install_signals()
        try:
            try:
                self._open()
            except Exception:
                self._shutdown()
                raise
            guard = threading.Thread(target=self._guard, name="lnm-loop-guard", daemon=True)
            guard.start()
            self.notifier.ready(f"monitoring; board {self.config.board_url}")
            log.info("engine ready: board %s, socket %s, data %s", self.config.board_url,
                     self.config.socket_path, self.config.data_dir)
            self._loop()
        finally:
            self._shutdown()
            if installed:
                self._restore_signals(installed)
        return self.exit_code

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        m = self.monitor
        if m is None:
            return
        tick_s = self.config.tick_s
        next_tick = time.monotonic()
        next_watchdog = time.monotonic()
        try:
            while not self._stop.is_set():
                self._loop_beat = time.monotonic()
                timeout = max(0.0, next_tick - time.monotonic())
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                n = 0
                while item is not None:
                    self._dispatch(item)
                    n += 1
                    if n >= 500:
                        break
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        item = None
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + tick_s
                    self._refresh_wants()
                    m.tick()
                self._send_to_board()
                self.link.set_alarm_active(m.alarm_sounding)
                if self.notifier.watchdog_s and now >= next_watchdog and not self._guard_tripped:
                    self.notifier.watchdog()
                    next_watchdog = now + self.notifier.watchdog_s
        except Exception as exc:  # noqa: BLE001 - the fail-safe path: anything unexpected
            self._guard_tripped = True  # from here on, nothing may resume the heartbeat
            self._fail(exc)
        finally:
            self._stop.set()

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        m = self.monitor
        kind = item[0]
        if kind == "msg":
            m.board_message(item[1])
        elif kind == "link":
            m.link_event(item[1], item[2])
        elif kind == "cmd":
            req, respond = item[1], item[2]
            if req.expired(time.monotonic()):
                # the engine was held up: its client has been (or is about to be) told
                # "timeout", so the command must not take effect behind its back
                log.warning("API command %s from %s expired before it could run", req.cmd, req.client)
                respond(p.reply_error(req.id, p.ApiError(p.EXPIRED, (
                    f"{req.cmd}: not carried out; the engine reached it too late. Send it again if still wanted."))))
                return
            if req.cmd in m.OFFLINE:
                job = m.offline_job(req)  # prepared here; the slow part runs in the worker
                self.worker.submit(lambda: respond(job()))
                return
            reply = m.handle(req)
            self._send_to_board()  # before the reply: a command's effect is on its way
            respond(reply)
        elif kind == "storage":
            st = item[1]
            m.storage_status(st.ok, st.message)
        elif kind == "client":
            log.info("API client %s: %s", item[2], item[1])
        elif kind == "call":  # work another thread (the remote publisher) needs done on the engine thread
            item[1]()

    def _send_to_board(self) -> None:
        from firmware_bridge.link import LinkDown

        for msg in self.monitor.take_host_messages():
            try:
                self.link.send(msg)
            except LinkDown as exc:
                log.warning("not sent to the board (%s): %s", type(msg).__name__, exc)

    def _refresh_wants(self) -> None:
        if self.server is None:
            return
        self._wants = self.server.subscribed_streams()

    def _fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.critical("engine fault, stopping stimulation and exiting: %s\n%s", reason, traceback.format_exc())
        self.exit_code = EXIT_FAULT
        m = self.monitor
        try:
            for msg in m.fail_safe(reason + "\n" + traceback.format_exc(limit=8)):
                try:
                    self.link.send(msg)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            if self.server is not None:
                self.server.publish("alarms", m.alarms_json(), sticky=True)
                self.server.publish("state", m.state_snapshot(), sticky=True)
                time.sleep(0.2)  # let clients see the engine-fault alarm
        except Exception as inner:  # noqa: BLE001
            log.critical("fail-safe path failed too: %s", inner)
        if self.link is not None:
            self.link.pause_heartbeat()  # the board stops stimulating and beeps on its own

    def _guard(self) -> None:
        stall = self.config.stall_s
        while not self._stop.wait(0.1):
            late = time.monotonic() - self._loop_beat
            if late > stall and not self._guard_tripped:
                self._guard_tripped = True
                log.critical("engine loop stalled for %.1f s: board heartbeat stopped", late)
                if self.link is not None:
                    self.link.pause_heartbeat()
            elif late <= stall and self._guard_tripped and self.exit_code == EXIT_OK:
                self._guard_tripped = False
                log.warning("engine loop running again: board heartbeat resumed")
                if self.link is not None:
                    self.link.resume_heartbeat()

    # ------------------------------------------------------------------ stop

    def _shutdown(self) -> None:
        m = self.monitor
        if m is not None and self.exit_code == EXIT_OK:
            try:
                for msg in m.shutdown():
                    try:
                        self.link.send(msg)
                    except Exception:  # noqa: BLE001 - the board stops anyway without heartbeats
                        pass
            except Exception as exc:  # noqa: BLE001
                log.error("while stopping: %s", exc)
        self.notifier.stopping()
        if self.remote is not None:
            self.remote.stop()
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)
        if self.server is not None:
            self.server.close()
        if self.link is not None:
            self.link.close()
        if self.outputs is not None:
            self.outputs.close()
        if self.journal is not None:
            self.journal.close()

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: self.stop())
        return old

    @staticmethod
    def _restore_signals(old: dict[int, Any]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def default_data_dir() -> Path:
    """The folder of the default case journal."""
    from app.record.journal import default_journal_path

    return default_journal_path().parent


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
