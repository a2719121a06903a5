"""Scenarios: a scripted case as a data file (``config/scenarios/NAME.toml``).

Owns: the scenario file format (documented in ``config/scenarios/README.md``),
``load_scenario``, ``list_scenarios`` and the ``Scenario`` it returns.
May import: the standard library, ``firmware_bridge.vocabulary`` (sides, sites, steps),
``firmware_bridge.fields`` (the [expect] checks) and ``firmware_bridge.sim.physiology`` /
``firmware_bridge.sim.board`` (to check world-event names and arguments).

A scenario has three time lines, all in seconds from the start of the case:

- ``world_events``: what happens in the patient and around the board (probe contact,
  traction, cautery, ...): virtual-board controls, applied by ``VirtualBoard`` itself at
  their time;
- ``operator_actions``: what the surgeon and nurse do at the monitor, as local-API
  commands (``cmd`` and its arguments, see ``app/api/API.md``); the board never applies
  them: the engine's headless driver (``lnm simulate``) sends them at their time;
- ``expect``: the events and alarms the case must produce (with time windows) and those
  it must not, and the step results it must record, for end-to-end tests.

Every problem is reported as ``ScenarioError`` naming the file and, where it can, the
entry (``[[world]] #3 (t=12)``) and the field.
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
from dataclasses import dataclass, field
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any
from collections.abc import Callable, Mapping

from firmware_bridge.fields import Field, FieldError
from firmware_bridge.sim.physiology import PatientParams, PhysiologyError
from firmware_bridge.vocabulary import NERVES, SIDES, STEPS


def _shipped_scenario_dir() -> Path:
    """``config/scenarios`` beside the source tree, or installed under ``share/lnm``."""
    source_tree = Path(__file__).resolve().parents[2] / "config" / "scenarios"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "lnm" / "config" / "scenarios"


SCENARIO_DIR = _shipped_scenario_dir()

# What ``expect`` may name: the rule events of app.model.EventKind, the alarm kinds of
# app.alarms.catalog.AlarmKind, the engine's staging recommendation, and what the
# free-running EMG analysis reports.
EXPECT_KINDS = frozenset({
    "loss_of_signal", "combined_event", "amplitude_decrease", "signal_recovered", "no_current",
    "nonrecurrent_nerve_suspected", "poor_baseline", "baseline_set",
    "loss_of_signal_continued", "neuromuscular_blockade_suspected",
    "board_link_lost", "board_fault", "lead_off", "storage_problem", "audio_failure", "engine_fault",
    "staging_recommended", "spontaneous_activity", "cautery",
})
_CMD = re.compile(r"[a-z_]+(\.[a-z_]+)*")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ScenarioError(ValueError):
    """A scenario file could not be used; the message names the file and the problem."""


@dataclass(frozen=True)
class WorldEvent:
    """Something that happens in the patient or around the board at ``t`` (a virtual-board control)."""

    t: float
    command: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class OperatorAction:
    """A local-API command the surgeon or nurse gives at ``t`` (sent by ``lnm simulate``)."""

    t: float
    cmd: str  # local-API command, e.g. "probe.site"
    args: Mapping[str, Any]


@dataclass(frozen=True)
class ExpectedEvent:
    """An event or alarm the case must produce: its kind, where, when, and how often."""

    kind: str
    side: str | None = None
    site: str | None = None
    after_s: float = 0.0
    before_s: float = math.inf
    min_count: int = 1
    max_count: int | None = None

    def matches(self, kind: str, t_s: float, side: str | None = None, site: str | None = None) -> bool:
        return (kind == self.kind and (self.side is None or side == self.side)
                and (self.site is None or site == self.site) and self.after_s <= t_s <= self.before_s)


@dataclass(frozen=True)
class ForbiddenEvent:
    """An event or alarm the case must not produce (in a time window)."""

    kind: str
    side: str | None = None
    site: str | None = None
    after_s: float = 0.0
    before_s: float = math.inf

    def matches(self, kind: str, t_s: float, side: str | None = None, site: str | None = None) -> bool:
        return (kind == self.kind and (self.side is None or side == self.side)
                and (self.site is None or site == self.site) and self.after_s <= t_s <= self.before_s)


@dataclass(frozen=True)
class ExpectedStep:
    """An INMSG step result the case must record on a side (with or without a response)."""

    step: str
    side: str
    response: bool = True
    min_amplitude_uV: float | None = None
    max_amplitude_uV: float | None = None


@dataclass(frozen=True)
class Expect:
    """What a scripted case must and must not produce: events, absences, step results."""

    events: tuple[ExpectedEvent, ...] = ()
    absent: tuple[ForbiddenEvent, ...] = ()
    steps: tuple[ExpectedStep, ...] = ()

    def check_events(self, events: list[tuple[str, float, str | None, str | None]]) -> list[str]:
        """Problems with ``events`` (kind, t_s, side, site) against this expectation ([] = fine)."""
        problems = []
        for e in self.events:
            n = sum(1 for ev in events if e.matches(*ev))
            if n < e.min_count:
                problems.append(f"expected {e.min_count} x {_describe(e)}, got {n}")
            if e.max_count is not None and n > e.max_count:
                problems.append(f"expected at most {e.max_count} x {_describe(e)}, got {n}")
        for f in self.absent:
            hits = [ev for ev in events if f.matches(*ev)]
            if hits:
                problems.append(f"{_describe(f)} must not happen, but did at t={hits[0][1]:.2f} s")
        return problems


def _describe(e: ExpectedEvent | ForbiddenEvent) -> str:
    where = "-".join(x for x in (e.site, e.side) if x)
    window = f" in {e.after_s:g}-{e.before_s:g} s" if (e.after_s > 0 or e.before_s < math.inf) else ""
    return f"{e.kind}{' ' + where if where else ''}{window}"


@dataclass(frozen=True)
class Scenario:
    """A scripted case: its patient, world events, operator actions and expectations."""

    name: str
    path: Path
    title: str
    description: str
    seed: int
    duration_s: float
    patient: Mapping[str, Any] = field(default_factory=dict)
    world_events: tuple[WorldEvent, ...] = ()
    operator_actions: tuple[OperatorAction, ...] = ()
    expect: Expect = field(default_factory=Expect)


def list_scenarios(directory: Path | None = None) -> list[str]:
    """Names of the scenarios shipped in ``config/scenarios``."""
    d = directory or SCENARIO_DIR
    return sorted(p.stem for p in d.glob("*.toml"))


def resolve(name_or_path: str | Path) -> Path:
    """The file for a scenario name (``standard_bilateral``) or a path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.parent != Path("."):
        return p
    if not _NAME.fullmatch(str(name_or_path)):
        raise ScenarioError(f"scenario name {str(name_or_path)!r} is not valid (letters, digits, _ and - only)")
    return SCENARIO_DIR / f"{name_or_path}.toml"


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and check a scenario. Raises ``ScenarioError`` naming the file and the problem."""
    path = resolve(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        known = ", ".join(list_scenarios()) or "none"
        raise ScenarioError(f"{path}: no such scenario file (shipped scenarios: {known})") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from None
    return parse_scenario(data, path)


def parse_scenario(data: Mapping[str, Any], path: Path) -> Scenario:
    """Check a scenario's TOML data (read from ``path``); ``ScenarioError`` names the problem."""
    def fail(msg: str) -> ScenarioError:
        return ScenarioError(f"{path}: {msg}")

    unknown = set(data) - {"scenario", "patient", "world", "operator", "expect"}
    if unknown:
        raise fail(f"unknown section {sorted(unknown)[0]!r}; allowed: scenario, patient, world, operator, expect")
    head = data.get("scenario")
    if not isinstance(head, dict):
        raise fail("missing [scenario] table (title, seed, duration_s)")
    unknown = set(head) - {"title", "description", "seed", "duration_s"}
    if unknown:
        raise fail(f"[scenario]: unknown key {sorted(unknown)[0]!r}; allowed: title, description, seed, duration_s")
    title = head.get("title", path.stem)
    description = head.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        raise fail("[scenario]: title and description must be text")
    seed = head.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise fail(f"[scenario]: seed must be a non-negative integer (got {seed!r})")
    duration = head.get("duration_s")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 86400:
        raise fail(f"[scenario]: duration_s must be a number of seconds in 0-86400 (got {duration!r})")
    duration = float(duration)

    patient = data.get("patient", {})
    if not isinstance(patient, dict):
        raise fail("[patient] must be a table of parameter overrides")
    try:
        PatientParams.draw(seed, patient)
    except PhysiologyError as exc:
        raise fail(f"[patient]: {exc}") from None

    world = _timeline(data.get("world", []), "world", "do", duration, fail)
    world_events = tuple(WorldEvent(t, cmd, MappingProxyType(args)) for t, cmd, args in world)
    _check_world(world_events, fail)
    ops = _timeline(data.get("operator", []), "operator", "cmd", duration, fail)
    for i, (t, cmd, _args) in enumerate(ops):
        if not _CMD.fullmatch(cmd):
            raise fail(f"[[operator]] #{i + 1} (t={t:g}): cmd {cmd!r} is not a local-API command name")
        if cmd == "sim.control":
            raise fail(f"[[operator]] #{i + 1} (t={t:g}): virtual-board controls belong in [[world]], not [[operator]]")
    operator_actions = tuple(OperatorAction(t, cmd, MappingProxyType(args)) for t, cmd, args in ops)
    expect = _expect(data.get("expect", {}), fail)
    return Scenario(
        name=path.stem, path=path, title=title, description=description, seed=seed, duration_s=duration,
        patient=MappingProxyType(dict(patient)), world_events=world_events,
        operator_actions=operator_actions, expect=expect,
    )


def _timeline(entries: Any, section: str, key: str, duration: float, fail) -> list[tuple[float, str, dict]]:
    if not isinstance(entries, list):
        raise fail(f"{section} entries must be written as [[{section}]] tables")
    out = []
    for i, e in enumerate(entries):
        where = f"[[{section}]] #{i + 1}"
        if not isinstance(e, dict):
            raise fail(f"{where} must be a table")
        t = e.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise fail(f"{where}: t must be a number of seconds (got {t!r})")
        if not 0 <= t <= duration:
            raise fail(f"{where}: t={t:g} outside the scenario (0-{duration:g} s)")
        cmd = e.get(key)
        if not isinstance(cmd, str) or not cmd:
            raise fail(f"{where} (t={t:g}): missing {key!r} (the {'control' if key == 'do' else 'command'} name)")
        args = {k: v for k, v in e.items() if k not in ("t", key)}
        out.append((float(t), cmd, args))
    # stable sort: entries at the same time keep the file's order
    return sorted(out, key=lambda x: x[0])


def _check_world(events: tuple[WorldEvent, ...], fail) -> None:
    from firmware_bridge.sim.board import VirtualBoard  # noqa: PLC0415 - avoids an import cycle

    table = VirtualBoard.control_table_signatures()
    for i, ev in enumerate(events):
        where = f"[[world]] #{i + 1} (t={ev.t:g}, do={ev.command!r})"
        params = table.get(ev.command)
        if params is None:
            raise fail(f"{where}: unknown control; known: {', '.join(sorted(table))}")
        for a in ev.args:
            if a not in params:
                raise fail(f"{where}: unknown argument {a!r}; accepted: {', '.join(params) or 'none'}")
        for n, p in params.items():
            if p.default is inspect.Parameter.empty and n not in ev.args:
                raise fail(f"{where}: missing argument {n!r}")


# The fields of [expect] (with ``min_count``/``max_count`` for events, and the step fields)
_WHERE = {
    "side": Field("side", "enum", choices=SIDES, nullable=True, accept="exact", words="L or R"),
    "site": Field("site", "enum", choices=NERVES, nullable=True, accept="exact", words="VAGUS, RLN or EBSLN"),
    "after_s": Field("after_s", "number", "s", 0.0, accept="exact", words="a number of seconds >= 0"),
    "before_s": Field("before_s", "number", "s", 0.0, accept="exact", words="a number of seconds >= 0"),
}
_MIN_COUNT = Field("min_count", "int", minimum=0, accept="exact", words="an integer >= 0")
_STEP = {
    "step": Field("step", "enum", choices=STEPS, accept="exact", words="one of " + ", ".join(STEPS)),
    "side": Field("side", "enum", choices=SIDES, accept="exact", words="L or R"),
    "response": Field("response", "bool", accept="exact"),
    "min_amplitude_uV": Field("min_amplitude_uV", "number", "uV", 0.0, nullable=True, accept="exact",
                              words="a number >= 0"),
    "max_amplitude_uV": Field("max_amplitude_uV", "number", "uV", 0.0, nullable=True, accept="exact",
                              words="a number >= 0"),
}


def _value(spec: Field, entry: Mapping[str, Any], where: str, fail: Callable[[str], ScenarioError],
           default: Any = None) -> Any:
    """``entry[spec.name]`` (``default`` when absent) checked against ``spec``."""
    value = entry.get(spec.name, default)
    try:
        return spec.check(value)
    except FieldError:
        raise fail(f"{where}: {spec.name} must be {spec.describe()} (got {value!r})") from None


def _table(e: Any, where: str, allowed: set[str], fail: Callable[[str], ScenarioError]) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise fail(f"{where} must be a table")
    bad = set(e) - allowed
    if bad:
        raise fail(f"{where}: unknown key {sorted(bad)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return e


def _entries(data: Mapping[str, Any], section: str, fail: Callable[[str], ScenarioError]) -> list[Any]:
    entries = data.get(section, [])
    if not isinstance(entries, list):
        raise fail(f"expect.{section} entries must be written as [[expect.{section}]] tables")
    return entries


def _expected_event(e: Any, where: str, counted: bool,
                    fail: Callable[[str], ScenarioError]) -> ExpectedEvent | ForbiddenEvent:
    allowed = {"kind", *_WHERE} | ({"min_count", "max_count"} if counted else set())
    e = _table(e, where, allowed, fail)
    kind = e.get("kind")
    if kind not in EXPECT_KINDS:
        raise fail(f"{where}: kind {kind!r} is not known; one of {', '.join(sorted(EXPECT_KINDS))}")
    side = _value(_WHERE["side"], e, where, fail)
    site = _value(_WHERE["site"], e, where, fail)
    after = float(_value(_WHERE["after_s"], e, where, fail, 0.0))
    before = float(_value(_WHERE["before_s"], e, where, fail)) if "before_s" in e else math.inf
    if before < after:
        raise fail(f"{where}: before_s={before:g} is earlier than after_s={after:g}")
    if not counted:
        return ForbiddenEvent(kind, side, site, after, before)
    lo = _value(_MIN_COUNT, e, where, fail, 1)
    max_count = Field("max_count", "int", minimum=lo, nullable=True, accept="exact", words="an integer >= min_count")
    hi = _value(max_count, e, where, fail)
    return ExpectedEvent(kind, side, site, after, before, lo, hi)


def _expect(data: Any, fail: Callable[[str], ScenarioError]) -> Expect:
    if not isinstance(data, dict):
        raise fail("[expect] must be a table")
    unknown = set(data) - {"event", "absent", "step"}
    if unknown:
        raise fail(f"[expect]: unknown key {sorted(unknown)[0]!r}; allowed: event, absent, step")
    events = [_expected_event(e, f"[[expect.event]] #{i + 1}", True, fail)
              for i, e in enumerate(_entries(data, "event", fail))]
    absent = [_expected_event(e, f"[[expect.absent]] #{i + 1}", False, fail)
              for i, e in enumerate(_entries(data, "absent", fail))]
    steps = []
    for i, e in enumerate(_entries(data, "step", fail)):
        where = f"[[expect.step]] #{i + 1}"
        e = _table(e, where, set(_STEP), fail)
        v = {name: _value(spec, e, where, fail, True if name == "response" else None) for name, spec in _STEP.items()}
        steps.append(ExpectedStep(v["step"], v["side"], v["response"],
                                  None if v["min_amplitude_uV"] is None else float(v["min_amplitude_uV"]),
                                  None if v["max_amplitude_uV"] is None else float(v["max_amplitude_uV"])))
    return Expect(tuple(e for e in events if isinstance(e, ExpectedEvent)),
                  tuple(e for e in absent if isinstance(e, ForbiddenEvent)), tuple(steps))
