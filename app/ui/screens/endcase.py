"""End of case: L2 findings per side, notes, closing the case, then the report.

``laryngoscopy`` (L2), ``note.add`` and ``case.close`` (after a confirmation: it stops all
stimulation) are the engine's; the report screen follows. Before closing, the INMSG steps
still missing on the planned sides (the state's ``missing_steps``) are listed, each with a
reason the nurse picks or types ("Steps not done"); a step left without one is recorded by
the engine as "no reason given", which the dialog says before it closes.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.modalview import ModalView

from app import format as fmt
from app.ui import present as P
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ChoicePopup, FitLabel, TButton, ask_text, confirm

# Why a step was not done, in the words a nurse would write (any other text can be typed).
REASONS = ("Side not operated", "Nerve not exposed", "Surgeon decided not to test",
           "Not possible after a loss of signal", "Operation stopped", "Equipment problem")
NO_REASON = "Choose a reason ..."


def missing_words(item: dict[str, Any]) -> str:
    """``{"side": "L", "step": "V2", "what": ...}`` -> 'Left V2: vagus after resection'."""
    what = item.get("what") or fmt.words(fmt.STEP_WORDS, item.get("step"))
    return f"{fmt.side_word(item.get('side')).capitalize()} {item.get('step')}: {what}"


class MissingStepsDialog(ModalView):
    """The steps still missing, each with its reason; "Close the case" sends them all."""

    title = StringProperty("Steps not done: why?")
    summary = StringProperty("")

    def __init__(self, missing: list[dict[str, Any]], on_close: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.auto_dismiss = False
        self.missing = list(missing)
        self.reasons: dict[tuple[str, str], str] = {}
        self._on_close = on_close
        rows = self.ids.rows
        for item in self.missing:
            side, step = str(item.get("side")), str(item.get("step"))
            rows.add_widget(FitLabel(text=missing_words(item), halign="left", valign="middle", max_lines=2))
            btn = TButton(text=NO_REASON, tid=f"closeout.reason.{side}.{step}")
            btn.bind(on_release=lambda b, key=(side, step): self.choose(key, b))
            rows.add_widget(btn)
        self._summary()

    def choose(self, key: tuple[str, str], button: TButton) -> None:
        """The list of reasons (or the keyboard) for one missing step."""
        def picked(label: str, value: Any) -> None:
            if value is ChoicePopup.OTHER:
                ask_text(f"Why was {key[1]} not done?", lambda text: picked(text, text) if text else None,
                         hint="up to 200 characters", max_len=200)
                return
            self.reasons[key] = str(value)
            button.text = str(label)
            self._summary()

        ChoicePopup(title=f"Why was {fmt.side_word(key[0])} {key[1]} not done?",
                    choices=[(r, r) for r in REASONS], allow_other=True, on_pick=picked).open(animation=False)

    def _summary(self) -> None:
        left = len(self.missing) - len(self.reasons)
        self.summary = (f"{left} step(s) without a reason: recorded as 'no reason given'." if left
                        else "Every missing step has its reason.")

    def as_argument(self) -> dict[str, dict[str, str]]:
        """The ``reasons`` argument of ``case.close``: ``{"L": {"V2": "Nerve not exposed"}}``."""
        out: dict[str, dict[str, str]] = {}
        for (side, step), reason in self.reasons.items():
            out.setdefault(side, {})[step] = reason
        return out

    def close_case(self) -> None:
        """Close with the reasons given."""
        self.dismiss(animation=False)
        self._on_close(self.as_argument())


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
        """Confirm, give the missing steps their reasons, then a closing remark and ``case.close``."""
        def closed(r: dict[str, Any]) -> None:
            self.app.notify(f"case {r.get('case_id')} closed", "ok")
            self.notes = []
            self.notes_text = ""
            self.app.screens["report"].load(r.get("case_id"))
            self.app.go("report")

        def remark(reasons: dict[str, dict[str, str]]) -> None:
            def do_close(note: str) -> None:
                args: dict[str, Any] = {"note": note} if note else {}
                if reasons:
                    args["reasons"] = reasons
                self.app.cmd("case.close", on_ok=closed, **args)

            ask_text("Closing remark (optional)", do_close, hint="leave empty and touch OK for none")

        def confirmed() -> None:
            missing = [m for m in self.app.state.get("missing_steps") or [] if isinstance(m, dict)]
            if missing:
                MissingStepsDialog(missing, remark).open(animation=False)
            else:
                remark({})

        confirm("Close the case?",
                "Stimulation stops and the case record is closed. Enter the L2 findings first if they are known "
                "(they can be added to the report later only by a new case note).",
                confirmed, confirm_text="Close the case", danger=True)

    def report_last(self) -> None:
        self.app.screens["report"].load(self.last_case or None)
        self.app.go("report")


load_kv(__file__)
