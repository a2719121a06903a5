"""Messages from the remote reader to the OR: their delivery (``receive``) and where they are kept.

Owns: ``receive`` (a validated message from ``app.remote``, run on the engine thread
through the service's queue: journaled as a ``reader_message`` entry first, then announced
as an event, as the sticky ``inbox`` stream message the touchscreen shows, and by the
``message`` chime, which is not an alarm sound), ``inbox_of``, ``publish`` and
``case_changed`` (the stream told when a case opens, resumes or closes). The nurse's
``inbox.ack`` is a command (``app.engine.commands.inbox``).
May import: ``app.engine.case_state``; ``app.engine.core`` for types only.

What a case owns ends with it: the inbox is part of the open case (``CaseState.inbox``,
read back from the journal on first use, so a resumed case has its messages and a new one
starts empty) and goes when the case closes; a message that arrives between cases is
shown and journaled in no case (``Monitor.idle_inbox``), and gone when the next case
opens. Nothing here can stimulate, change a setting or touch an alarm: a reader's message
is text for people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.engine.case_state import Inbox

if TYPE_CHECKING:
    from app.engine.core import Monitor

log = logging.getLogger("lnm.engine")


def now_iso() -> str:
    """Now, UTC, to the second (ISO 8601 with Z)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def message_item(e: Mapping[str, Any], received_at: str | None) -> dict[str, Any]:
    """The inbox item of a ``reader_message`` entry, not yet acknowledged."""
    return {"id": e["id"], "reader": e["reader"], "from": e.get("from") or e["reader"], "text": e.get("text") or "",
            "kind": e.get("kind") or "message", "sent_at": e.get("sent_at"), "received_at": received_at,
            "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None}


def _from_journal(m: Monitor, case_id: str) -> Inbox:
    box = Inbox()
    read = getattr(m.journal, "entries", None)  # a journal that keeps nothing (NullJournal) has none to read
    try:
        entries = [e.payload for e in read(case_id, kinds=["reader_message"], blobs=False)] if read else []
    except Exception as exc:  # noqa: BLE001 - a journal that cannot be read: the inbox starts empty
        log.warning("reader messages of case %s not read back from the journal: %s", case_id, exc)
        entries = []
    for e in entries:
        item = box.find(e["id"])
        if e.get("event") == "received" and item is None:
            box.add(message_item(e, e.get("received_at")))
        elif e.get("event") == "acknowledged" and item is not None:
            item.update(acknowledged=True, acknowledged_by=e.get("who"), acknowledged_at=e.get("acknowledged_at"))
    return box


def inbox_of(m: Monitor) -> Inbox:
    """The open case's inbox (read back from the journal on first use), or the one between cases."""
    case = m.case
    if case is None:
        return m.idle_inbox
    if case.inbox is None:
        case.inbox = _from_journal(m, case.case_id)
    return case.inbox


def publish(m: Monitor, box: Inbox) -> None:
    """The sticky ``inbox`` stream message of ``box``."""
    m.ledger.publish("inbox", box.to_json(m.case_id), sticky=True)


def case_changed(m: Monitor) -> None:
    """A case opened, resumed or closed: what arrived between cases is gone, and the
    touchscreen and the station get the inbox of what is open now (empty for a new case)."""
    m.idle_inbox = Inbox()
    publish(m, inbox_of(m))


def receive(m: Monitor, msg: Mapping[str, Any]) -> None:
    """A validated reader message (``app.remote.protocol.ReaderMessage.to_json()``), on the engine thread."""
    box = inbox_of(m)
    if box.find(msg["id"]) is not None:
        return  # delivered twice (QoS 1): once is enough
    now = now_iso()
    entry = {"event": "received", "id": msg["id"], "reader": msg["reader"], "from": msg.get("from"),
             "text": msg.get("text"), "kind": msg.get("kind"), "sent_at": msg.get("sent_at"), "received_at": now}
    m.ledger.write("reader_message", entry)  # journal first
    item = message_item(entry, now)
    box.add(item)
    what = "Interpretation" if item["kind"] == "interpretation" else "Message"
    m.ledger.event("message", "reader_message", f"{what} from {item['from']}: {item['text']}", priority="info",
                   detail={"id": item["id"], "reader": item["reader"], "from": item["from"]})
    publish(m, box)
    annunciator = getattr(m.outputs, "annunciator", None)
    if annunciator is not None:
        try:
            annunciator.play_tone("message")  # a chime, not an alarm sound
        except Exception as exc:  # noqa: BLE001 - a missing chime never stops monitoring
            log.warning("reader message chime not played: %s", exc)
    log.info("reader message %s from %s shown at the OR", item["id"], item["reader"])
