"""The remote reader's message on the touchscreen: a strip under the alarm banner, with an Acknowledge button.

Owns: ``ReaderMessageBanner`` (self-contained: its Kivy rule is in this module) and
``banner_text`` (pure: what the strip says for an ``inbox`` stream message).
May import: Kivy, ``app.ui.present``, ``app.ui.widgets``.

The strip is not an alarm: no alarm colour, no flashing; it names the reader and says
"message" or "interpretation". It shows the oldest message not yet acknowledged (and how
many more wait) and collapses when every message of the open case is acknowledged.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout

from app.ui import widgets  # noqa: F401 - registers TButton for the rule below

Builder.load_string("""
#:import P app.ui.present

<ReaderMessageBanner>:
    size_hint_y: None
    height: (app.tp * 1.2) if root.text else 0
    opacity: 1 if root.text else 0
    disabled: not root.text
    padding: app.pad, 0
    spacing: app.pad
    canvas.before:
        Color:
            rgba: (0.23, 0.18, 0.36, 1) if root.text else (0, 0, 0, 0)
        Rectangle:
            pos: self.pos
            size: self.size
    Label:
        text: root.text
        font_size: app.fs
        halign: 'left'
        valign: 'middle'
        text_size: self.size
        shorten: True
        shorten_from: 'right'
        color: P.PALETTE['text']
    TButton:
        tid: 'reader.ack'
        text: 'Acknowledge'
        size_hint_x: None
        width: app.tp * 3.2 if root.text else 0
        hidden: not root.text
        on_release: root.acknowledge()
""")


def banner_text(inbox: Mapping[str, Any] | None, case_id: str | None) -> tuple[str, str]:
    """``(text, message id)`` for the oldest unacknowledged message of the open case, or ``("", "")``."""
    if not inbox or inbox.get("case_id") != case_id:
        return "", ""
    waiting = [m for m in inbox.get("messages") or [] if not m.get("acknowledged")]
    if not waiting:
        return "", ""
    m = waiting[0]
    what = "Interpretation" if m.get("kind") == "interpretation" else "Message"
    more = f"   (+{len(waiting) - 1} more)" if len(waiting) > 1 else ""
    return f"{what} from {m.get('from') or m.get('reader')} (remote reader): {m.get('text', '')}{more}", str(m["id"])


class ReaderMessageBanner(BoxLayout):
    """See the module docstring. ``show(inbox, case_id)`` with the latest ``inbox`` message."""

    text = StringProperty("")
    message_id = StringProperty("")

    def show(self, inbox: Mapping[str, Any] | None, case_id: str | None) -> None:
        self.text, self.message_id = banner_text(inbox, case_id)

    def acknowledge(self) -> None:
        if self.message_id:
            App.get_running_app().cmd("inbox.ack", message=self.message_id, ok_message="Message acknowledged")
