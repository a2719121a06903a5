"""Is any text on the screen cut off? (the check the UI tests and the screen gallery run)

Owns: ``text_problems(root)``: for every visible label and button under ``root`` (a
window, a screen or a dialog), whether its whole text fits its box: measured again with
the label's own font and padding, wrapped at its width, never shortened, it must not be
wider or taller than the box, no single word may be wider than the box (it would be cut
mid-word), a label limited to ``max_lines`` must not need more, a label that may
``shorten`` must not need to, and the box itself must lie on the screen (inside the
window, and inside its screen unless it scrolls). A label whose text is empty or that is
not shown is not checked.

May import: Kivy (called with a running window only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kivy.core.text import Label as CoreLabel
from kivy.core.text.markup import MarkupLabel
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView
from kivy.uix.screenmanager import Screen, ScreenManager
from kivy.uix.scrollview import ScrollView

TOLERANCE_PX = 1.5
_TAG = re.compile(r"\[/?[a-z_]+(?:=[^\]]*)?\]")


def _shown(w: Any, top: Any) -> bool:
    node = w
    while node is not None and node is not top.parent and node.parent is not node:
        if getattr(node, "opacity", 1) == 0 or getattr(node, "hidden", False):
            return False
        if node.width <= 0 or node.height <= 0:
            return False
        parent = node.parent
        if isinstance(node, Screen) and (parent is None or (isinstance(parent, ScreenManager)
                                                             and parent.current_screen is not node)):
            return False
        node = parent
    return True


def _ancestors(w: Any) -> Iterator[Any]:
    node = w.parent
    while node is not None and node.parent is not node:  # (the window is its own parent)
        yield node
        node = node.parent


def _in_scroll(w: Any) -> bool:
    return any(isinstance(n, ScrollView) for n in _ancestors(w))


def _screen_of(w: Any) -> Any:
    return next((n for n in _ancestors(w) if isinstance(n, (Screen, ModalView))), None)


def _layout(label: Label, text_size: tuple[float | None, float | None], font_size: float | None, text: str,
            max_lines: int = 0) -> tuple[Any, int, int]:
    """Lay ``text`` out as ``label`` would (its font, padding, alignment) without drawing it."""
    opts = dict(label._label.options)
    opts.update(text_size=text_size, shorten=False, max_lines=max_lines, text=text)
    if font_size is not None:
        opts["font_size"] = font_size
    opts.pop("usersize", None)
    core = (MarkupLabel if label.markup else CoreLabel)(**opts)
    w, h = core.render()
    return core, int(w), int(h)


def _laid_out(core: Any) -> str:
    return "".join(word.text for line in core._cached_lines for word in line.words).replace(" ", "").replace("\n", "")


def fits(label: Label, font_size: float, text: str | None = None) -> bool:
    """Whether ``text`` (default: the label's) fits ``label``'s box at ``font_size``."""
    return label_problem(label, font_size, text) is None


def label_problem(label: Label, font_size: float | None = None, text: str | None = None) -> str | None:
    """Why ``label``'s text does not fit (None: it fits); at another font size or with
    another text when given."""
    text = label.text if text is None else text
    if not text or not text.strip():
        return None
    pad = list(label._label.options.get("padding") or (0, 0, 0, 0))
    if len(pad) == 2:
        pad = [pad[0], pad[1], pad[0], pad[1]]
    tsw, tsh = label.text_size
    box_w = float(tsw) if tsw is not None else float(label.width)
    box_h = float(tsh) if tsh is not None else float(label.height)
    if tsw is not None and tsw > label.width + TOLERANCE_PX:
        return f"its text area ({tsw:.0f} px) is wider than its box ({label.width:.0f} px)"
    if tsh is not None and tsh > label.height + TOLERANCE_PX:
        return f"its text area ({tsh:.0f} px) is taller than its box ({label.height:.0f} px)"
    if tsw is None:
        core, w, h = _layout(label, (None, None), font_size, text)
        if w > label.width + TOLERANCE_PX or h > label.height + TOLERANCE_PX:
            return f"needs {w}x{h} px, has {label.width:.0f}x{label.height:.0f}"
        return None
    core, w, h = _layout(label, (box_w, None), font_size, text)
    inner_w = box_w - pad[0] - pad[2]
    plain = _TAG.sub("", text) if label.markup else text
    for word in plain.split():
        ww = core.get_extents(word)[0]
        if ww > inner_w + TOLERANCE_PX:
            return f"the word {word!r} ({ww} px) is wider than the box ({inner_w:.0f} px): cut mid-word"
    if label.shorten:
        one_line = core.get_extents(" ".join(plain.split()))[0]
        if "\n" in plain or one_line > inner_w + TOLERANCE_PX:
            return f"shortened: needs {one_line} px on one line, has {inner_w:.0f}"
    if h > box_h:  # (strict: a line that does not fit whole is not drawn at all)
        return f"needs {h} px in height at {box_w:.0f} px wide, has {box_h:.0f}"
    if label.max_lines and len(core._cached_lines) > label.max_lines:
        return f"needs {len(core._cached_lines)} lines, shows at most {label.max_lines}"
    if tsh is not None:  # laid out in the box as drawn: nothing may be left out
        boxed, _w, _h = _layout(label, (box_w, box_h), font_size, text, int(label.max_lines or 0))
        if _laid_out(boxed) != _laid_out(core):
            return "part of its text is not drawn in its box"
    return None


def _box_problem(label: Label, window: Any) -> str | None:
    if _in_scroll(label):
        return None  # a list that scrolls: reached by scrolling (its text is checked all the same)
    x, y = label.to_window(label.x, label.y)
    r, t = x + label.width, y + label.height
    if x < -TOLERANCE_PX or y < -TOLERANCE_PX or r > window.width + TOLERANCE_PX or t > window.height + TOLERANCE_PX:
        return f"its box {x:.0f},{y:.0f}-{r:.0f},{t:.0f} is outside the {window.width}x{window.height} window"
    scr = _screen_of(label)
    if scr is not None and scr.width > 0:
        sx, sy = scr.to_window(scr.x, scr.y)
        if (x < sx - TOLERANCE_PX or y < sy - TOLERANCE_PX or r > sx + scr.width + TOLERANCE_PX
                or t > sy + scr.height + TOLERANCE_PX):
            return "its box reaches outside its screen"
    return None


def labels(root: Any) -> Iterator[Label]:
    """The visible labels (and buttons) under ``root`` (a widget or the window)."""
    tops = [root] if hasattr(root, "walk") else list(root.children)
    modals = [w for w in tops if isinstance(w, ModalView)]
    for top in modals[:1] or tops:  # an open dialog hides what is under it
        for w in top.walk(restrict=True):
            if isinstance(w, Label) and _shown(w, top):
                yield w


def text_problems(root: Any, window: Any) -> list[str]:
    """Every label under ``root`` whose text does not fit, with the reason."""
    out = []
    for lab in labels(root):
        why = label_problem(lab) or _box_problem(lab, window)
        if why:
            name = getattr(lab, "tid", "") or type(lab).__name__
            out.append(f"{name} {lab.text[:60]!r}: {why}")
    return out
