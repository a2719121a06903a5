"""Settings behind a PIN (``ui.settings_pin``), grouped as a nurse thinks of them:
stimulation, response, alarms, sound, display, tube check, and the service group.

Each setting is shown by its name (never its key), with its value and unit, its range and
its default and a sentence on what it does (``app.ui.words``); a setting read only at
start-up says so. Touching *Change* opens a keyboard that offers only what the setting
takes (numbers for a number, a PIN pad for the PIN, on/off for a switch). The PIN only
keeps casual hands out; the engine validates every change against the schema
(``settings.set``) and journals it, and its refusal is shown in words with the name, unit
and range. Settings are shown a group and a page at a time (no scrolling list to
mis-touch), as many rows as fit the screen at 9 mm each.
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import words as W
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import ChoicePopup, TToggle, ask_text

ROWS = 8  # at most this many rows; as many as fit at 9 mm each are shown


class SettingRow(BoxLayout):
    """One setting: its name and value, its range and default, its Change button."""

    key = StringProperty("")
    text = StringProperty("")
    used = BooleanProperty(False)


def row_text(spec: dict[str, Any], value: Any) -> str:
    """A setting's row in markup: name and value, then range, default and what it does."""
    key = str(spec.get("key") or "")
    info = W.setting_info(key, str(spec.get("doc") or ""))
    shown = "(hidden)" if key == "ui.settings_pin" else W.fmt_value(value, spec.get("unit") or "",
                                                                      spec.get("kind") or "")
    second = W.range_words(spec)
    if info.help:
        second = (second + ". " if second else "") + info.help[:1].upper() + info.help[1:]
    if spec.get("live") is False:
        second += " (start-up only: set in the configuration file)"
    return f"[b]{info.name}[/b]   {shown}\n[color=aab4bf]{second}[/color]"


class SettingsScreen(LnmScreen):
    """The settings (see the module docstring)."""

    unlocked = BooleanProperty(False)
    pin_entry = StringProperty("")
    pin_message = StringProperty("Enter the PIN to change settings.")
    group = StringProperty("stimulation")
    page = NumericProperty(0)
    pages = NumericProperty(1)
    profile = StringProperty("")
    error = StringProperty("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._rows: list[SettingRow] = []

    def on_leave(self, *args: Any) -> None:
        self.lock()

    def on_unlocked(self, _inst: Any, value: bool) -> None:
        self.ids.lockpages.current = "unlocked" if value else "locked"

    def on_size(self, *_: Any) -> None:
        if self.unlocked:
            self.render()

    def lock(self) -> None:
        """Back behind the PIN."""
        self.unlocked = False
        self.pin_entry = ""
        self.pin_message = "Enter the PIN to change settings."
        self.error = ""

    # ------------------------------------------------------------------ PIN

    def pin_key(self, ch: str) -> None:
        """A key of the PIN pad."""
        if ch == "<":
            self.pin_entry = self.pin_entry[:-1]
        elif len(self.pin_entry) < 8:
            self.pin_entry += ch

    def pin_ok(self) -> None:
        """Check the PIN."""
        pin = str(self.app.settings_values.get("ui.settings_pin") or "")
        if not pin:
            self.pin_message = "The settings are not known yet (engine not answering?). Try again."
            self.app.refresh_settings()
        elif self.pin_entry == pin:
            self.unlocked = True
            self.pin_message = ""
            self._groups()
            self.render()
        else:
            self.pin_message = "Wrong PIN. Try again."
        self.pin_entry = ""

    # ------------------------------------------------------------------ list

    def update(self, state: dict[str, Any]) -> None:
        if self.unlocked:
            self.render()

    def _present_groups(self) -> list[tuple[str, str]]:
        have = {W.setting_info(str(s.get("key")), str(s.get("doc") or "")).group for s in self.app.settings_schema}
        return [(g, title) for g, title in W.SETTING_GROUPS if g in have]

    def _groups(self) -> None:
        box = self.ids.groups
        groups = self._present_groups()
        if [c.value for c in box.children][::-1] == [g for g, _ in groups]:
            return
        box.clear_widgets()
        for g, title in groups:
            t = TToggle(text=title, value=g, tid=f"settings.group.{g}", font_size=self.app.fs_small)
            t.bind(on_release=lambda _t, gg=g: self.pick_group(gg))
            box.add_widget(t)

    def pick_group(self, group: str) -> None:
        """Show one group, from its first page."""
        self.group = group
        self.page = 0
        self.error = ""
        self.render()

    def turn(self, delta: int) -> None:
        """The previous or next page of the group."""
        self.page = max(0, min(self.pages - 1, self.page + delta))
        self.render()

    def per_page(self) -> int:
        """Rows that fit the screen, each at least a touch target high."""
        app = self.app
        free = (self.height - app.pad * 2 - 2 * app.tp - 3 * 3 - (app.fs_small * 2.6 + 3 if self.error else 0))
        return max(2, min(ROWS, int((free + 2) // (app.tp + 2))))

    def _items(self) -> list[dict[str, Any]]:
        return [s for s in self.app.settings_schema
                if W.setting_info(str(s.get("key")), str(s.get("doc") or "")).group == self.group]

    def render(self) -> None:
        """Show the page of the group."""
        for t in self.ids.groups.children:
            t.state = "down" if t.value == self.group else "normal"
        items = self._items()
        per = self.per_page()
        self.pages = max(1, (len(items) + per - 1) // per)
        self.page = min(self.page, self.pages - 1)
        shown = items[self.page * per:(self.page + 1) * per]
        values = self.app.settings_values
        box = self.ids.rows
        while len(self._rows) < per:
            self._rows.append(SettingRow())
        for i, row in enumerate(self._rows):
            if i < per and row.parent is None:
                box.add_widget(row, index=0)
            elif i >= per and row.parent is not None:
                box.remove_widget(row)
            if i >= len(shown):
                row.used, row.key, row.text = False, "", ""
                continue
            s = shown[i]
            row.used = True
            row.key = s["key"]
            row.text = row_text(s, values.get(s["key"]))
        profile = self.app.state.get("engine", {}).get("profile") if self.app.state else None
        self.profile = f"profile: {profile or 'default'}"

    def edit(self, key: str) -> None:
        """Change one setting (a keyboard that offers only what it takes)."""
        spec: dict[str, Any] = next((s for s in self.app.settings_schema if s.get("key") == key), {})
        info = W.setting_info(key, str(spec.get("doc") or ""))
        kind = spec.get("kind")
        unit = W.unit_words(spec.get("unit"))

        def send(value: Any) -> None:
            def ok(_r: dict[str, Any]) -> None:
                self.error = ""
                shown = ("changed" if key == "ui.settings_pin"
                         else f"now {W.fmt_value(value, spec.get('unit') or '', kind or '')}")
                self.app.notify(f"{info.name}: {shown}", "ok")
                self.app.refresh_settings()

            def refused(reply: Any) -> bool:
                self.error = "NOT CHANGED: " + W.refusal_words(reply.code, reply.message, reply.error)
                self.render()
                return True

            self.app.set_settings({key: value}, on_ok=ok, on_refused=refused)

        if kind == "bool":
            ChoicePopup(title=info.name, choices=[("On", True), ("Off", False)],
                        on_pick=lambda _label, v: send(bool(v))).open(animation=False)
            return

        def typed(text: str) -> None:
            value: Any = text
            if kind in ("float", "int"):
                try:
                    value = int(text) if kind == "int" and "." not in text else float(text)
                except ValueError:
                    self.error = f"NOT CHANGED: {info.name}: '{text}' is not a number."
                    self.render()
                    return
            send(value)

        mode = "numeric" if kind in ("float", "int") else "pin" if key == "ui.settings_pin" else "text"
        current = "" if key == "ui.settings_pin" else str(self.app.settings_values.get(key, ""))
        ask_text(f"{info.name}" + (f" ({unit})" if unit else ""), typed, value=current, mode=mode,
                 hint=(W.range_words(spec) + (". " + info.help if info.help else "")).strip(". "),
                 max_len=8 if mode == "pin" else 64)


load_kv(__file__)
