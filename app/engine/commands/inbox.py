"""Messages from the remote reader to the OR: ``inbox.ack``, and their delivery (``receive``).

Owns: ``Inbox`` (the reader messages of the open case; rebuilt from the journal when the
engine comes back), ``receive`` (a validated message from ``app.remote``, run on the
engine thread through the service's queue: journaled as a ``reader_message`` entry first,
then announced as an event, as the sticky ``inbox`` stream message the touchscreen shows,
and by the ``message`` chime, which is not an alarm sound) and the ``inbox.ack`` handler
(the nurse acknowledges: journaled, and back to the station through the same message).
May import: ``app.api.protocol``, ``app.engine.commands.registry``; ``app.engine.core`` for types only.

What a case owns ends with it: the inbox lives on the open case (``CaseState``) and goes
when the case closes; a message that arrives between cases is shown and logged only, and
gone when the next case opens. Nothing here can stimulate, change a setting or touch an
alarm: a reader's message is text for people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, who

if TYPE_CHECKING:
    from app.engine.core import Monitor

log = logging.getLogger("lnm.engine")

MAX_MESSAGES = 200  # per case; the oldest acknowledged ones leave the list first


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Inbox:
    """The reader messages of one case (``case_id`` None: between cases)."""

    case_id: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def find(self, mid: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["id"] == mid), None)

    def open(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if not m["acknowledged"]]

    def add(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        while len(self.messages) > MAX_MESSAGES:
            old = next((m for m in self.messages if m["acknowledged"]), self.messages[0])
            self.messages.remove(old)

    def to_json(self) -> dict[str, Any]:
        return {"type": "inbox", "case_id": self.case_id, "messages": [dict(m) for m in self.messages],
                "unacknowledged": len(self.open())}


def _message(e: Mapping[str, Any], received_at: str | None) -> dict[str, Any]:
    return {"id": e["id"], "reader": e["reader"], "from": e.get("from") or e["reader"], "text": e.get("text") or "",
            "kind": e.get("kind") or "message", "sent_at": e.get("sent_at"), "received_at": received_at,
            "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None}


def _from_journal(m: Monitor, case_id: str) -> Inbox:
    box = Inbox(case_id)
    try:
        entries = [e.payload for e in m.journal.entries(case_id, kinds=["reader_message"], blobs=False)]
    except Exception as exc:  # noqa: BLE001 - a journal that cannot be read: the inbox starts empty
        log.warning("reader messages of case %s not read back from the journal: %s", case_id, exc)
        entries = []
    for e in entries:
        item = box.find(e["id"])
        if e.get("event") == "received" and item is None:
            box.add(_message(e, e.get("received_at")))
        elif e.get("event") == "acknowledged" and item is not None:
            item.update(acknowledged=True, acknowledged_by=e.get("who"), acknowledged_at=e.get("acknowledged_at"))
    return box


def inbox_of(m: Monitor) -> Inbox:
    """The open case's inbox (kept on the case; rebuilt from the journal after a resume)."""
    case = m.case
    holder: Any = case if case is not None else m
    box: Inbox | None = getattr(holder, "reader_inbox", None)
    if box is None or box.case_id != m.case_id:
        box = _from_journal(m, case.case_id) if case is not None else Inbox(None)
        holder.reader_inbox = box
    return box


def receive(m: Monitor, msg: Mapping[str, Any]) -> None:
    """A validated reader message (``app.remote.protocol.ReaderMessage.to_json()``), on the engine thread."""
    box = inbox_of(m)
    if box.find(msg["id"]) is not None:
        return  # delivered twice (QoS 1): once is enough
    now = _now_iso()
    entry = {"event": "received", "id": msg["id"], "reader": msg["reader"], "from": msg.get("from"),
             "text": msg.get("text"), "kind": msg.get("kind"), "sent_at": msg.get("sent_at"), "received_at": now}
    m.ledger.write("reader_message", entry)  # journal first
    item = _message(entry, now)
    box.add(item)
    what = "Interpretation" if item["kind"] == "interpretation" else "Message"
    m.ledger.event("message", "reader_message", f"{what} from {item['from']}: {item['text']}", priority="info",
                   detail={"id": item["id"], "reader": item["reader"], "from": item["from"]})
    m.ledger.publish("inbox", box.to_json(), sticky=True)
    annunciator = getattr(m.outputs, "annunciator", None)
    if annunciator is not None:
        try:
            annunciator.play_tone("message")  # a chime, not an alarm sound
        except Exception as exc:  # noqa: BLE001 - a missing chime never stops monitoring
            log.warning("reader message chime not played: %s", exc)
    log.info("reader message %s from %s shown at the OR", item["id"], item["reader"])


@command("inbox.ack")
def inbox_ack(m: Monitor, req: p.Request, message: str | None = None) -> dict[str, Any]:
    """Acknowledge one reader message (by its id), or every one not yet acknowledged."""
    box = inbox_of(m)
    if message is not None:
        target = box.find(message)
        if target is None:
            raise p.ApiError(p.INVALID_ARGUMENT, f"inbox.ack: no reader message {message!r} in this case",
                             argument="message")
        todo = [] if target["acknowledged"] else [target]
    else:
        todo = box.open()
    by = who(req)
    now = _now_iso()
    for item in todo:
        m.ledger.write("reader_message", {"event": "acknowledged", "id": item["id"], "reader": item["reader"],
                                          "from": item["from"], "who": by, "acknowledged_at": now})
        item.update(acknowledged=True, acknowledged_by=by, acknowledged_at=now)
        m.ledger.event("message", "reader_message_acknowledged", f"Message from {item['from']} acknowledged by {by}",
                       priority="info", detail={"id": item["id"], "reader": item["reader"], "who": by})
    if todo:
        m.ledger.publish("inbox", box.to_json(), sticky=True)
    return {"acknowledged": [i["id"] for i in todo], "unacknowledged": len(box.open())}
