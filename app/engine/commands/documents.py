"""The record and its documents: ``note.add``, ``snapshot``, ``report.get``, ``export.usb``, ``cases.list``.

Owns: those handlers, ``OFFLINE`` and ``offline_job``. Documentation reads the whole
case from the journal and may take seconds: the engine loop only prepares it (which
case, journal the action); ``offline_job`` returns the work, which the live service runs
in a worker thread (the journal is thread-safe). Run inline (``handle``), the same work
runs at once.
May import: ``app.api.protocol``, ``app.engine.commands.registry``, ``app.engine.seams``;
``app.engine.core`` for types only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, open_case, operator
from app.engine.seams import DocumentMaker

if TYPE_CHECKING:
    from app.engine.core import Monitor

OFFLINE = ("report.get", "export.usb", "cases.list")


@command("note.add")
def note_add(m: Monitor, req: p.Request, text: str) -> dict[str, Any]:
    """A free-text note in the case record."""
    t = m.now_t()
    m.ledger.write("note", {"text": text, "who": req.client or None}, t_s=t)
    m.ledger.event("operator", "note", text, detail={"client": req.client})
    return {"t_s": round(t, 3)}


@command("snapshot")
def snapshot(m: Monitor, req: p.Request, comment: str | None = None) -> dict[str, Any]:
    """Keep the current values (the last response per side) in the record."""
    case = open_case(m, "snapshot")
    t = m.now_t()
    last_index = max((meas.stimulus.index for meas in case.last_valid.values()), default=None)
    m.ledger.write("snapshot", {"label": comment, "who": req.client or None, "stimulus_index": last_index,
                                "last": case.last}, t_s=t)
    m.ledger.event("operator", "snapshot", f"snapshot{': ' + comment if comment else ''}",
                   detail={"stimulus_index": last_index, "last": case.last})
    return {"t_s": round(t, 3)}


def _docs(m: Monitor, what: str) -> DocumentMaker:
    if m.documents is None:
        raise p.ApiError(p.BAD_STATE, f"{what}: documentation is not available in this engine")
    return m.documents


def _which_case(m: Monitor, case_id: str | None) -> str:
    cid = case_id or (m.case.case_id if m.case is not None else None) or m.last_case_id
    if cid is None:
        raise p.ApiError(p.BAD_STATE, "no case is open and none was closed since the engine started; give case_id")
    return cid


def _work(m: Monitor, req: p.Request) -> Callable[[], dict[str, Any]]:
    """What an offline command does (ApiError when it cannot be prepared)."""
    if req.cmd == "cases.list":
        limit = int(req.args.get("limit", 50))
        ledger = m.ledger
        return lambda: {"cases": list(reversed(ledger.cases()))[:limit]}
    cid = _which_case(m, req.args.get("case_id"))
    docs = _docs(m, req.cmd)
    if req.cmd == "report.get":
        pdf = bool(req.args.get("pdf", True))
        return lambda: docs.report(cid, pdf=pdf)
    target, pseudo = req.args.get("target"), bool(req.args.get("pseudonymise", True))
    if m.case is not None:
        operator(m, req, detail={"case_id": cid, "target": target, "pseudonymise": pseudo})
    return lambda: docs.export(cid, target=target, pseudonymise=pseudo)


def offline_job(m: Monitor, req: p.Request) -> Callable[[], dict[str, Any]]:
    """For a command in ``OFFLINE``: the function that computes its reply (ApiError -> error reply)."""
    try:
        work = _work(m, req)
    except p.ApiError as err:
        error = err
        return lambda: p.reply_error(req.id, error)

    def run() -> dict[str, Any]:
        try:
            return p.reply_ok(req.id, work())
        except p.ApiError as err2:
            return p.reply_error(req.id, err2)
    return run


def _inline(m: Monitor, req: p.Request) -> dict[str, Any]:
    reply = offline_job(m, req)()
    if not reply["ok"]:
        e = reply["error"]
        raise p.ApiError(e["code"], e["message"], **{k: v for k, v in e.items() if k not in ("code", "message")})
    return reply["result"]


@command("report.get")
def report_get(m: Monitor, req: p.Request, **_: Any) -> dict[str, Any]:
    """The case documentation (JSON, and the PDF in the data folder)."""
    return _inline(m, req)


@command("export.usb")
def export_usb(m: Monitor, req: p.Request, **_: Any) -> dict[str, Any]:
    """The case's documents on a USB stick, verified."""
    return _inline(m, req)


@command("cases.list")
def cases_list(m: Monitor, req: p.Request, limit: int = 50) -> dict[str, Any]:
    """The journal's cases, newest first."""
    return {"cases": list(reversed(m.ledger.cases()))[:limit]}
