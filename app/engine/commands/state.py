"""Commands that read the engine's state: ``state.get``, ``events.list``, ``trend.get``, ``selftest.run``.

Owns: those handlers. May import: ``app.api.protocol``, ``app.engine.views``,
``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command
from app.engine.views import trend_series

if TYPE_CHECKING:
    from app.engine.core import Monitor


@command("state.get")
def state_get(m: Monitor, req: p.Request) -> dict[str, Any]:
    """The state snapshot."""
    return m.state_snapshot()


@command("events.list")
def events_list(m: Monitor, req: p.Request, since_seq: int = 0, limit: int = 100) -> dict[str, Any]:
    """Recent events of the open case (since the last case closed, with none open)."""
    evs = [e for e in m.ledger.events if e["seq"] > since_seq][-limit:]
    return {"events": evs, "last_seq": m.ledger.event_seq}


@command("trend.get")
def trend_get(m: Monitor, req: p.Request, side: str | None = None, max_points: int = 1000) -> dict[str, Any]:
    """The open case's trends."""
    return {"series": trend_series(m.case, side, max_points)}


@command("selftest.run")
def selftest_run(m: Monitor, req: p.Request) -> dict[str, Any]:
    """Board, loudspeaker, LEDs and buzzer, storage: one line each, journaled in an open case."""
    desk = m.alarm_desk
    items = [m.board.self_test(), *m.outputs.self_test(),
             {"item": "storage", "ok": desk.storage_ok,
              "message": "case record storage writable" if desk.storage_ok else desk.storage_message}]
    ok = all(i["ok"] for i in items)
    m.ledger.write("engine", {"event": "self_test", "detail": {"ok": ok, "items": items}})
    m.ledger.event("technical", "self_test", "self-test " + ("passed" if ok else "FAILED: " + "; ".join(
        f"{i['item']}: {i['message']}" for i in items if not i["ok"])), priority=None if ok else "medium",
        detail={"items": items})
    return {"ok": ok, "items": items}
