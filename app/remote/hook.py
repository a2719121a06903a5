"""The remote publisher's hook into the engine service (``app.engine.service``).

Owns: ``attach(service, receive)`` (builds the publisher when ``remote.enabled``, else nothing) and
``RemoteHook``: ``offer`` (the service's publish sink hands every stream message on;
never blocks), ``wants`` (the streams the publisher needs the engine to produce),
``stop``, and the way back into the engine: everything the publisher thread wants done
in the engine (the touchscreen notice, a reader's message) is put on the engine's queue
as a ``("call", fn)`` item and runs on the engine thread, in order with everything else.
May import: the standard library, ``app.remote``, ``app.alarms`` (the notice's kind); never
``app.engine`` (the service hands in what the hook calls back).

A bad ``[remote]`` configuration (a missing password file, a certificate without its key)
never stops the engine: it is logged and shown as the same low-priority notice, with the
setting named.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

from app import __version__
from app.alarms import AlarmKind
from app.remote import protocol as rp
from app.remote.config import RemoteConfig, RemoteConfigError
from app.remote.publisher import Publisher

log = logging.getLogger("lnm.remote")


def _alarm_call(monitor: Any, name: str) -> Callable[..., Any]:
    """``raise_technical``/``clear_technical`` of the engine core (on the monitor, or its alarm desk)."""
    fn = getattr(monitor, name, None)
    if fn is None:
        fn = getattr(monitor.alarm_desk, name)
    return fn


class RemoteHook:
    """What the service holds while remote monitoring is configured (see the module docstring)."""

    def __init__(self, service: Any, publisher: Publisher | None, problem: str = "",
                 receive: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
        self.service = service
        self.receive = receive
        self.publisher = publisher
        self.problem = problem
        if problem:
            self._notice(False, problem)

    # ---------------------------------------------------------------- engine thread

    def offer(self, stream: str, message: Any) -> None:
        if self.publisher is not None:
            self.publisher.offer(stream, message)

    def wants(self, stream: str) -> bool:
        return self.publisher is not None and self.publisher.wants(stream)

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()

    # ---------------------------------------------------------------- publisher thread -> engine queue

    def _call(self, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - remote monitoring never takes the engine down
                log.exception("remote: work handed to the engine thread failed")

        self.service.queue.put(("call", guarded))

    def _notice(self, ok: bool, message: str) -> None:
        def apply() -> None:
            m = self.service.monitor
            if m is None:
                return
            if ok:
                _alarm_call(m, "clear_technical")(AlarmKind.REMOTE_UNREACHABLE)
            else:
                _alarm_call(m, "raise_technical")(
                    AlarmKind.REMOTE_UNREACHABLE, message=f"Remote reading station not connected: {message}. "
                    "Monitoring and alarms here are not affected.", detail={"reason": message})

        log.warning("remote: %s", "broker reachable again" if ok else message)
        self._call(apply)

    def _deliver(self, msg: rp.ReaderMessage) -> None:
        def apply() -> None:
            m = self.service.monitor
            if m is not None and self.receive is not None:
                self.receive(m, msg.to_json())

        self._call(apply)


def attach(service: Any, receive: Callable[[Any, dict[str, Any]], None]) -> RemoteHook | None:
    """The hook for ``service`` (an ``EngineService`` whose journal is open), or None when
    remote monitoring is off. ``receive(monitor, message)`` shows a reader's message at the
    OR (``app.engine.inbox.receive``; the engine hands it in, app.remote never
    imports the engine); it runs on the engine thread."""
    settings = service.config.settings
    if not settings["remote.enabled"]:
        return None
    try:
        cfg = RemoteConfig.from_settings(settings)
    except RemoteConfigError as exc:
        log.error("remote monitoring is configured but cannot start: %s", exc)
        return RemoteHook(service, None, str(exc))
    hook = RemoteHook(service, None, receive=receive)
    try:
        hook.publisher = Publisher(cfg, service.config.data_dir / "journal.db", software=f"lnm {__version__}",
                                   deliver=hook._deliver, on_health=hook._notice)
        hook.publisher.start()
    except Exception as exc:  # noqa: BLE001 - remote monitoring never stops the engine from starting
        log.exception("remote monitoring cannot start")
        hook.publisher = None
        hook._notice(False, f"the remote publisher cannot start ({exc})")
    log.info("remote monitoring: publishing to %s as %s", cfg.broker.url(), cfg.appliance_id)
    return hook
