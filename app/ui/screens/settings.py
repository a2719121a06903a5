"""Settings behind a PIN (``ui.settings_pin``): every setting of the schema with its
unit and range, changed through the engine.

The PIN only keeps casual hands out; the engine validates every change against the
schema (``settings.set``) and journals it, and its refusal (naming the setting, its unit
and range) is shown as it comes. Settings are shown a group and a page at a time
(no scrolling lists to mis-touch).
"""

from __future__ import annotations

from typing import Any

from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import TToggle, ask_text

ROWS = 6  # rows in the .kv; as many as fit at 9 mm each are used


class SettingRow(BoxLayout):
    key = StringProperty("")
    value = StringProperty("")
    detail = StringProperty("")
    used = BooleanProperty(False)


class SettingsScreen(LnmScreen):
    unlocked = BooleanProperty(False)
    pin_entry = StringProperty("")
    pin_message = StringProperty("Enter the PIN to change settings.")
    group = StringProperty("stim")
    page = NumericProperty(0)
    pages = NumericProperty(1)
    profile = StringProperty("")
    error = StringProperty("")

    def on_leave(self, *args: Any) -> None:
        self.lock()

    def on_unlocked(self, _inst: Any, value: bool) -> None:
        self.ids.lockpages.current = "unlocked" if value else "locked"

    def on_size(self, *_: Any) -> None:
        if self.unlocked:
            self.render()

    def lock(self) -> None:
        self.unlocked = False
        self.pin_entry = ""
        self.pin_message = "Enter the PIN to change settings."
        self.error = ""

    # ------------------------------------------------------------------ PIN

    def pin_key(self, ch: str) -> None:
        if ch == "<":
            self.pin_entry = self.pin_entry[:-1]
        elif len(self.pin_entry) < 8:
            self.pin_entry += ch

    def pin_ok(self) -> None:
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

    def _groups(self) -> None:
        box = self.ids.groups
        groups = []
        for s in self.app.settings_schema:
            g = str(s.get("key", "")).split(".")[0]
            if g and g not in groups:
                groups.append(g)
        if [c.value for c in box.children][::-1] == groups:
            return
        box.clear_widgets()
        for g in groups:
            t = TToggle(text=g, value=g, tid=f"settings.group.{g}", font_size=self.app.fs_small)
            t.bind(on_release=lambda _t, gg=g: self.pick_group(gg))
            box.add_widget(t)

    def pick_group(self, group: str) -> None:
        self.group = group
        self.page = 0
        self.error = ""
        self.render()

    def turn(self, delta: int) -> None:
        self.page = max(0, min(self.pages - 1, self.page + delta))
        self.render()

    def per_page(self) -> int:
        """Rows that fit the screen, each at least a touch target high."""
        free = self.height - self.app.fs_large * 1.5 - 2 * self.app.tp - 3 * self.app.pad
        return max(2, min(ROWS, int(free // (self.app.tp + self.app.pad * 0.5))))

    def _items(self) -> list[dict[str, Any]]:
        return [s for s in self.app.settings_schema if str(s.get("key", "")).startswith(self.group + ".")]

    def render(self) -> None:
        for t in self.ids.groups.children:
            t.state = "down" if t.value == self.group else "normal"
        items = self._items()
        per = self.per_page()
        self.pages = max(1, (len(items) + per - 1) // per)
        self.page = min(self.page, self.pages - 1)
        shown = items[self.page * per:(self.page + 1) * per]
        values = self.app.settings_values
        for i in range(ROWS):
            row: SettingRow = self.ids[f"row{i}"]
            row.height = self.app.tp if i < per else 0
            if i >= len(shown):
                row.used, row.key, row.value, row.detail = False, "", "", ""
                continue
            s = shown[i]
            key = s["key"]
            v = values.get(key)
            unit = s.get("unit") or ""
            row.used = True
            row.key = key
            row.value = ("(hidden)" if key == "ui.settings_pin" else f"{v}") + (f" {unit}" if unit else "")
            row.detail = f"{s.get('doc') or ''}  [{s.get('range') or ''}]" + (
                "  (start-up only: configuration file)" if s.get("live") is False else "")
        self.profile = f"profile: {self.app.state.get('engine', {}).get('profile') or 'default'}"

    def edit(self, key: str) -> None:
        spec = next((s for s in self.app.settings_schema if s.get("key") == key), {})
        kind = spec.get("kind")
        mode = "numeric" if kind in ("float", "int") else "alpha"
        if key == "ui.settings_pin":
            mode = "pin"
        current = "" if key == "ui.settings_pin" else str(self.app.settings_values.get(key, ""))

        def send(text: str) -> None:
            value: Any = text
            if kind == "float":
                try:
                    value = float(text)
                except ValueError:
                    value = text
            elif kind == "int":
                try:
                    value = int(text)
                except ValueError:
                    value = text
            elif kind == "bool":
                value = text.strip().lower() in ("1", "true", "yes", "on")

            def ok(_r: dict[str, Any]) -> None:
                self.error = ""
                self.app.notify(f"{key} changed", "ok")
                self.app.refresh_settings()

            def refused(reply: Any) -> bool:
                self.error = "NOT CHANGED: " + reply.message
                return False

            self.app.set_settings({key: value}, on_ok=ok, on_refused=refused)

        ask_text(f"{key} ({spec.get('unit') or 'no unit'})", send, value=current, mode=mode,
                 hint=f"allowed: {spec.get('range') or '-'}")


load_kv(__file__)
