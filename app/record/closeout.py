"""Closing a case: the INMSG steps still missing per planned side, and the reason for each.

Owns: ``REQUIRED_STEPS``, ``missing_steps`` (pure: what was recorded -> what is missing),
``missing_from_procedure`` (the same from ``Procedure.to_dict()`` or its ``summary()``),
``closeout_entries`` (the reasons given at close, checked, as journaled) and the
``case_closed`` payload field they go into.
May import: the standard library and ``app.format`` (the steps in words).

INMSG documents L1 - V1 - R1 - R2 - V2 - L2 for every operated side (S1/S2 and R2
proximal/distal are optional; an R2 proximal value stands for R2). When a case is closed,
every one of them that the record does not hold for a planned side is listed, and the
person closing gives a reason for each, or "not done". The engine journals them in the
``case_closed`` entry:

    "missing_steps": [{"side": "R", "step": "V2", "reason": "second side postponed", "who": "ui"}, ...]

A step without an answer is journaled with ``reason`` null ("no reason given"): closing a
case is never refused for want of a reason (it also stops stimulation). The case document
shows these (``closeout``), and the report lists them on its first page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.format import STEP_WORDS

REQUIRED_STEPS = ("L1", "V1", "R1", "R2", "V2", "L2")
STANDS_FOR = {"R2": ("R2", "R2P")}  # a proximal R2 value documents R2
NOT_DONE = "not done"
NOT_EXAMINED = ("not_examined", "not_assessed", None, "")
MAX_REASON = 200
FIELD = "missing_steps"  # the case_closed payload field


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, Mapping) and "finding" in value:
        return value.get("finding") not in NOT_EXAMINED
    if isinstance(value, str):  # a bare laryngoscopy finding
        return value not in NOT_EXAMINED
    return True


def missing_steps(planned_sides: Iterable[str], recorded: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """The required steps of each planned side (in its order) that ``recorded`` lacks.

    ``recorded[side][step]`` is the step's value (any non-null value for V1..R2D; for
    L1/L2 a finding, or a mapping with ``finding``: "not examined" counts as missing).
    Returns ``[{"side", "step", "what"}]`` in operating order."""
    out = []
    for side in planned_sides:
        have = recorded.get(side) or {}
        for step in REQUIRED_STEPS:
            if any(_present(have.get(s)) for s in STANDS_FOR.get(step, (step,))):
                continue
            out.append({"side": side, "step": step, "what": STEP_WORDS[step]})
    return out


def missing_from_procedure(state: Mapping[str, Any]) -> list[dict[str, str]]:
    """``missing_steps`` of a ``Procedure.to_dict()`` (``plan``, ``steps``,
    ``laryngoscopy``) or of its ``summary()`` (``plan``, ``sides``)."""
    plan = (state.get("plan") or {}).get("sides") or []
    recorded: dict[str, dict[str, Any]] = {}
    for side in ("L", "R"):
        if "sides" in state:
            s = (state.get("sides") or {}).get(side) or {}
            steps, lar = s.get("steps") or {}, s.get("laryngoscopy") or {}
        else:
            steps = (state.get("steps") or {}).get(side) or {}
            lar = (state.get("laryngoscopy") or {}).get(side) or {}
        recorded[side] = {**steps, **lar}
    return missing_steps(plan, recorded)


def closeout_entries(missing: Iterable[Mapping[str, str]], reasons: Any, who: str | None = None
                     ) -> list[dict[str, Any]]:
    """The ``missing_steps`` to journal: each missing step with the reason given for it.

    ``reasons``: ``{"L": {"V2": "reason" | "not done"}, ...}`` (the ``case.close``
    argument) or None. Raises ``ValueError`` naming the side and step for a reason that is
    not text or too long, and for a reason given for a step that is not missing."""
    missing = list(missing)
    given: dict[tuple[str, str], str] = {}
    if reasons is not None:
        if not isinstance(reasons, Mapping):
            raise ValueError("reasons must be {side: {step: reason}}")
        for side, steps in reasons.items():
            if not isinstance(steps, Mapping):
                raise ValueError(f"reasons for side {side!r} must be {{step: reason}}")
            for step, reason in steps.items():
                if not isinstance(reason, str) or not reason.strip():
                    raise ValueError(f"reason for {step} {side}: give text, or {NOT_DONE!r}")
                if len(reason) > MAX_REASON:
                    raise ValueError(f"reason for {step} {side}: {len(reason)} characters, at most {MAX_REASON}")
                given[(str(side), str(step))] = " ".join(reason.split())
    wanted = {(m["side"], m["step"]) for m in missing}
    extra = sorted(set(given) - wanted)
    if extra:
        side, step = extra[0]
        raise ValueError(f"reason for {step} {side}: that step is not missing")
    return [{"side": m["side"], "step": m["step"], "reason": given.get((m["side"], m["step"])), "who": who}
            for m in missing]
