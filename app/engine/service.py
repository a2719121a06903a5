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
- the documents worker (``lnm-documents``): report and USB export jobs, beside the loop;
- the audio writer of the ALSA backend (``app.outputs.audio``), when it is used;
- the supervisor (``lnm-supervisor``): thread supervision, below.

Supervision (``app.engine.supervision``): every thread above is registered with a
heartbeat and its expected period, or a liveness probe. Ten times a second the
supervisor judges them all and acts on one in trouble:

- the engine loop (heartbeat, ``stall_s``): stalled, the board heartbeat stops (the board
  then stops stimulating within 500 ms and sounds its backup beeper after 2 s) until the
  loop runs again; a stall is not a fault, systemd's watchdog decides;
- the API server (heartbeat, ``api_stall_s``; liveness) and the documents worker (busy
  for longer than ``documents_stall_s``): restarted after ``restart_delay_s``, the API
  with its clients dropped and the socket bound again (clients reconnect by themselves,
  the latest state and alarms are kept), the worker by a new one (a stuck job is
  abandoned; its client was told ``timeout``). Each restart is journaled (engine entry
  ``thread_restarted``). More than ``max_restarts`` in ``restart_window_s``: fail safe;
- the board link's reader and supervisor, and the audio writer (liveness): a dead one is
  not restartable from here, so the engine fails safe.

The systemd watchdog is fed from the engine loop, and only while the supervisor's
latest verdict (no older than a second) says every thread is running or idle: a dead
supervisor, a stalled thread or one being restarted all stop the notifications.
``state.get`` and the state stream carry the verdict (``threads``), which ``lnm status``
shows.

Fail safe: an unexpected exception in the loop (or a thread that cannot be restarted)
stops stimulation, raises the engine-fault alarm, journals it, stops the board heartbeat
and exits with status 70; systemd restarts the engine, which resumes the open case from
the journal.
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
from app.engine.supervision import DEAD, FAILED, RUNNING, STALLED, Change, Heartbeat, Policy, Supervisor, Watch
from app.settings import Settings
from firmware_bridge.clock import Clock, MonotonicClock

log = logging.getLogger("lnm.engine")

EXIT_OK = 0
EXIT_CONFIG = 2  # only for a bad command line or a claim refused (socket path, data folder held by another engine)
RESERVE_NAME = "journal.reserve"
LOW_FREE_BYTES = 200_000_000  # about an hour of full recording: below it, the raw EMG is no longer written
EXIT_FAULT = 70  # EX_SOFTWARE: an unexpected error; the supervisor restarts us
VERDICT_MAX_AGE_S = 1.0  # the watchdog is fed only on a supervision verdict at most this old


class ThreadFailure(RuntimeError):
    """An engine thread died or stalled and cannot be restarted: the engine fails safe."""


@dataclass
class EngineConfig:
    """How the live engine runs (what ``lnm engine`` is told, and its supervision timing)."""

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
    stall_s: float = 1.0  # engine loop silent this long: stalled (board heartbeat stops)
    resume: bool = True
    api_stall_s: float = 3.0  # API server thread silent this long: stalled (restarted)
    documents_stall_s: float = 660.0  # one documents job longer than this: stalled (worker replaced)
    restart_delay_s: float = 0.5  # a stalled or dead thread is restarted after this long
    max_restarts: int = 3  # restarts of one thread within restart_window_s; one more: fail safe
    restart_window_s: float = 600.0
    supervise_s: float = 0.1  # how often every thread is judged
    writer_stall_s: float = 10.0  # one journal write longer than this: the writer is shown stalled
    record_wait_s: float = 0.5  # an operator command's reply waits this long for its entries to be on disk
    config_problem: str | None = None  # the configuration was refused at start: what runs instead, and why
    reserve_bytes: int | None = None  # the storage reserve (None: sized by app.engine.writer.reserve_size)


class EngineService:
    """Run the engine until stopped (``stop()``, SIGTERM/SIGINT) or a fault."""

    def __init__(self, config: EngineConfig, clock: Clock | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock or MonotonicClock()
        self.notifier = notifier or Notifier()
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._guard_tripped = False
        self.supervisor = Supervisor(time.monotonic, max_restarts=config.max_restarts,
                                     window_s=config.restart_window_s)
        loop_hb = self.supervisor.watch("engine-loop", "engine loop (measurement, rules, alarms, journal)",
                                        Policy.HOLD, stall_s=config.stall_s)
        if loop_hb is None:  # a watch with a stall time always has a heartbeat
            raise RuntimeError("the engine loop's supervision has no heartbeat")
        self._loop_hb: Heartbeat = loop_hb
        self._api_hb: Heartbeat | None = None
        self._docs_hb: Heartbeat | None = None
        self._verdict: tuple[bool, float] = (False, -1e9)  # (all healthy, when judged)
        self._fault_requested = False
        self._supervisor_thread: threading.Thread | None = None
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
        self.record_start: Any = None
        self._writer_hb: Heartbeat | None = None
        self._writer_woken = threading.Event()
        self._replies: list[tuple[int, float, Any, dict[str, Any]]] = []  # (ticket, deadline, respond, reply)

    def _monitor(self) -> Monitor:
        """The monitor (the engine is open)."""
        m = self.monitor
        if m is None:
            raise RuntimeError("the engine is not open: no monitor")
        return m

    # ------------------------------------------------------------------ start

    def _open(self) -> None:
        from app.engine.inbox import receive as receive_reader_message
        from app.engine.outputs import make_outputs
        from app.remote.hook import attach as attach_remote
        from app.settings import load as load_settings
        from firmware_bridge.link import BoardLink

        cfg = self.config
        from app.record.lock import DataFolderBusy, DataFolderLock, check_socket_path

        check_socket_path(cfg.socket_path)  # never replace a file that is not a socket
        lock_problem = None
        self.data_lock: DataFolderLock | None = None
        try:
            self.data_lock = DataFolderLock(cfg.data_dir).acquire()  # one engine per data folder
        except DataFolderBusy:
            raise
        except OSError as exc:  # the record's problem, not monitoring's: monitor without a record
            self.data_lock = None
            from app.record.journal import classify

            lock_problem = f"the data folder {cfg.data_dir} cannot be used ({classify(exc)[1]}: {exc.strerror or exc})"
            log.error("%s: monitoring without a record", lock_problem)
        writer = self._open_record(lock_problem)
        self.monitor = Monitor(
            cfg.settings, self.clock, journal=self.journal, options=cfg.options,
            sink=self._publish, wants=self._wanted, board_url=cfg.board_url, profile=cfg.profile,
            config_dir=cfg.config_dir, settings_loader=load_settings, writer=writer,
            documents=self._documents(),
        )
        self.outputs = make_outputs(self.monitor.alarms, self.clock, cfg.settings, audio=cfg.audio, gpio=cfg.gpio,
                                    on_footswitch=lambda ev: self.monitor.footswitch(ev) if self.monitor else None)
        self.monitor.outputs = self.outputs
        # the remote publisher (app.remote), when [remote] is enabled: fed by _publish like the
        # API server, never waited for; before the resume, so that a resumed case is published
        self.remote = attach_remote(self, receive=receive_reader_message)
        self._start_notes()
        if cfg.resume and self.journal is not None:
            from app.engine.resume import resume_open_case

            self.resumed_case = resume_open_case(self.monitor, self.journal)
        self.monitor.tick()  # the start-up's alarms reach the outputs before anything else
        writer.start()
        sup = self.supervisor
        self._docs_hb = sup.watch("documents", "documents worker (reports, USB export)", Policy.RESTART,
                                  stall_s=cfg.documents_stall_s, busy=False)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lnm-documents")
        self._retention()
        self._api_hb = sup.watch("api", "local API (touchscreen, service console)", Policy.RESTART,
                                 stall_s=cfg.api_stall_s, alive=lambda: self.server is not None and self.server.alive)
        self.server = self._new_server(self._api_hb, {})
        self.server.start()
        hb = float(cfg.settings["link.heartbeat_ms"]) / 1000.0
        timeout = float(cfg.settings["link.timeout_ms"]) / 1000.0
        self.link = BoardLink(cfg.board_url, clock=self.clock, heartbeat_s=hb, timeout_s=timeout,
                              on_message=lambda m: self.queue.put(("msg", m)),
                              on_event=lambda e: self.queue.put(("link", e.kind.value, e.detail, e.data)))
        self.monitor.link_health = self.link.health  # thread-safe counters (state, status, journal, report)
        self.link.start()
        link_threads = self.link.threads()
        if not link_threads:
            log.error("the board link shows no threads: its reader and supervisor are NOT supervised")
        jobs = {"reader": "frames from the board", "supervisor": "heartbeats to the board, loss detection"}
        for t in link_threads:
            role = t.name.rsplit("-", 1)[-1]
            sup.watch(t.name, f"board link {role} ({jobs.get(role, 'board link')})", Policy.FAIL_SAFE,
                      alive=t.is_alive, heartbeat=False)
        audio = getattr(self.outputs, "audio", None)
        for t in audio.threads() if audio is not None else []:
            if t.is_alive():
                sup.watch("audio-writer", "loudspeaker writer (alarm sounds)", Policy.FAIL_SAFE, alive=t.is_alive,
                          heartbeat=False)

    # ------------------------------------------------------------------ the record at start-up

    def _open_record(self, lock_problem: str | None) -> Any:
        """The journal, whatever state it is in (``app.record.journal.open_for_engine``), and its
        writer thread (supervised, ``degrade``: a stuck disk never stops monitoring)."""
        from app.engine.writer import JournalWriter, Reserve, reserve_size
        from app.record.journal import open_for_engine

        cfg = self.config
        st = cfg.settings
        size = cfg.reserve_bytes if cfg.reserve_bytes is not None else reserve_size()
        reserve = Reserve(cfg.data_dir / RESERVE_NAME, size) if lock_problem is None and size > 0 else None
        kw: dict[str, Any] = {"clock": self.clock, "min_free_hours": float(st["record.min_free_hours"])}
        if lock_problem is None:
            opened = open_for_engine(cfg.data_dir, release_space=reserve.release if reserve else None, **kw)
        else:
            from app.record.journal import EngineJournal

            opened = EngineJournal(None, "not_recording", f"NOT RECORDING: {lock_problem}. Monitoring and alarms "
                                                          "continue without a record; call service")
        self.journal = opened.journal
        self.record_start = opened
        if opened.state != "recording":
            log.error("case record at start-up: %s", opened.message)

        def reopen() -> Any:
            again = open_for_engine(cfg.data_dir, **kw)
            return again.journal if again.state == "recording" else None

        self._writer_hb = self.supervisor.watch(
            "journal-writer", "case journal writer (the record; monitoring never waits for it)", Policy.DEGRADE,
            stall_s=cfg.writer_stall_s, busy=False)
        return JournalWriter(
            self.journal, threaded=True, heartbeat=self._writer_hb, on_progress=self._writer_progress,
            opener=reopen if lock_problem is None else None, reserve=reserve,
            low_free_bytes=min(LOW_FREE_BYTES, size) if reserve is not None else 0,
            start_note=None if opened.state == "recording" else (opened.state, opened.message))

    def _documents(self) -> Any:
        from app.engine.documents import Documents

        if self.journal is None:
            return None
        return Documents(self.journal, self.config.data_dir, self.config.settings)

    def _start_notes(self) -> None:
        """What start-up found that people must know: a refused configuration (technical alarm),
        or the configuration kept as the last one that was valid."""
        from app.alarms import AlarmKind
        from app.settings import SettingError, save_last_valid

        cfg = self.config
        m = self._monitor()
        if cfg.config_problem:  # momentary: latched until acknowledged
            m.alarm_desk.raise_technical(AlarmKind.CONFIG_PROBLEM, message=cfg.config_problem)
            m.ledger.event("technical", "config_refused", cfg.config_problem, priority="medium")
            return
        try:
            save_last_valid(cfg.settings, cfg.data_dir, source=str(cfg.config_dir or "shipped configuration"),
                            profile=cfg.profile)
        except (OSError, SettingError, TypeError) as exc:
            log.warning("the last valid configuration was not kept: %s", exc)

    def _retention(self) -> None:
        """Retention at start-up with no case open, in the documents worker (it reads whole cases
        and must not delay monitoring): prune cases exported, verified and older than
        ``record.retention_days`` (0 keeps everything); each keeps its summary in the case index."""
        m = self._monitor()
        days = int(self.config.settings["record.retention_days"])
        if days <= 0 or m.case is not None or self.journal is None or self.worker is None:
            return
        from app.record.storage import prune

        journal = self.journal

        def job() -> None:
            try:
                results = prune(journal, days)
            except Exception as exc:  # noqa: BLE001 - housekeeping of the record; monitoring goes on
                log.error("retention at start-up failed: %s", exc)
                return
            self.queue.put(("retention", days, [(r.case_id, r.pruned, r.message) for r in results]))

        self.worker.submit(job)

    def _retention_done(self, days: int, results: list[tuple[str, bool, str]]) -> None:
        pruned = [c for c, done, _msg in results if done]
        for _c, done, msg in results:
            if not done:
                log.warning("retention: %s", msg)
        if pruned:
            log.warning("retention: %d case(s) older than %d days, exported and verified, pruned", len(pruned), days)
            self._monitor().ledger.event("technical", "retention", (
                f"{len(pruned)} case(s) older than {days} days, exported and verified, removed from this monitor "
                "(their summaries are kept)"), detail={"cases": pruned})

    def _writer_progress(self) -> None:
        """From the writer thread: tickets were resolved; wake the loop (once until it ran)."""
        if not self._writer_woken.is_set():
            self._writer_woken.set()
            self.queue.put(("journal",))

    def _new_server(self, heartbeat: Heartbeat | None, latest: dict[str, bytes]) -> ApiServer:
        return ApiServer(self.config.socket_path, self._handle_request, self._hello,
                         on_client=lambda what, who: self.queue.put(("client", what, who)),
                         slow_commands={c: 600.0 for c in Monitor.OFFLINE},
                         heartbeat=heartbeat.beat if heartbeat is not None else None, latest=latest)

    def _hello(self) -> dict[str, Any]:
        m = self.monitor
        caps = m.capabilities if m else None
        return p.hello(f"lnm {__version__}", simulated=bool(caps and caps.simulated),
                       board_url=self.config.board_url, case_id=m.case_id if m else None)

    def _handle_request(self, req: p.Request, respond: Any) -> None:
        self.queue.put(("cmd", req, respond))

    def _publish(self, stream: str, message: Any, sticky: bool) -> None:
        if self.remote is not None:
            self.remote.offer(stream, message)  # never blocks (app.remote.publisher.OutQueue)
        server = self.server
        if server is None:
            return
        if stream == "state":
            message = {**message, "threads": self.threads_json()}
        server.publish(stream, message, sticky=sticky)

    def threads_json(self) -> dict[str, Any]:
        """The thread supervision's verdict (the state's ``threads``; ``lnm status``)."""
        return {"healthy": self.supervisor.healthy(), "watchdog": self._watchdog_allowed(time.monotonic()),
                "list": self.supervisor.snapshot()}

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
            self._loop_hb.beat()  # the loop starts now, however long opening took
            self._supervisor_thread = threading.Thread(target=self._supervise, name="lnm-supervisor", daemon=True)
            self._supervisor_thread.start()
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
                self._loop_hb.beat()
                timeout = max(0.0, next_tick - time.monotonic())
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                n = 0
                board: list[Any] = []  # the board's messages waiting in a row: analysed together
                while item is not None:
                    if item[0] == "msg":
                        board.append(item[1])
                    else:
                        if board:
                            m.board_messages(board)
                            board = []
                        self._dispatch(item)
                    n += 1
                    if n >= 500:
                        break
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        item = None
                if board:
                    m.board_messages(board)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + tick_s
                    self._refresh_wants()
                    m.tick()
                if self._replies:
                    self._answer_recorded(now)
                self._send_to_board()
                self.link.set_alarm_active(m.alarm_sounding)
                if self.notifier.watchdog_s and now >= next_watchdog and self._watchdog_allowed(now):
                    self.notifier.watchdog()
                    next_watchdog = now + self.notifier.watchdog_s
        except Exception as exc:  # noqa: BLE001 - the fail-safe path: anything unexpected
            self._guard_tripped = True  # from here on, nothing may resume the heartbeat
            self._fault_requested = True  # (the supervisor checks this before resuming it)
            self._fail(exc)
        finally:
            self._stop.set()

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        m = self._monitor()
        kind = item[0]
        if kind == "msg":
            m.board_message(item[1])
        elif kind == "link":
            m.link_event(item[1], item[2], item[3] if len(item) > 3 else None)
        elif kind == "cmd":
            self._command(m, item[1], item[2])
        elif kind == "journal":
            self._writer_woken.clear()
            m.ledger.pump()
            if self._replies:
                self._answer_recorded(time.monotonic())
        elif kind == "storage":
            st = item[1]
            m.storage_status(st.ok, st.message)
        elif kind == "retention":
            self._retention_done(item[1], item[2])
        elif kind == "client":
            log.info("API client %s: %s", item[2], item[1])
        elif kind == "supervision":
            self._supervision_entry(item[1])
        elif kind == "fault":
            raise ThreadFailure(item[1])
        elif kind == "call":  # work another thread (the remote publisher) needs done on the engine thread
            item[1]()

    def _command(self, m: Monitor, req: Any, respond: Any) -> None:
        """One API request, in the engine loop; its reply now or once its entries are recorded."""
        if req.expired(time.monotonic()):
            # the engine was held up: its client has been (or is about to be) told
            # "timeout", so the command must not take effect behind its back
            log.warning("API command %s from %s expired before it could run", req.cmd, req.client)
            respond(p.reply_error(req.id, p.ApiError(p.EXPIRED, (
                f"{req.cmd}: not carried out; the engine reached it too late. Send it again if still wanted."))))
            return
        if req.cmd in m.OFFLINE:
            self._document_job(req, m.offline_job(req), respond)  # prepared here; the slow part runs aside
            return
        reply = m.handle(req)
        self._send_to_board()  # before the reply: a command's effect is on its way
        if req.cmd == "state.get" and reply.get("ok"):
            reply["result"]["threads"] = self.threads_json()
        if m.reply_ticket is not None:  # journaled, not on the disk yet: the reply waits, briefly
            self._replies.append((m.reply_ticket, time.monotonic() + self.config.record_wait_s, respond, reply))
            return
        respond(reply)

    def _answer_recorded(self, now: float) -> None:
        """Replies waiting for their entries: "recorded" once on the disk; after ``record_wait_s``
        (or when refused) "accepted, not yet recorded" (``recorded: false``), in the order asked."""
        m = self._monitor()
        while self._replies:
            ticket, deadline, respond, reply = self._replies[0]
            if m.ledger.outcome(ticket) == "pending" and now < deadline:
                return
            self._replies.pop(0)
            reply.pop("record", None)
            m.record_reply(reply, ticket)
            respond(reply)

    def _send_to_board(self) -> None:
        from firmware_bridge.link import LinkDown

        for msg in self._monitor().take_host_messages():
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
        try:
            m = self._monitor()
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

    # ------------------------------------------------------------------ thread supervision

    def _watchdog_allowed(self, now: float) -> bool:
        """Feed systemd's watchdog only on a fresh verdict that every thread is healthy."""
        ok, at = self._verdict
        return ok and not self._guard_tripped and now - at <= VERDICT_MAX_AGE_S

    def _supervise(self) -> None:
        while not self._stop.wait(self.config.supervise_s):
            try:
                self._supervise_once()
            except Exception:  # noqa: BLE001 - the supervisor must outlive its own bugs
                log.exception("thread supervision step failed")

    def _supervise_once(self) -> None:
        sup = self.supervisor
        for change in sup.check():
            self._thread_changed(change)
        self._hold_board_for_the_loop(sup.get("engine-loop"))
        if not self._stop.is_set() and self.exit_code == EXIT_OK:
            for w in sup.problems():
                if w.state == FAILED or w.policy is Policy.HOLD:
                    continue
                if w.policy is Policy.DEGRADE:  # the record: shown and alarmed; a dead writer restarted
                    if w.state == DEAD:
                        self._restart(w)
                    continue
                if w.policy is Policy.RESTART:
                    self._restart(w)
                else:
                    self._request_fail_safe(w, f"{w.what}: {w.reason}; it cannot be restarted while monitoring")
        self._verdict = (sup.watchdog_ok(), time.monotonic())

    def _thread_changed(self, change: Change) -> None:
        if change.new in (RUNNING, "idle"):
            if change.old not in (RUNNING, "idle"):  # (a worker going busy and idle is its normal life)
                log.warning("engine thread %s is %s again (was %s)", change.name, change.new, change.old)
        else:
            log.critical("engine thread %s is %s: %s", change.name, change.new, change.reason)
            self.notifier.status(f"thread {change.name} {change.new}: {change.reason}")

    def _hold_board_for_the_loop(self, loop: Watch) -> None:
        """A stalled engine loop stops the board heartbeat (the board stops stimulating);
        the heartbeat resumes when the loop runs again (unless the engine is failing)."""
        if loop.state == STALLED and not self._guard_tripped:
            self._guard_tripped = True
            log.critical("engine loop stalled (%s): board heartbeat stopped", loop.reason)
            if self.link is not None:
                self.link.pause_heartbeat()
        elif (loop.state == RUNNING and self._guard_tripped and self.exit_code == EXIT_OK
              and not self._fault_requested):
            self._guard_tripped = False
            log.warning("engine loop running again: board heartbeat resumed")
            if self.link is not None:
                self.link.resume_heartbeat()

    def _restart(self, w: Watch) -> None:
        sup = self.supervisor
        if time.monotonic() - w.since < self.config.restart_delay_s:
            return  # a moment for a late thread to come back by itself
        if not sup.may_restart(w.name):
            self._request_fail_safe(w, f"{w.what}: {w.reason}; restarted {sup.max_restarts} times within "
                                       f"{sup.window_s:g} s already")
            return
        state, reason = w.state, w.reason
        count = sup.restarted(w.name)
        try:
            if w.name == "api":
                self._restart_api()
            elif w.name == "documents":
                self._restart_documents()
            elif w.name == "journal-writer":
                self._restart_writer(w)
            else:
                raise ThreadFailure(f"no way to restart thread {w.name}")
        except (OSError, ValueError, ThreadFailure) as exc:
            log.error("restarting %s failed (%s); tried again shortly", w.name, exc)
            self.queue.put(("supervision", {"event": "thread_restart_failed", "thread": w.name, "what": w.what,
                                            "state": state, "reason": reason, "error": str(exc), "restarts": count}))
            return
        log.warning("engine thread %s restarted (it was %s: %s)", w.name, state, reason)
        self.notifier.status(f"{w.what} restarted (it was {state}: {reason})")
        self.queue.put(("supervision", {"event": "thread_restarted", "thread": w.name, "what": w.what,
                                        "state": state, "reason": reason, "restarts": count}))

    def _restart_writer(self, w: Watch) -> None:
        """A dead journal writer: a new thread on the same backlog. A stalled one (a write that
        blocks) cannot be replaced (its journal call holds the file): it is shown, the record
        waits in memory, and monitoring goes on."""
        if w.state != "dead":
            raise ThreadFailure("a stalled journal write cannot be abandoned; the entries wait in memory")
        self._writer_hb = self.supervisor.rewatch("journal-writer", busy=False)
        self._monitor().ledger.writer.restart(self._writer_hb)

    def _restart_api(self) -> None:
        """A new API server thread: every client is dropped (they reconnect by themselves),
        the socket is bound again, the latest state and alarm messages are kept."""
        old = self.server
        latest = old.latest() if old is not None else {}
        if old is not None:
            old.close(join_timeout_s=0.5)
        self._api_hb = self.supervisor.rewatch("api")
        new = self._new_server(self._api_hb, latest)
        new.start()
        self.server = new

    def _restart_documents(self) -> None:
        """A new documents worker; a stuck job is abandoned (its client was told timeout)."""
        old = self.worker
        self._docs_hb = self.supervisor.rewatch("documents", busy=False)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lnm-documents")
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def _document_job(self, req: p.Request, job: Any, respond: Any) -> None:
        """Run a documents job in the worker, which reports its liveness around each job."""
        hb = self._docs_hb

        def run() -> None:
            if hb is not None:
                hb.busy()
            try:
                reply = job()
            except Exception as exc:  # noqa: BLE001 - documents are downstream of monitoring: this reply only
                log.exception("documents job %s failed", req.cmd)
                reply = p.reply_error(req.id, p.ApiError(p.INTERNAL, (
                    f"{req.cmd}: the documents could not be made ({type(exc).__name__}: {exc})")))
            finally:
                if hb is not None:
                    hb.idle()
            respond(reply)

        try:
            if self.worker is None:
                raise RuntimeError("no documents worker")
            self.worker.submit(run)
        except RuntimeError:  # the worker is being replaced at this moment
            respond(p.reply_error(req.id, p.ApiError(p.INTERNAL, (
                f"{req.cmd}: the documents worker is restarting; send the command again"))))

    def _request_fail_safe(self, w: Watch, reason: str) -> None:
        """A thread that cannot be (or was too often) restarted: the engine loop fails safe."""
        if self.supervisor.failed(w.name, reason):
            log.critical("engine thread %s failed: %s; the engine fails safe", w.name, reason)
            self._fault_requested = True
            self.queue.put(("fault", f"engine thread {w.name} failed: {reason}"))

    def _supervision_entry(self, detail: dict[str, Any]) -> None:
        """In the engine loop: journal a restart (engine entry) and refresh what clients see."""
        m = self._monitor()
        m.ledger.write("engine", {"event": detail["event"], "version": __version__, "detail": detail})
        if detail["event"] == "thread_restarted" and detail["thread"] == "api" and self.server is not None:
            self.server.publish("alarms", m.alarms_json(), sticky=True)
            self._publish("state", m.state_snapshot(), sticky=True)

    # ------------------------------------------------------------------ stop

    def _shutdown(self) -> None:
        self._stop.set()
        if self._supervisor_thread is not None and self._supervisor_thread is not threading.current_thread():
            self._supervisor_thread.join(timeout=5.0)  # no restart may race the closing below
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
        self._close_record(m)
        if self.server is not None:
            self.server.close()
        if self.link is not None:
            self.link.close()
        if self.outputs is not None:
            self.outputs.close()
        lock = getattr(self, "data_lock", None)  # (not set when the start failed before it)
        if lock is not None:
            lock.release()

    def _close_record(self, m: Monitor | None) -> None:
        """Write what waits (a few seconds at most: a stuck disk does not hold the exit), answer
        the replies that waited for it, close the journal."""
        finished = m is None or m.ledger.writer.close(timeout_s=5.0)
        if not finished and m is not None:
            log.error("the journal writer did not finish: %s", m.ledger.recording().message)
        for ticket, _deadline, respond, reply in self._replies:
            if m is not None:
                m.record_reply(reply, ticket)
            respond(reply)
        self._replies = []
        if finished and self.journal is not None:
            self.journal.close()  # (a journal call still blocked in the writer would block this too)

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: self.stop())
        return old

    @staticmethod
    def _restore_signals(old: dict[int, Any]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def default_data_dir() -> Path:
    """Where the engine keeps its journal unless told otherwise."""
    from app.record.journal import default_journal_path

    return default_journal_path().parent


def pid_alive(pid: int) -> bool:
    """A process with this id exists (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
