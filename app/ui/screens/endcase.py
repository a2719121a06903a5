"""End of case: L2 findings per side, notes, closing the case, then the report.

``laryngoscopy`` (L2), ``note.add`` and ``case.close`` (after a confirmation: it stops all
stimulation) are the engine's; the report screen follows.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty

from app.ui import present as P
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ask_text, confirm


class EndCaseScreen(LnmScreen):
    """The end of the case (see the module docstring)."""

    case_text = StringProperty("")
    steps_text = StringProperty("")
    notes_text = StringProperty("")
    case_open = BooleanProperty(False)
    last_case = StringProperty("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.notes: list[str] = []
        self.closing_note = ""

    def update(self, state: dict[str, Any]) -> None:
        case = state.get("case")
        self.case_open = case is not None
        self.last_case = str(state.get("last_case_id") or "")
        if case:
            sides = " then ".join(P.side_name(s).lower() for s in case.get("planned_sides") or []) or "none"
            self.case_text = (f"Patient {case.get('patient_id')}, case {case.get('case_id')}. "
                              f"{case.get('procedure') or 'Procedure not given'}; planned sides: {sides}.")
        else:
            self.case_text = "No case is open." + (f" Last case: {self.last_case}" if self.last_case else "")
        steps = state.get("steps") or {}
        lines = []
        for side in ("L", "R"):
            st = steps.get(side) or {}
            vals = []
            for k in ("L1",) + P.STEPS + ("L2",):
                v = st.get(k)
                if not v:
                    continue
                if "finding" in v:
                    vals.append(f"{k} {P.FINDING_WORDS.get(str(v['finding']), str(v['finding']))}")
                else:
                    vals.append(f"{k} {P.fmt_amp(v.get('amplitude_uV'))} µV")
            lines.append(f"{P.side_name(side).capitalize()}: " + (", ".join(vals) if vals else "nothing recorded"))
            f = ((st.get("L2") or {}).get("finding"))
            for key, _ in P.FINDINGS:
                self.ids[f"l2_{side}_{key}"].state = "down" if key == f else "normal"
        self.steps_text = "\n".join(lines)

    def set_finding(self, side: str, finding: str) -> None:
        self.app.cmd("laryngoscopy", phase="L2", side=side, finding=finding,
                     ok_message=f"L2 {P.side_name(side).lower()}: {P.FINDING_WORDS.get(finding, finding)} recorded")

    def add_note(self) -> None:
        def send(text: str) -> None:
            if not text:
                return

            def ok(_r: dict[str, Any]) -> None:
                self.notes.append(text)
                self.notes_text = "\n".join(f"- {n}" for n in self.notes[-4:])
                self.app.notify("note recorded", "ok")

            self.app.cmd("note.add", on_ok=ok, text=text)

        ask_text("Note for the record", send)

    def close_case(self) -> None:
        def closed(r: dict[str, Any]) -> None:
            self.app.notify(f"case {r.get('case_id')} closed", "ok")
            self.notes = []
            self.notes_text = ""
            self.app.screens["report"].load(r.get("case_id"))
            self.app.go("report")

        def do_close(note: str) -> None:
            args = {"note": note} if note else {}
            self.app.cmd("case.close", on_ok=closed, **args)

        confirm("Close the case?",
                "Stimulation stops and the case record is closed. Enter the L2 findings first if they are known "
                "(they can be added to the report later only by a new case note).",
                lambda: ask_text("Closing remark (optional)", do_close, hint="leave empty and touch OK for none"),
                confirm_text="Close the case", danger=True)

    def report_last(self) -> None:
        self.app.screens["report"].load(self.last_case or None)
        self.app.go("report")


load_kv(__file__)
