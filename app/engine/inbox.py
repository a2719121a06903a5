"""Messages from the remote reader to the OR: received, journaled, shown with a chime, acknowledged.

Owns: ``Inbox`` (the reader messages of one case, rebuilt from the journal when the engine
comes back), ``receive`` (a validated message from ``app.remote``, delivered on the engine
thread: journaled as a ``reader_message`` entry first, then announced as an event, as the
sticky ``inbox`` stream message the touchscreen shows, and by the ``message`` chime, which
is not an alarm sound) and ``ack`` (the ``inbox.ack`` command: the nurse acknowledges; that
is journaled and goes back to the station through the same ``inbox`` message).
May import: the standard library, ``app.api.protocol``, ``app.record.entries``; the engine
core is passed in (``Monitor``).

A day, not a case: the inbox belongs to the open case; a message that arrives between
cases is shown and logged, and gone when the next case opens. Nothing here can stimulate,
change a setting or touch an alarm: a reader's message is text for people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any
from collections.abc import Mapping

from app.api import protocol as p

log = logging.getLogger("lnm.engine")

MAX_MESSAGES = 200  # per case; older acknowledged ones leave the list first


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


def _entries_of(m: Any, case_id: str) -> list[Mapping[str, Any]]:
    try:
        return [e.payload for e in m.journal.entries(case_id, kinds=["reader_message"], blobs=False)]
    except Exception as exc:  # noqa: BLE001 - a journal that cannot be read: the inbox starts empty
        log.warning("reader messages of case %s not read back from the journal: %s", case_id, exc)
        return []


def inbox_of(m: Any) -> Inbox:
    """The open case's inbox (rebuilt from the journal the first time after a start or resume)."""
    box: Inbox | None = getattr(m, "reader_inbox", None)
    case_id = m.case_id
    if box is not None and box.case_id == case_id:
        return box
    box = Inbox(case_id)
    if case_id is not None:
        for e in _entries_of(m, case_id):
            if e.get("event") == "received" and box.find(e["id"]) is None:
                box.add(_message(e, e.get("received_at")))
            elif e.get("event") == "acknowledged" and box.find(e["id"]) is not None:
                box.find(e["id"]).update(acknowledged=True, acknowledged_by=e.get("who"),
                                         acknowledged_at=e.get("acknowledged_at"))
    m.reader_inbox = box
    return box


def _message(e: Mapping[str, Any], received_at: str | None) -> dict[str, Any]:
    return {"id": e["id"], "reader": e["reader"], "from": e.get("from") or e["reader"], "text": e.get("text") or "",
            "kind": e.get("kind") or "message", "sent_at": e.get("sent_at"), "received_at": received_at,
            "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None}


def _announce(m: Any, box: Inbox) -> None:
    m._publish("inbox", box.to_json(), sticky=True)


def receive(m: Any, msg: Mapping[str, Any]) -> None:
    """A validated reader message (``app.remote.protocol.ReaderMessage.to_json()``), on the engine thread."""
    box = inbox_of(m)
    if box.find(msg["id"]) is not None:
        return  # delivered twice (QoS 1): once is enough
    now = _now_iso()
    entry = {"event": "received", "id": msg["id"], "reader": msg["reader"], "from": msg.get("from"),
             "text": msg.get("text"), "kind": msg.get("kind"), "sent_at": msg.get("sent_at"), "received_at": now}
    m._journal("reader_message", entry)  # journal first
    item = _message(entry, now)
    box.add(item)
    what = "Interpretation" if item["kind"] == "interpretation" else "Message"
    m._event("message", "reader_message", f"{what} from {item['from']}: {item['text']}", priority="info",
             detail={"id": item["id"], "reader": item["reader"], "from": item["from"]})
    _announce(m, box)
    annunciator = getattr(m.outputs, "annunciator", None)
    if annunciator is not None:
        try:
            annunciator.play_tone("message")  # a chime, not an alarm sound
        except Exception as exc:  # noqa: BLE001 - a missing chime never stops monitoring
            log.warning("reader message chime not played: %s", exc)
    log.info("reader message %s from %s shown at the OR", item["id"], item["reader"])


def ack(m: Any, req: p.Request, id: str | None = None) -> dict[str, Any]:  # noqa: A002 - the API's name
    """``inbox.ack``: acknowledge one reader message, or every one not yet acknowledged."""
    box = inbox_of(m)
    if id is not None:
        target = box.find(id)
        if target is None:
            raise p.ApiError(p.INVALID_ARGUMENT, f"inbox.ack: no reader message {id!r} in this case", argument="id")
        todo = [] if target["acknowledged"] else [target]
    else:
        todo = box.open()
    who = req.client or "operator"
    now = _now_iso()
    for item in todo:
        m._journal("reader_message", {"event": "acknowledged", "id": item["id"], "reader": item["reader"],
                                      "from": item["from"], "who": who, "acknowledged_at": now})
        item.update(acknowledged=True, acknowledged_by=who, acknowledged_at=now)
        m._event("message", "reader_message_acknowledged", f"Message from {item['from']} acknowledged by {who}",
                 priority="info", detail={"id": item["id"], "reader": item["reader"], "who": who})
    if todo:
        _announce(m, box)
    return {"acknowledged": [i["id"] for i in todo], "unacknowledged": len(box.open())}
