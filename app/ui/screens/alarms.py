"""Alarms: the active alarms with priority in words and symbols, acknowledge, audio
pause with its countdown, audio off, reset, and the history of past alarms.

The engine owns the alarm state (catalogue, latching, escalation, pause timing); this
screen shows ``alarms`` messages and sends ``alarm.ack``, ``alarm.pause_audio``,
``alarm.audio_off`` and ``alarm.reset``. Every action is journaled by the engine.
"""

from __future__ import annotations

import time
from typing import Any

from kivy.properties import BooleanProperty, ColorProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import present as P
from app.ui.screens import LnmScreen, load_kv
from app.ui.widgets import confirm

ROWS = 4


class AlarmRow(BoxLayout):
    alarm_id = StringProperty("")
    label = StringProperty("")
    headline = StringProperty("")
    text = StringProperty("")
    state_words = StringProperty("")
    colour = ColorProperty((0, 0, 0, 0))
    fg = ColorProperty(P.PALETTE["text"])
    can_ack = BooleanProperty(False)
    used = BooleanProperty(False)

    def show(self, a: dict[str, Any] | None) -> None:
        self.used = a is not None
        if a is None:
            self.alarm_id = self.label = self.headline = self.text = self.state_words = ""
            self.colour = (0, 0, 0, 0)
            self.can_ack = False
            return
        st = P.style(a.get("priority")) or P.PRIORITY_STYLES["low"]
        self.alarm_id = str(a.get("id") or "")
        self.label = f"{st.symbol}\n{st.word}"
        self.colour = st.colour
        self.fg = st.text
        cat = "TECHNICAL" if a.get("technical") else "PHYSIOLOGICAL"
        where = P.site_side_name(a.get("site"), a.get("side"))
        self.headline = f"{str(a.get('title') or a.get('kind')).upper()}  {where}".strip()
        self.text = str(a.get("action") or a.get("message") or "")
        self.state_words = f"{cat.lower()}, raised {P.fmt_clock(a.get('raised_t_s'))}; {P.alarm_state_words(a)}"
        self.can_ack = not a.get("acknowledged")


class AlarmsScreen(LnmScreen):
    audio_text = StringProperty("")
    audio_off = BooleanProperty(False)
    overflow = StringProperty("")
    history = StringProperty("")
    count = StringProperty("")

    def update(self, state: dict[str, Any]) -> None:
        self.refresh()

    def frame(self) -> None:
        # the pause countdown and new alarms show without waiting for the state
        if getattr(self, "_last_draw", 0.0) + 0.25 < time.monotonic():
            self.refresh()

    def refresh(self) -> None:
        self._last_draw = time.monotonic()
        al = self.app.alarms or {}
        active = list(al.get("active") or [])
        for i in range(ROWS):
            self.ids[f"row{i}"].show(active[i] if i < len(active) else None)
        self.overflow = f"... and {len(active) - ROWS} more (acknowledge or resolve the ones above)" \
            if len(active) > ROWS else ""
        self.count = f"Active alarms: {len(active)}" if active else "No active alarms"
        audio = al.get("audio") or "normal"
        self.audio_off = audio == "off"
        if audio == "paused":
            self.audio_text = f"Alarm audio PAUSED: {P.fmt_countdown(al.get('pause_remaining_s'))} left"
        elif audio == "off":
            rem = al.get("audio_off_reminder_in_s")
            self.audio_text = "Alarm audio OFF" + (f" (reminder in {P.fmt_countdown(rem)})" if rem else "")
        else:
            self.audio_text = "Alarm audio on"
        lines = []
        for ev in self.app.events.alarm_history()[:14]:
            pr = P.priority_label(ev.get("priority"))
            lines.append(f"{P.fmt_clock(ev.get('t_s'))}  {pr + '  ' if pr else ''}{ev.get('message') or ev.get('kind')}")
        self.history = "\n".join(lines) or "No alarms in this case yet."

    def ack(self, alarm_id: str) -> None:
        self.app.cmd("alarm.ack", alarm=alarm_id, ok_message="alarm acknowledged")

    def ack_top(self) -> None:
        self.app.cmd("alarm.ack", ok_message="top alarm acknowledged")

    def pause(self) -> None:
        self.app.cmd("alarm.pause_audio", ok_message="alarm audio paused")

    def reset(self) -> None:
        self.app.cmd("alarm.reset", on_ok=lambda r: self.app.notify(
            f"reset: {', '.join(r.get('reset') or []) or 'nothing to reset (conditions still active?)'}", "ok"))

    def toggle_audio_off(self) -> None:
        if self.audio_off:
            self.app.cmd("alarm.audio_off", off=False, ok_message="alarm audio on")
            return
        confirm("Switch alarm audio OFF?",
                "Alarms will only be shown, not sounded, until audio is switched on again. A reminder "
                "sounds periodically and the banner says ALARM AUDIO OFF. Prefer 'Pause audio' (2 minutes).",
                lambda: self.app.cmd("alarm.audio_off", off=True, ok_message="alarm audio OFF"),
                confirm_text="Audio OFF", danger=True)


load_kv(__file__)
