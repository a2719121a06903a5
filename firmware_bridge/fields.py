"""One field specification: what a value from outside may be, checked in one place.

Owns: ``Field`` (kind, unit, range, choices, pattern, length, null allowed, how lenient)
and ``FieldError`` (what is wrong: a ``reason`` code and a ``phrase``).
May import: the standard library only. Pure: no I/O, no state.

Every value that comes into LNM from outside goes through a ``Field``: settings
(``app.settings.Setting``), local-API arguments (``app.api.protocol.Arg``), scenario
expectations (``firmware_bridge.sim.scenario``), case-journal payloads
(``app.record.entries``) and the virtual patient's conditions
(``firmware_bridge.sim.physiology``). The check is the same everywhere; each of them names
the problem in its own words (a setting, an argument, a field of an entry) from the
error's ``reason`` and ``phrase`` and the field's unit and range (``describe()``).

It lives in ``firmware_bridge``, whose virtual board uses it too, because
``firmware_bridge`` never imports ``app``.

Kinds: ``number`` (an int or a float, never a bool), ``int``, ``bool``, ``str``, ``enum``
(text, one of ``choices``), ``list`` (at most ``max_len`` items, each one of ``choices``
when given, none repeated), ``object`` (a JSON object: a dict), ``any``; several joined
by ``|`` (``"object|bool"``): the first that takes the value wins.

``accept`` says how lenient the reading is: ``"exact"`` (the value must already be of the
kind: journal payloads, scenario files), ``"json"`` (JSON values: an integral number is an
``int``; the local API), ``"text"`` (text is read as a number or as true/false too:
configuration files, the touchscreen, virtual-board controls).

``reason`` codes: ``null`` (None where none is allowed), ``type`` (not of the kind),
``finite`` (NaN or infinite), ``integer`` (a number, not integral), ``big`` (an integer
beyond any float), ``range``, ``choice``, ``pattern``, ``length``, ``item`` (a list item
not among the choices), ``repeat`` (a list item twice).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("number", "int", "bool", "str", "enum", "list", "object", "any")
ACCEPT = ("exact", "json", "text")


def shown(value: Any, limit: int = 60) -> str:
    """A value as JSON for a message, cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FieldError(ValueError):
    """A value a ``Field`` refused: ``reason`` (a code, see the module docstring), ``phrase``
    (what is wrong, e.g. ``is 11, out of range``) and ``value`` (as converted so far)."""

    def __init__(self, field: Field, value: Any, reason: str, phrase: str) -> None:
        super().__init__(f"{field.name}{field.unit_text()} {phrase}; must be {field.describe()}")
        self.field = field
        self.value = value
        self.reason = reason
        self.phrase = phrase


@dataclass(frozen=True)
class Field:
    """What one value may be; ``check`` returns it converted to its kind or raises ``FieldError``."""

    name: str
    kind: str = "number"
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[Any] | None = None
    pattern: str | None = None
    max_len: int | None = None
    nullable: bool = False
    accept: str = "json"
    finite: bool = True  # numbers: NaN and infinities refused
    words: str = ""  # what a good value is, in people's words (instead of the generated description)

    def __post_init__(self) -> None:
        for kind in self.kind.split("|"):
            if kind not in KINDS:
                raise ValueError(f"field {self.name}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
        if self.accept not in ACCEPT:
            raise ValueError(f"field {self.name}: accept must be one of {', '.join(ACCEPT)}")

    # ------------------------------------------------------------------ description

    def unit_text(self) -> str:
        """`` (unit)`` or nothing."""
        return f" ({self.unit})" if self.unit else ""

    def range_text(self) -> str:
        """``lo-hi unit`` (an open end is left empty)."""
        unit = f" {self.unit}" if self.unit else ""
        lo = "" if self.minimum is None else number_text(self.minimum)
        hi = "" if self.maximum is None else number_text(self.maximum)
        return f"{lo}-{hi}{unit}"

    def describe(self) -> str:
        """What a good value is: ``a number 0-10 mA``, ``one of probe, aps``, ``text up to 64 characters``."""
        if self.words:
            return self.words
        kind = self.kind.split("|")[0]
        if kind in ("enum", "list") and self.choices:
            what = "one of " if kind == "enum" else "a list of "
            return what + ", ".join(str(c) for c in self.choices)
        if self.choices:
            return "one of " + ", ".join(f"{c}{' ' + self.unit if self.unit else ''}" for c in self.choices)
        if kind in ("number", "int"):
            what = "an integer" if kind == "int" else "a number"
            if self.minimum is not None or self.maximum is not None:
                return f"{what} {self.range_text()}"
            return what + (f" {self.unit}" if self.unit else "")
        if kind == "bool":
            return "true or false"
        if kind == "str":
            longest = f" up to {self.max_len} characters" if self.max_len is not None else ""
            return f"text{longest}" + (f" matching {self.pattern}" if self.pattern else "")
        if kind == "object":
            return "a JSON object"
        return kind

    # ------------------------------------------------------------------ checking

    def check(self, value: Any) -> Any:
        """``value`` converted to the field's kind, or ``FieldError`` saying what is wrong."""
        if value is None:
            if self.nullable:
                return None
            if "any" not in self.kind.split("|"):
                raise FieldError(self, value, "null", "is null")
        refusals: list[FieldError] = []
        for kind in self.kind.split("|"):
            try:
                converted = _CONVERT[kind](self, value)
            except FieldError as exc:
                refusals.append(exc)
                continue
            self._check_value(converted)
            return converted
        # every kind refused it: the first refusal that says more than "not of the kind" tells most
        raise next((exc for exc in refusals if exc.reason != "type"), refusals[0])

    def _check_value(self, value: Any) -> None:
        if self.choices is not None and not isinstance(value, list) and value not in self.choices:
            raise FieldError(self, value, "choice", f"is {shown(value)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise FieldError(self, value, "range", f"is {value:g}, out of range")

    def _number(self, value: Any) -> Any:
        kind = "int" if self.kind.split("|")[0] == "int" else "number"
        if isinstance(value, str) and self.accept == "text":
            try:
                value = float(value.strip())
            except ValueError:
                raise FieldError(self, value, "type", f"is {shown(value)}, not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(self, value, "type", f"is {shown(value)}, not a number")
        if self.accept == "exact":
            if kind == "int" and not isinstance(value, int):
                raise FieldError(self, value, "integer", f"is {value!r}, not an integer")
            if self.finite and isinstance(value, float) and not math.isfinite(value):
                raise FieldError(self, value, "finite", f"is {shown(value)}, not a number")
            return value
        try:
            as_float = float(value)
        except OverflowError:  # an integer beyond any float: never in range
            raise FieldError(self, value, "big",
                             f"is an integer of {len(str(abs(value)))} digits, out of range") from None
        if not math.isfinite(as_float):
            if self.finite:
                raise FieldError(self, value, "finite", f"is {shown(value)}, not a number")
            return as_float
        if kind == "int":
            if not as_float.is_integer():
                raise FieldError(self, value, "integer", f"is {value!r}, not an integer")
            return int(value)
        return as_float

    def _int(self, value: Any) -> Any:
        return self._number(value)

    def _bool(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if self.accept == "text" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise FieldError(self, value, "type", f"is {shown(value)}")

    def _str(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise FieldError(self, value, "type", f"is {shown(value)}, not text")
        if self.max_len is not None and len(value) > self.max_len:
            raise FieldError(self, value, "length", f"is {len(value)} characters long")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise FieldError(self, value, "pattern", f"is {value!r}")
        return value

    def _enum(self, value: Any) -> Any:
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            raise FieldError(self, value, "choice" if isinstance(value, str) else "type", f"is {shown(value)}")
        return value

    def _list(self, value: Any) -> Any:
        if not isinstance(value, list):
            raise FieldError(self, value, "type", f"is {shown(value)}")
        if self.max_len is not None and len(value) > self.max_len:
            raise FieldError(self, value, "length", f"is {shown(value)}")
        if self.choices:
            for item in value:
                if item not in self.choices:
                    raise FieldError(self, value, "item", f"contains {shown(item)}")
        if len(set(map(str, value))) != len(value):
            raise FieldError(self, value, "repeat", "repeats an item")
        return list(value) if self.accept != "exact" else value

    def _object(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise FieldError(self, value, "type", f"is {shown(value)}")
        return dict(value) if self.accept != "exact" else value

    def _any(self, value: Any) -> Any:
        return value


_CONVERT: dict[str, Callable[[Field, Any], Any]] = {
    "number": Field._number,
    "int": Field._int,
    "bool": Field._bool,
    "str": Field._str,
    "enum": Field._enum,
    "list": Field._list,
    "object": Field._object,
    "any": Field._any,
}


def number_text(x: float | None) -> str:
    """A bound for a message: ``10``, not ``10.0``; ``0.1``; ``?`` when there is none."""
    if x is None:
        return "?"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:g}"


__all__ = ["Field", "FieldError", "number_text", "shown"]
