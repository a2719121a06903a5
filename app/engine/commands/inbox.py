"""The nurse's acknowledgement of the remote reader's messages: ``inbox.ack``.

Owns: the ``inbox.ack`` handler (journaled, and back to the station through the same
message). The messages themselves and their delivery are ``app.engine.inbox``'s.
May import: ``app.api.protocol``, ``app.engine.inbox``, ``app.engine.commands.registry``;
``app.engine.core`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.api import protocol as p
from app.engine.commands.registry import command, who
from app.engine.inbox import inbox_of, now_iso, publish

if TYPE_CHECKING:
    from app.engine.core import Monitor


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
        todo = box.waiting()
    by = who(req)
    now = now_iso()
    for item in todo:
        m.ledger.write("reader_message", {"event": "acknowledged", "id": item["id"], "reader": item["reader"],
                                          "from": item["from"], "who": by, "acknowledged_at": now})
        item.update(acknowledged=True, acknowledged_by=by, acknowledged_at=now)
        m.ledger.event("message", "reader_message_acknowledged", f"Message from {item['from']} acknowledged by {by}",
                       priority="info", detail={"id": item["id"], "reader": item["reader"], "who": by})
    if todo:
        publish(m, box)
    return {"acknowledged": [i["id"] for i in todo], "unacknowledged": len(box.waiting())}
