"""The self-test, honest about what it knows: readback, or the nurse's eyes and ears.

Owns: ``SelfTest`` (one run of ``selftest.run``: its items, the nurse's confirmations and
the result) and the item vocabulary (``STATUSES``, ``READBACK``, ``NURSE``).
May import: the standard library. Pure: times and who are given.

An item is checked by **readback** when the monitor observes the result itself (the board
answers with its identity and faults, the journal reports whether it can write, an audio
device reports that it failed), or by the **nurse** when the monitor can only drive an
output without observing it: the loudspeaker (no microphone), the LEDs and the backup
buzzer (no sense line on the shipped GPIO wiring, simulated or real). A driven output
is never reported "ok": it is ``confirm`` ("played: confirm") until the nurse answers
``selftest.confirm`` (seen / heard: yes or no), and every answer is journaled.

Item fields: ``item``, ``status`` (``ok``, ``failed``, ``confirm``, ``confirmed``,
``not_confirmed``), ``ok`` (true for ok/confirmed, false for failed/not_confirmed, null
while it waits for the nurse), ``check`` (``readback`` or ``nurse``), ``message``, and for
the nurse's items ``question`` and, once answered, ``answer`` (yes/no), ``by``, ``t_s``
(case time, or null between cases) and ``note``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

READBACK = "readback"
NURSE = "nurse"
STATUSES = ("ok", "failed", "confirm", "confirmed", "not_confirmed")
_OK = {"ok": True, "confirmed": True, "failed": False, "not_confirmed": False, "confirm": None}
ITEM_WORDS = {"board": "board", "audio": "loudspeaker", "leds": "alarm lights", "buzzer": "backup buzzer",
              "storage": "case storage"}


def _words(names: Iterable[str]) -> str:
    return ", ".join(ITEM_WORDS.get(n, n) for n in names)


def _normal(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the outputs, the board or the journal gave it, in the item vocabulary
    (an item without ``status`` is one checked by readback: ``ok`` true or false)."""
    it = dict(item)
    if it.get("status") not in STATUSES:
        it["status"] = "ok" if it.get("ok") else "failed"
    it.setdefault("check", READBACK)
    it["ok"] = _OK[it["status"]]
    return it


class SelfTest:
    """One self-test run and what the nurse confirmed of it."""

    def __init__(self, items: Iterable[Mapping[str, Any]], t_s: float | None, wall: str) -> None:
        self.items = [_normal(i) for i in items]
        self.t_s = t_s
        self.wall = wall
        self.journaled_in: str | None = None  # the case whose record holds it

    def item(self, name: str) -> dict[str, Any] | None:
        """The item called ``name``."""
        return next((i for i in self.items if i["item"] == name), None)

    def confirm(self, name: str, seen: bool, who: str, t_s: float | None, note: str = "") -> dict[str, Any]:
        """The nurse's answer for an output the monitor cannot observe. Raises ``ValueError``
        (naming the item) for an unknown item or one checked by readback."""
        it = self.item(name)
        if it is None:
            names = ", ".join(i["item"] for i in self.items)
            raise ValueError(f"no self-test item {name!r} (items: {names})")
        if it["check"] != NURSE:
            raise ValueError(f"{name}: checked by readback ({it['status']}); nothing to confirm")
        it.update(status="confirmed" if seen else "not_confirmed", ok=seen, answer="yes" if seen else "no",
                  by=who, t_s=None if t_s is None else round(t_s, 3), note=note or None)
        return copy.deepcopy(it)

    def result(self) -> dict[str, Any]:
        """The self-test as ``selftest.run`` and ``selftest.confirm`` return it: ``status``
        ``passed`` (every item ok or confirmed), ``failed`` (any failed or not confirmed),
        else ``confirm`` (outputs played, waiting for the nurse); ``ok`` true only when
        passed; which items were confirmed by readback and which by the nurse."""
        items = copy.deepcopy(self.items)
        failed = [i["item"] for i in items if i["ok"] is False]
        pending = [i["item"] for i in items if i["status"] == "confirm"]
        status = "failed" if failed else ("confirm" if pending else "passed")
        return {"ok": status == "passed", "status": status, "items": items, "t_s": self.t_s, "wall": self.wall,
                "by_readback": [i["item"] for i in items if i["check"] == READBACK and i["ok"]],
                "by_nurse": [i["item"] for i in items if i["check"] == NURSE and i["ok"]],
                "pending": pending, "failed": failed}

    def summary(self) -> str:
        """One line for people: the verdict, what each kind of check covered."""
        r = self.result()
        words = {"passed": "passed", "failed": "FAILED", "confirm": "played, waiting for the nurse's confirmation"}
        text = f"self-test {words[r['status']]}"
        if r["failed"]:
            text += ": " + "; ".join(f"{ITEM_WORDS.get(i['item'], i['item'])}: "
                                     + ("not seen / heard by the nurse" if i["status"] == "not_confirmed"
                                        else i["message"]) for i in r["items"] if i["ok"] is False)
        parts = []
        if r["by_readback"]:
            parts.append(_words(r["by_readback"]) + " by readback")
        if r["by_nurse"]:
            parts.append(_words(r["by_nurse"]) + " confirmed by the nurse")
        if r["pending"]:
            parts.append(_words(r["pending"]) + " to confirm")
        return text + (f" ({'; '.join(parts)})" if parts else "")
