"""The case form's fields: what each accepts, in words, and every problem with an entry
(pure: no Kivy, no I/O).

Owns: ``CASE_FIELDS`` (for each field of the case set-up: the API argument it fills, its
caption, the keyboard that offers only what it accepts, what it accepts in words, its
unit, whether it is required), ``field_errors`` (ALL the problems of one entry, in words,
not only the first), ``case_errors`` (every field's problems, and a case without a side),
``sides_for_procedure`` ("Hemithyroidectomy, left" means the left side) and
``KEYBOARDS`` (the characters each keyboard offers).

The limits (lengths, ranges, units) are read from the API's own command table
(``app.api.protocol.COMMANDS``), and every entry this module accepts is also checked with
the API's own check, so the form never accepts what the engine would refuse; the engine
still checks everything it is sent.
May import: the standard library, ``app.api.protocol``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.api import protocol as p

ID_CHARS = string.ascii_letters + string.digits + "-_."
NUMBER_CHARS = string.digits + "."
TEXT_CHARS = string.ascii_letters + string.digits + " -_.,'()/&:+"
PIN_CHARS = string.digits

# the keys each keyboard shows (upper-case letters stand for both cases)
KEYBOARDS = {
    "id": ("1234567890", "QWERTYUIOP", "ASDFGHJKL-", "ZXCVBNM_."),
    "text": ("1234567890", "QWERTYUIOP", "ASDFGHJKL-", "ZXCVBNM,.'", "()/&:+_"),
    "numeric": ("789", "456", "123", ".0"),
    "pin": ("789", "456", "123", "0"),
}
KEYBOARD_CHARS = {"id": ID_CHARS, "text": TEXT_CHARS, "numeric": NUMBER_CHARS, "pin": PIN_CHARS}


@dataclass(frozen=True)
class FieldRule:
    """One field of the case form."""

    field: str  # the form's name for it (and the widget id)
    arg: str  # the API argument it fills
    caption: str
    keyboard: str  # id | text | numeric
    allowed: str  # what it accepts, in words (shown with the keyboard and with its errors)
    unit: str = ""
    required: bool = False

    @property
    def spec(self) -> p.Arg:
        """The API's own description of the argument (limits, unit)."""
        arg = p.COMMANDS["case.start"].arg(self.arg) or p.COMMANDS["case.update"].arg(self.arg)
        if arg is None:
            raise KeyError(f"case.start has no argument {self.arg}")
        return arg

    @property
    def max_len(self) -> int:
        """How many characters the keyboard takes."""
        spec = self.spec
        return spec.max_len if spec.kind == "str" else 8


def _range(spec: p.Arg) -> str:
    return f"{spec.minimum:g}-{spec.maximum:g} {spec.unit}".strip()


def _rules() -> dict[str, FieldRule]:
    start = p.COMMANDS["case.start"]

    def limit(arg: str) -> int:
        spec = start.arg(arg)
        return spec.max_len if spec is not None else 0

    def rng(arg: str) -> str:
        spec = start.arg(arg)
        return _range(spec) if spec is not None else ""

    rules = [
        FieldRule("patient", "patient_id", "Patient ID", "id",
                  f"letters, digits and - _ . only, starting with a letter or digit, up to {limit('patient_id')} "
                  "(a pseudonym, never the name)", required=True),
        FieldRule("surgeon", "surgeon", "Surgeon", "text", f"up to {limit('surgeon')} characters"),
        FieldRule("procedure", "procedure", "Procedure", "text", f"up to {limit('procedure')} characters"),
        FieldRule("tube_type", "tube_type", "Tube type", "text", f"up to {limit('tube_type')} characters"),
        FieldRule("tube_size", "tube_size_mm", "Tube size", "numeric", f"inner diameter {rng('tube_size_mm')}",
                  unit="mm"),
        FieldRule("tube_depth", "tube_depth_cm", "Tube depth", "numeric", f"at the teeth, {rng('tube_depth_cm')}",
                  unit="cm"),
    ]
    return {r.field: r for r in rules}


CASE_FIELDS: dict[str, FieldRule] = _rules()
SIDES_RULE = "at least one side: left, right or both (in the order they are operated)"


def _char_names(chars: list[str]) -> str:
    names = {" ": "space", ",": "comma", "'": "apostrophe"}
    return ", ".join(names.get(c, c) for c in chars)


def field_errors(rule: FieldRule, text: str) -> list[str]:
    """Every problem of ``text`` in ``rule``'s field, each in a few words (empty: accepted;
    what the field accepts is ``rule.allowed``)."""
    text = text.strip()
    spec = rule.spec
    if not text:
        return ["required"] if rule.required else []
    errors: list[str] = []
    if rule.keyboard == "numeric":
        try:
            value = float(text)
        except ValueError:
            return ["not a number"]
        if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
            errors.append(f"{value:g} {rule.unit} is outside {_range(spec)}")
        return errors
    if rule.keyboard == "id":
        bad = list(dict.fromkeys(c for c in text if c not in ID_CHARS))  # in the order they appear
        if bad:
            errors.append(f"{_char_names(bad)} not allowed")
        if text[0] not in string.ascii_letters + string.digits:
            errors.append("must start with a letter or digit")
    if len(text) > spec.max_len:
        errors.append(f"{len(text)} characters, at most {spec.max_len}")
    if not errors:
        try:
            spec.check("case.start", text)
        except p.ApiError:
            errors.append("not accepted")
    return errors


def case_errors(values: Mapping[str, str], sides: list[str], editing: bool = False) -> dict[str, list[str]]:
    """Every field's problems (fields without problems are left out); ``sides`` must name
    at least one side. A case being edited keeps its patient ID (not checked again)."""
    out: dict[str, list[str]] = {}
    for name, rule in CASE_FIELDS.items():
        if editing and name == "patient":
            continue
        errs = field_errors(rule, str(values.get(name) or ""))
        if errs:
            out[name] = errs
    if not sides:
        out["sides"] = ["choose at least one side"]
    return out


def summary(errors: Mapping[str, list[str]]) -> str:
    """All the problems of the form in one text: 'Patient ID: ...; ...  Tube size: ...'."""
    captions = {**{n: r.caption for n, r in CASE_FIELDS.items()}, "sides": "Sides"}
    return "  ".join(f"{captions.get(n, n)}: {'; '.join(e)}." for n, e in errors.items())


FIELD_OF_ARG = {r.arg: r.field for r in CASE_FIELDS.values()} | {"planned_sides": "sides"}


def sides_for_procedure(procedure: Any) -> list[str] | None:
    """The side a one-sided procedure names ("Hemithyroidectomy, left" -> ["L"]); None
    when the procedure does not say (the nurse chooses)."""
    text = str(procedure or "").lower()
    left, right = "left" in text, "right" in text
    if left and not right:
        return ["L"]
    if right and not left:
        return ["R"]
    return None
