"""Shared Kivy widgets: touch buttons, the alarm banner, the status and navigation bars,
the on-screen keypad and the confirmation dialog (layout in ``widgets.kv``).

Owns: widgets used by several screens. Every touchable widget is at least the app's
``tp`` (9 mm) in both directions; selected toggles are marked by shape (a bar) and
weight, not by colour alone. Widgets never talk to the engine: screens ask the app
(``App.get_running_app().cmd``), which sends through the engine link.
May import: Kivy, ``app.ui.present``.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from kivy.app import App
from kivy.clock import Clock
from kivy.lang import Builder
from kivy.properties import (BooleanProperty, ColorProperty, ListProperty, NumericProperty, ObjectProperty,
                             OptionProperty, StringProperty)
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView
from kivy.uix.togglebutton import ToggleButton

from app.ui import present as P
from app.ui import words as W


_DIGITS = re.compile(r"\d")


class FitText:
    """Mixin for labels and buttons: the text always fits the box.

    ``font_size`` as set (in the ``.kv`` or in code) is the size wanted; when the text does
    not fit the box at that size (wrapped at words, never cut mid-word, not more than
    ``max_lines``), the largest smaller size down to ``min_font_size`` that fits is used.
    ``fit_template`` (e.g. "8888") fits the size once for every text of that shape, so a
    number that changes several times a second costs no measuring.
    """

    min_font_size = NumericProperty(11)
    fit_template = StringProperty("")

    if TYPE_CHECKING:  # what the Label or Button it is mixed into provides
        font_size: float
        text: str
        width: float
        height: float
        text_size: Any
        bold: bool
        max_lines: int

        def fbind(self, name: str, func: Callable[..., Any]) -> Any: ...

        def get_root_window(self) -> Any: ...

    def _fit_init(self) -> None:
        self._wanted_font = float(self.font_size)
        self._fitting = False
        self._fit_cache: dict[tuple[Any, ...], float] = {}
        self._fit_trigger = Clock.create_trigger(self._fit, -1)
        for name in ("text", "size", "bold", "markup", "text_size", "fit_template", "min_font_size", "max_lines",
                     "padding", "parent"):
            self.fbind(name, self._fit_trigger)
        self.fbind("font_size", self._font_set)
        self._fit_trigger()

    def _font_set(self, *_: Any) -> None:
        if not self._fitting:
            self._wanted_font = float(self.font_size)
            self._fit_trigger()

    def _fit(self, *_: Any) -> None:
        want = self._wanted_font
        # a number that changes is measured as its widest shape ("78 %" as "88 %"): the size
        # found holds for every value of that shape and the next value costs no measuring
        text = self.fit_template or _DIGITS.sub("8", self.text)
        if self.get_root_window() is None:
            return  # not on the screen (a page not shown): fitted when it is
        if self.width <= 1 or self.height <= 1 or not text.strip():
            best = want
        else:
            key = (text, round(self.width), round(self.height), tuple(self.text_size), want, self.bold,
                   self.min_font_size, self.max_lines)
            cached = self._fit_cache.get(key)
            if cached is None:
                cached = self._search(want, text)
                if len(self._fit_cache) > 64:
                    self._fit_cache.clear()
                self._fit_cache[key] = cached
            best = cached
        if best != self.font_size:
            self._fitting = True
            try:
                self.font_size = best
            finally:
                self._fitting = False


    def _search(self, want: float, text: str) -> float:
        """The largest whole size up to ``want`` at which ``text`` fits (from the last size
        found: a text that changes a little costs one or two layouts, not a search)."""
        from app.ui import fit

        if fit.fits(self, want, text):
            return want
        floor = int(min(float(self.min_font_size), want))
        last = getattr(self, "_fit_last", None)
        if last is not None and floor <= last < want:
            size = int(last)
            if fit.fits(self, float(size), text):
                while size + 1 < want and fit.fits(self, float(size + 1), text):
                    size += 1
                self._fit_last = float(size)
                return float(size)
        lo, hi = floor, int(math.ceil(want))  # hi does not fit
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fit.fits(self, float(mid), text):
                lo = mid
            else:
                hi = mid
        self._fit_last = float(lo)
        return float(lo)


class FitLabel(FitText, Label):
    """A label whose text always fits its box (see ``FitText``)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._fit_init()


class TButton(FitText, Button):
    """A touch button of at least 9 mm (``app.tp``); ``tid`` names it for tests and logs;
    its text always fits (see ``FitText``)."""

    tid = StringProperty("")
    kind = OptionProperty("normal", options=["normal", "primary", "danger", "flat"])
    hidden = BooleanProperty(False)  # not shown and not touchable

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._fit_init()

    def on_touch_down(self, touch: Any) -> bool:
        if self.hidden or self.width <= 0 or self.height <= 0:
            return False  # a hidden button never takes a touch meant for what is shown
        return super().on_touch_down(touch)


class TToggle(FitText, ToggleButton):
    """A toggle of at least 9 mm; the selected one gets a bar and bold text (not only colour)."""

    tid = StringProperty("")
    value = ObjectProperty(None)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._fit_init()


class Title(FitLabel):
    """A screen's title (large, bold, one line)."""


class Muted(FitLabel):
    """Secondary text in a muted colour."""


class Panel(BoxLayout):
    """A box on the panel colour."""


class Value(Label):
    """A read-only value with its caption above it."""

    caption = StringProperty("")


class Field(BoxLayout):
    """A caption, the current value and a touch area that opens the keyboard to change it.

    ``mode`` chooses the keyboard (``id``: letters, digits and - _ .; ``text``; ``numeric``;
    ``pin``), which offers only the characters the field accepts, never more than
    ``max_len``. ``errors`` (all the problems of the entry, in words) highlights the field
    and is shown with its keyboard."""

    tid = StringProperty("")
    caption = StringProperty("")
    value = StringProperty("")
    placeholder = StringProperty("touch to enter")
    mode = OptionProperty("text", options=["alpha", "text", "id", "numeric", "pin"])
    hint = StringProperty("")
    unit = StringProperty("")
    max_len = NumericProperty(200)
    errors = StringProperty("")

    def open_pad(self) -> None:
        """The keyboard for this field."""
        Keypad(title=self.caption, value=self.value, mode=self.mode, hint=self.hint, max_len=int(self.max_len),
               error=self.errors, on_submit=self._set).open(animation=False)

    def _set(self, value: str) -> None:
        self.value = value


class ChoiceField(Field):
    """A field whose value is picked from ``choices`` (label, value) in a popup; with
    ``allow_other`` the last button opens the keyboard for anything else."""

    choices = ListProperty([])
    allow_other = BooleanProperty(False)
    # the chosen value (``value`` is what is shown); None: nothing chosen (a cleared form)
    chosen = ObjectProperty(None, allownone=True)

    def open_pad(self) -> None:
        """The list to choose from."""
        pop = ChoicePopup(title=self.caption, choices=list(self.choices), allow_other=self.allow_other,
                          on_pick=self._pick)
        pop.open(animation=False)

    def _pick(self, label: str, value: Any) -> None:
        if value is ChoicePopup.OTHER:
            Keypad(title=self.caption, value="", mode="text", hint=self.hint, max_len=int(self.max_len),
                   on_submit=lambda text: self._pick(text, text) if text else None).open(animation=False)
            return
        self.value = label
        self.chosen = value


class ChoicePopup(ModalView):
    """Big buttons, one per choice."""

    OTHER = object()
    title = StringProperty("")

    def __init__(self, choices: list[tuple[str, Any]], on_pick: Callable[[str, Any], None], allow_other: bool = False,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.auto_dismiss = False
        grid = self.ids.grid
        items = list(choices) + ([("Other (type it) ...", self.OTHER)] if allow_other else [])
        grid.cols = 2 if len(items) > 4 else 1
        for i, (label, value) in enumerate(items):
            b = TButton(text=label, tid=f"choice.{i}")
            b.bind(on_release=lambda _b, lab=label, val=value: self._pick(on_pick, lab, val))
            grid.add_widget(b)

    def _pick(self, on_pick: Callable[[str, Any], None], label: str, value: Any) -> None:
        self.dismiss(animation=False)
        on_pick(label, value)


class MessageBar(BoxLayout):
    """One line under the alarm banner: case status on the left, the last feedback on the right."""

    status = StringProperty("")
    message = StringProperty("")
    level = OptionProperty("info", options=["info", "ok", "refused", "fault"])


class NavBar(BoxLayout):
    """The row of navigation buttons at the bottom of every screen."""

    current = StringProperty("")


class AlarmBanner(BoxLayout):
    """The alarm indicator on every screen (IEC 60601-1-8 colours, flashing, words, symbols).

    ``show(alarms, health, t)`` is called by the app with the engine's alarm message and the
    link health; ``flash(t)`` at about 20 Hz toggles the flashing phase. The priority word
    and symbol are always shown: colour never carries the information alone.
    """

    priority = StringProperty("")  # high | medium | low | "" (none)
    symbol = StringProperty("")
    word = StringProperty("")
    headline = StringProperty("No active alarms")
    detail = StringProperty("")
    audio = StringProperty("")
    more = StringProperty("")
    bg = ColorProperty(P.PALETTE["panel2"])
    fg = ColorProperty(P.PALETTE["text"])
    can_ack = BooleanProperty(False)
    ack_id = StringProperty("")  # what ACK acknowledges: the first unacknowledged alarm as shown
    can_pause = BooleanProperty(False)
    pause_text = StringProperty("PAUSE\nAUDIO")
    flash_is_on = BooleanProperty(True)
    engine_problem = BooleanProperty(False)

    def show(self, alarms: dict[str, Any] | None, health: Any) -> None:
        alarms = alarms or {}
        active = list(alarms.get("active") or [])
        if health is not None and not health.ok:
            self.engine_problem = True
            self.priority = P.ENGINE_PRIORITY
            st = P.style(self.priority)
            if st is not None:
                self.symbol, self.word = st.symbol, st.word
            if health.state == "stalled":
                self.headline = "TECHNICAL  ENGINE NOT RESPONDING"
            elif health.state == "connecting":
                self.headline = "TECHNICAL  NO CONNECTION TO THE ENGINE"
            else:
                self.headline = "TECHNICAL  ENGINE CONNECTION LOST"
            self.detail = (f"{health.message}. Monitoring may have stopped: check the patient by other means; "
                           "the board beeps if the engine has failed. Reconnecting by itself.")
            self.more = ""
            self.can_ack = self.can_pause = False
            self.audio = ""
            self.pause_text = "PAUSE\nAUDIO"
            return
        self.engine_problem = False
        audio = alarms.get("audio") or "normal"
        if audio == "paused":
            self.audio = f"AUDIO PAUSED {P.fmt_countdown(alarms.get('pause_remaining_s'))}"
        elif audio == "off":
            self.audio = "ALARM AUDIO OFF"
        else:
            self.audio = ""
        self.can_pause = True
        self.pause_text = (f"PAUSED\n{P.fmt_countdown(alarms.get('pause_remaining_s'))}" if audio == "paused"
                           else "PAUSE\nAUDIO")
        if not active:
            self.priority = ""
            self.symbol, self.word = "", ""
            self.headline = "No active alarms"
            self.detail = ""
            self.more = ""
            self.can_ack = False
            return
        ordered = P.display_order(active)
        top = ordered[0]
        self.priority = str(top.get("priority") or "low")
        st = P.style(self.priority) or P.PRIORITY_STYLES["low"]
        self.symbol, self.word = st.symbol, st.word
        self.headline = W.alarm_heading(top)
        state = ""
        if top.get("latched") and not top.get("condition_active", True):
            state = "Ended: reset to clear. "
        elif top.get("acknowledged"):
            state = "Acknowledged. "
        kind = "Technical alarm. " if top.get("technical") else ""
        # (a pause shows on the pause button; audio off is said here too: it lasts)
        first = ("ALARM AUDIO OFF. " if self.audio == "ALARM AUDIO OFF" else "") + state + kind + W.banner_action(top)
        if len(ordered) > 1:
            also = "Also: " + W.alarm_heading(ordered[1]) + (f" and {len(ordered) - 2} more" if len(ordered) > 2
                                                              else "")
            self.detail = first + "\n" + also
        else:
            self.detail = first
        self.more = f"+{len(active) - 1}\nlist" if len(active) > 1 else "list"
        first_unacked = next((a for a in ordered if not a.get("acknowledged")), None)
        self.ack_id = str(first_unacked.get("id") or "") if first_unacked else ""
        self.can_ack = first_unacked is not None

    def flash(self, t: float) -> None:
        st = P.style(self.priority)
        if st is None:
            self.bg, self.fg, self.flash_is_on = P.PALETTE["panel2"], P.PALETTE["text"], True
            return
        on = P.flash_on(self.priority, t)
        self.flash_is_on = on
        self.bg = st.colour if on else st.dim
        self.fg = st.text if on else st.dim_text


class Keypad(ModalView):
    """On-screen keyboard in a modal view; ``on_submit(text)``. ``mode`` picks the keys
    (``app.ui.forms.KEYBOARDS``: a field is offered only the characters it accepts);
    ``max_len`` characters at most."""

    title = StringProperty("")
    value = StringProperty("")
    mode = OptionProperty("text", options=["alpha", "text", "id", "numeric", "pin"])
    hint = StringProperty("")
    error = StringProperty("")
    upper = BooleanProperty(True)
    shown = StringProperty("")
    max_len = NumericProperty(2000)

    def __init__(self, on_submit: Callable[[str], None] | None = None, **kw: Any) -> None:
        self._on_submit = on_submit
        super().__init__(**kw)
        self.auto_dismiss = False
        self._build_keys()
        self.bind(value=self._show, mode=self._show)
        self._show()

    @property
    def layout(self) -> str:
        """The keyboard layout in use (``alpha`` is the text keyboard)."""
        return "text" if self.mode == "alpha" else self.mode

    def _build_keys(self) -> None:
        from app.ui.forms import KEYBOARDS

        grid: GridLayout = self.ids.keygrid
        grid.clear_widgets()
        rows = KEYBOARDS[self.layout]
        grid.cols = max(len(r) for r in rows)
        letters = self.layout in ("text", "id")
        for row in rows:
            for ch in row + " " * (grid.cols - len(row)):
                if ch == " ":
                    grid.add_widget(Label())
                    continue
                b = TButton(text=ch, tid=f"key.{ch}", font_size=app().fs if letters else app().fs_large)
                b.bind(on_release=lambda btn, c=ch: self.press(c))
                grid.add_widget(b)
        self.ids.extra.clear_widgets()
        if letters:
            shift = TButton(text="abc", tid="key.shift")
            shift.bind(on_release=lambda *_: self.toggle_case(shift))
            self.ids.extra.add_widget(shift)
        if self.layout == "text":
            space = TButton(text="space", tid="key.space")
            space.bind(on_release=lambda *_: self.press(" "))
            self.ids.extra.add_widget(space)
        back = TButton(text="<- delete", tid="key.back")
        back.bind(on_release=lambda *_: self.backspace())
        self.ids.extra.add_widget(back)

    def toggle_case(self, btn: TButton) -> None:
        """Upper or lower case letters."""
        self.upper = not self.upper
        btn.text = "abc" if self.upper else "ABC"
        for b in self.ids.keygrid.children:
            if isinstance(b, TButton) and b.text.isalpha():
                b.text = b.text.upper() if self.upper else b.text.lower()

    def press(self, ch: str) -> None:
        """A key: its character is added (up to ``max_len`` characters)."""
        if ch.isalpha():
            ch = ch.upper() if self.upper else ch.lower()
        if len(self.value) >= self.max_len:
            self.error = f"At most {int(self.max_len)} characters."
            return
        self.value += ch
        self.error = ""

    def backspace(self) -> None:
        """Remove the last character."""
        self.value = self.value[:-1]

    def clear(self) -> None:
        """Remove everything typed."""
        self.value = ""

    SHOWN_CHARS = 80  # a longer text shows its end, as a text field scrolls

    def _show(self, *_: Any) -> None:
        text = ("*" * len(self.value)) if self.mode == "pin" else self.value
        self.shown = text if len(text) <= self.SHOWN_CHARS else "..." + text[-(self.SHOWN_CHARS - 3):]

    def submit(self) -> None:
        """OK: close and hand over the text."""
        text = self.value.strip()
        self.dismiss(animation=False)
        if self._on_submit is not None:
            self._on_submit(text)

    def cancel(self) -> None:
        """Close without changing anything."""
        self.dismiss(animation=False)


class ConfirmDialog(ModalView):
    """A question with a cancel and a confirm button (confirm text says what happens)."""

    title = StringProperty("")
    message = StringProperty("")
    confirm_text = StringProperty("Confirm")
    cancel_text = StringProperty("Cancel")
    danger = BooleanProperty(False)

    def __init__(self, on_confirm: Callable[[], None] | None = None, on_cancel: Callable[[], None] | None = None,
                 **kw: Any) -> None:
        self._on_confirm = on_confirm
        self._on_cancel = on_cancel
        super().__init__(**kw)
        self.auto_dismiss = False

    def confirm(self) -> None:
        self.dismiss(animation=False)
        if self._on_confirm:
            self._on_confirm()

    def cancel(self) -> None:
        self.dismiss(animation=False)
        if self._on_cancel:
            self._on_cancel()


def ask_text(title: str, on_submit: Callable[[str], None], *, value: str = "", mode: str = "text",
             hint: str = "", max_len: int = 500) -> Keypad:
    """Open the on-screen keyboard; ``on_submit(text)`` when OK is touched."""
    pad = Keypad(title=title, value=value, mode=mode, hint=hint, on_submit=on_submit, max_len=max_len)
    pad.open(animation=False)
    return pad


def confirm(title: str, message: str, on_confirm: Callable[[], None], *, confirm_text: str = "Confirm",
            danger: bool = False, on_cancel: Callable[[], None] | None = None,
            cancel_text: str = "Cancel") -> ConfirmDialog:
    """Ask a question; ``on_confirm()`` when the confirm button is touched."""
    dlg = ConfirmDialog(title=title, message=message, confirm_text=confirm_text, danger=danger,
                        on_confirm=on_confirm, on_cancel=on_cancel, cancel_text=cancel_text)
    dlg.open(animation=False)
    return dlg


def schedule(fn: Callable[..., Any], delay: float = 0.0) -> None:
    """Run ``fn`` on the UI thread (the only way other threads reach widgets)."""
    Clock.schedule_once(lambda _dt: fn(), delay)


def app() -> Any:
    """The running application."""
    return App.get_running_app()


Builder.load_file(os.path.join(os.path.dirname(__file__), "widgets.kv"))
