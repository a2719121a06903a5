"""Past cases: the cases in the journal, newest first, each with its report, a check of
its record and an export to the USB stick.

``cases.list`` gives the list. *Report* opens the report preview of that case
(``report.get``); *Check record* asks the engine for the case's documentation without the
PDF (``report.get`` with ``pdf`` false) and says whether the journal's hash chain of the
case verified (the document's ``journal.verified``: the same check as ``lnm verify``);
*Export* copies the case to the USB stick (``export.usb``) and says whether the copy was
read back and verified. A case still open is marked so and can only be viewed.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv


def when_words(opened: Any, closed: Any, is_open: bool) -> str:
    """'2026-11-21 10:30 to 11:45 (UTC)' from the journal's ISO times."""
    o = str(opened or "")[:16].replace("T", " ")
    if is_open:
        return f"opened {o} (UTC), still open" if o else "still open"
    c = str(closed or "")[:16].replace("T", " ")
    if c[:10] == o[:10]:
        c = c[11:]
    return f"{o} to {c} (UTC)" if o else "closed"


class CaseRow(BoxLayout):
    """One past case with its buttons."""

    case_id = StringProperty("")
    title = StringProperty("")
    detail = StringProperty("")
    result = StringProperty("")
    is_open = BooleanProperty(False)


class CasesScreen(LnmScreen):
    """The list of past cases (see the module docstring)."""

    status = StringProperty("Touch 'Reload' to list the cases.")
    busy = BooleanProperty(False)

    def on_enter(self, *args: Any) -> None:
        self.reload()

    def reload(self) -> None:
        """Ask the engine for the list."""
        self.busy = True
        self.status = "Reading the list of cases ..."

        def got(r: dict[str, Any]) -> None:
            self.busy = False
            cases = list(r.get("cases") or [])
            self._show(cases)
            self.status = (f"{len(cases)} case(s), newest first. Report: the documentation; Check record: is the "
                           "record unchanged; Export: to the USB stick.") if cases else "No cases in the journal yet."

        def refused(reply: Any) -> bool:
            self.busy = False
            self.status = "The list could not be read: " + W.refusal_words(reply.code, reply.message, reply.error)
            return True

        self.app.cmd("cases.list", on_ok=got, on_error=refused, limit=50)

    def _show(self, cases: list[dict[str, Any]]) -> None:
        box = self.ids.rows
        box.clear_widgets()
        for c in cases:
            box.add_widget(CaseRow(case_id=str(c.get("case_id") or ""),
                                   title=f"Patient {c.get('patient_id') or '?'}",
                                   detail=when_words(c.get("opened_at"), c.get("closed_at"), bool(c.get("open")))
                                   + f"; case {c.get('case_id')}",
                                   is_open=bool(c.get("open"))))

    def _row(self, case_id: str) -> CaseRow | None:
        return next((r for r in self.ids.rows.children if r.case_id == case_id), None)

    def report(self, case_id: str) -> None:
        """The report of a case, on the report screen."""
        self.app.screens["report"].load(case_id)
        self.app.go("report")

    def check(self, case_id: str) -> None:
        """Is the case's record unchanged (its journal's hash chain verified)?"""
        row = self._row(case_id)
        if row is not None:
            row.result = "Checking the record ..."

        def got(r: dict[str, Any]) -> None:
            j = (r.get("document") or {}).get("journal") or {}
            if j.get("verified") is True:
                text = f"Record intact: {j.get('entries')} entries, the hash chain verified."
            elif j.get("verified") is False:
                text = f"RECORD ALTERED: {W.plain(j.get('verify_problem'))}"
            else:
                text = "The record was not checked."
            if row is not None:
                row.result = text
            self.status = f"Case {case_id}: {text}"

        def refused(reply: Any) -> bool:
            text = "Not checked: " + W.refusal_words(reply.code, reply.message, reply.error)
            if row is not None:
                row.result = text
            return True

        self.app.cmd("report.get", on_ok=got, on_error=refused, case_id=case_id, pdf=False)

    def export(self, case_id: str) -> None:
        """Export the case to the USB stick."""
        row = self._row(case_id)
        if row is not None:
            row.result = "Exporting to the USB stick ..."
        args: dict[str, Any] = {"case_id": case_id}
        if self.app.options.usb_target:
            args["target"] = self.app.options.usb_target

        def ok(r: dict[str, Any]) -> None:
            files = r.get("files") or []
            safe = "safe to remove the stick." if r.get("safe_to_remove") else "do NOT remove the stick yet."
            text = (f"EXPORTED {len(files)} file(s), read back and verified: {'yes' if r.get('verified') else 'NO'}; "
                    + safe)
            if row is not None:
                row.result = text

        def refused(reply: Any) -> bool:
            text = "NOT EXPORTED: " + W.refusal_words(reply.code, reply.message, reply.error)
            if row is not None:
                row.result = text
            return True

        self.app.cmd("export.usb", on_ok=ok, on_error=refused, **args)


load_kv(__file__)
