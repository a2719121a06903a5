"""Commands that read the engine's state: ``state.get``, ``events.list``, ``trend.get``; the
self-test: ``selftest.run``, ``selftest.confirm``.

Owns: those handlers and ``journal_selftest`` (the last self-test into a case that opens).
May import: ``app.api.protocol``, ``app.engine.views``/``selftest``,
``app.engine.commands.registry``; ``app.engine.core`` for types only.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, operator, who
from app.engine.selftest import SelfTest
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
    """Board, loudspeaker, LEDs and buzzer, storage: one line each (``app.engine.selftest``:
    the board and storage by readback, the played outputs waiting for the nurse's
    confirmation); journaled in an open case, else in the next case that opens."""
    desk = m.alarm_desk
    items = [m.board.self_test(), *m.outputs.self_test(),
             {"item": "storage", "ok": desk.storage_ok,
              "message": "case record storage writable" if desk.storage_ok else desk.storage_message}]
    test = SelfTest(items, m.now_t() if m.case is not None else None, _wall(m))
    m.selftest = test
    return _selftest_changed(m, test, journal=m.case is not None)


@command("selftest.confirm")
def selftest_confirm(m: Monitor, req: p.Request, item: str, seen: bool, note: str | None = None) -> dict[str, Any]:
    """The nurse saw (heard) a played output of the last self-test, or not: journaled."""
    test = m.selftest
    if test is None:
        raise p.ApiError(p.BAD_STATE, "selftest.confirm: no self-test has run yet (selftest.run)")
    try:
        confirmed = test.confirm(item, seen, who(req), m.now_t() if m.case is not None else None, note or "")
    except ValueError as exc:
        raise p.ApiError(p.INVALID_ARGUMENT, f"selftest.confirm: {exc}", argument="item") from None
    operator(m, req)
    m.ledger.event("technical", "self_test_confirmed",
                   f"self-test {item}: {'seen / heard' if seen else 'NOT seen / heard'} ({who(req)})",
                   priority=None if seen else "medium", detail={"item": confirmed})
    result = _selftest_changed(m, test, journal=m.case is not None, announce=not test.result()["pending"])
    return {**result, "confirmed": confirmed}


def journal_selftest(m: Monitor) -> None:
    """A case opens: the self-test made since the last case (with the nurse's answers)
    goes into its record, so that the record says how the alarm outputs were checked."""
    test = m.selftest
    if test is not None and test.journaled_in is None:
        m.ledger.write("engine", {"event": "self_test", "detail": {**test.result(), "before_case": True,
                                                                    "summary": test.summary()}})
        test.journaled_in = m.case_id


def _wall(m: Monitor) -> str:
    return m.wall_clock().astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _selftest_changed(m: Monitor, test: SelfTest, journal: bool, announce: bool = True) -> dict[str, Any]:
    result = test.result()
    if journal:
        m.ledger.write("engine", {"event": "self_test", "detail": {**result, "summary": test.summary()}})
        test.journaled_in = m.case_id
    if announce:
        m.ledger.event("technical", "self_test", test.summary(),
                       priority="medium" if result["status"] == "failed" else None, detail=result)
    return result
