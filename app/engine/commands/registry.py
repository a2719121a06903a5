"""The registry of the engine's API commands: one handler per command, registered by name.

Owns: ``command`` (the decorator that registers a handler under the name
``app.api.protocol.COMMANDS`` gives its command; a name the protocol does not know, or
one registered twice, is an error when the module is imported), ``HANDLERS``,
``dispatch`` and the helpers handlers share (``operator``, ``who``, ``open_case``).
May import: ``app.api.protocol``, ``app.engine.case_state``; ``app.engine.core`` for types only.

A handler is ``handler(monitor, request, **arguments) -> result``: the arguments are the
request's, already validated by the protocol (names, types, ranges), so a handler checks
only what depends on the engine's state, and refuses with ``protocol.ApiError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.case_state import CaseState

if TYPE_CHECKING:
    from app.engine.core import Monitor

log = logging.getLogger("lnm.engine")

Handler = Callable[..., dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
# answered by the API server itself, never handed to the engine
SERVER_COMMANDS = frozenset({"hello", "ping", "subscribe", "unsubscribe"})


def command(name: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the API command ``name``."""
    if name not in p.COMMANDS or name in SERVER_COMMANDS:
        raise ValueError(f"handler for {name!r}: not an engine command of app.api.protocol")

    def register(fn: Handler) -> Handler:
        if name in HANDLERS:
            raise ValueError(f"command {name!r}: handled twice ({HANDLERS[name].__module__}.{HANDLERS[name].__name__}"
                             f" and {fn.__module__}.{fn.__name__})")
        HANDLERS[name] = fn
        return fn

    return register


def dispatch(m: Monitor, req: p.Request) -> dict[str, Any]:
    """Run the handler of ``req.cmd``; its result (ApiError when refused)."""
    handler = HANDLERS.get(req.cmd)
    if handler is None:
        raise p.ApiError(p.UNKNOWN_COMMAND, f"{req.cmd}: the engine has no handler for this command")
    return handler(m, req, **req.args) or {}


def who(req: p.Request) -> str:
    """Who sent the request, for the record."""
    return req.client or "operator"


def open_case(m: Monitor, what: str) -> CaseState:
    """The open case (a command that needs one is refused without it)."""
    case = m.case
    if case is None:
        raise p.ApiError(p.BAD_STATE, f"{what}: no case is open (start one with case.start)")
    return case


def operator(m: Monitor, req: p.Request, action: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
    """Journal an accepted operator command, then announce it."""
    d = dict(req.args if detail is None else detail)
    if m.case is None:
        log.info("operator action outside a case: %s %s by %s", action or req.cmd, d, who(req))
    m.ledger.write("operator", {"action": action or req.cmd, "who": who(req), "detail": d})
    m.ledger.event("operator", action or req.cmd, f"{who(req)}: {action or req.cmd}",
                   detail={"client": req.client, **d})
    m.persist.changed()
