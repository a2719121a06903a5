"""Start-up self-test: board, audio, LEDs, buzzer and storage, as the engine reports them.

The engine runs the test (``selftest.run``: it plays a tone, lights the LEDs, sounds the
backup buzzer, checks storage and the board); this screen starts it once the engine
answers, shows every item with PASS or FAIL in words and the engine's message, and lets
the nurse continue (after a confirmation when something failed). The outputs the engine
cannot observe (loudspeaker, LEDs, buzzer: "played, confirm") are asked one by one, "Did
you hear ...?" Yes / No, and the answer goes to the engine (``selftest.confirm``), which
journals it.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, StringProperty

from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ConfirmDialog, confirm

# Short captions: they must fit a third of an 800 px screen; the message column says more.
ITEMS = (("board", "Board"), ("audio", "Loudspeaker"), ("leds", "Alarm lights"),
         ("buzzer", "Backup buzzer"), ("storage", "Case storage"))


class SelfTestScreen(LnmScreen):
    """The start-up self-test (see the module docstring)."""

    engine_text = StringProperty("Waiting for the engine ...")
    summary = StringProperty("")
    running = BooleanProperty(False)
    passed = BooleanProperty(False)
    done = BooleanProperty(False)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.result: dict[str, Any] | None = None
        self._started = False
        self._render()

    def update(self, state: dict[str, Any]) -> None:
        eng = state.get("engine") or {}
        board = state.get("board") or {}
        self.engine_text = (f"Engine {eng.get('version', '?')} answering"
                            + (" - SIMULATED board (demonstration, not for patients)" if eng.get("simulated") else "")
                            + (f" - board {board.get('board_id')}" if board.get("board_id") else ""))
        if not self._started:
            self._started = True
            self.run_test()

    def frame(self) -> None:
        h = self.app.link.health()
        if not h.ok:
            self.engine_text = f"Engine: {h.state.upper()} - {h.message}"
            self._started = self._started and self.result is not None

    def run_test(self) -> None:
        self.running = True
        self.summary = "Testing: listen for the tone, watch the lights and the buzzer ..."
        self.result = None
        self._render()
        self.app.cmd("selftest.run", on_ok=self._got, on_error=self._failed)

    def _got(self, result: dict[str, Any]) -> None:
        self.running = False
        self.result = result
        self.passed = bool(result.get("ok"))
        pending = [i for i in result.get("items") or [] if i.get("status") == "confirm"]
        self.done = not pending
        bad = [i for i in result.get("items") or [] if i.get("ok") is False]
        if pending:
            self.summary = "PLAYED: confirm what you saw and heard."
        else:
            self.summary = ("SELF-TEST PASSED: all items work." if self.passed else
                            f"SELF-TEST FAILED: {len(bad)} item(s) failed. Fix them, or continue only with a backup "
                            "monitor.")
        self._render()
        if pending:
            self._ask(pending[0])

    def _ask(self, item: dict[str, Any]) -> None:
        """The nurse's eyes and ears for an output the engine drove but cannot observe."""
        name = item.get("item")

        def answer(seen: bool) -> None:
            self.app.cmd("selftest.confirm", on_ok=self._got, on_error=self._failed, item=name, seen=seen)

        ConfirmDialog(title="Self-test: confirm", message=str(item.get("question") or item.get("message") or ""),
                      confirm_text="Yes", cancel_text="No", on_confirm=lambda: answer(True),
                      on_cancel=lambda: answer(False)).open(animation=False)

    def _failed(self, reply: Any) -> bool:
        self.running = False
        self.summary = f"The self-test could not run: {reply.message}"
        self._render()
        return True

    def _render(self) -> None:
        items = {i.get("item"): i for i in (self.result or {}).get("items") or []}
        for key, label in ITEMS:
            row = self.ids.get(f"item_{key}")
            if row is None:
                continue
            it = items.get(key)
            row.caption = label
            if it is None:
                row.verdict = "..." if self.running else "not tested"
                row.ok = True
                row.message = ""
            else:
                status = it.get("status") or ("ok" if it.get("ok") else "failed")
                row.ok = it.get("ok") is not False
                row.verdict = {"confirm": "CONFIRM?"}.get(status, "PASS" if it.get("ok") else "FAIL")
                by = {"confirmed": " (seen / heard by the nurse)",
                      "not_confirmed": " (NOT seen / heard by the nurse)"}.get(status, "")
                row.message = str(it.get("message") or "") + by

    def proceed(self) -> None:
        target = "monitor" if self.app.case_open else "setup"
        if self.passed:
            self.app.go(target)
            return
        why = "The self-test failed." if self.done else "The self-test has not completed."
        confirm("Continue without a passed self-test?",
                f"{why} Monitoring may not work as expected: have a backup plan (another monitor, visual "
                "identification of the nerves).", lambda: self.app.go(target), confirm_text="Continue anyway",
                danger=True)


load_kv(__file__)
