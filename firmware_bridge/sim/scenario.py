"""Scenarios: a scripted case as a data file (``config/scenarios/NAME.toml``).

Owns: the scenario file format (documented in ``config/scenarios/README.md``),
``load_scenario``, ``list_scenarios`` and the ``Scenario`` it returns.
May import: the standard library and ``firmware_bridge.sim.physiology`` /
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
from collections.abc import Mapping
from typing import Any

from firmware_bridge.sim.physiology import PatientParams, PhysiologyError

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
    "board_link_lost", "board_fault", "lead_off", "storage_problem", "config_problem", "audio_failure",
    "engine_fault",
    "staging_recommended", "spontaneous_activity", "cautery",
})
STEPS = ("V1", "S1", "R1", "R2", "S2", "V2", "R2P", "R2D")
_CMD = re.compile(r"[a-z_]+(\.[a-z_]+)*")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ScenarioError(ValueError):
    """A scenario file could not be used; the message names the file and the problem."""


@dataclass(frozen=True)
class WorldEvent:
    """A change of the virtual patient or board at time ``t``."""

    t: float
    command: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class OperatorAction:
    """A local-API command the scripted operator sends at time ``t``."""

    t: float
    cmd: str  # local-API command, e.g. "probe.site"
    args: Mapping[str, Any]


@dataclass(frozen=True)
class ExpectedEvent:
    """An event (rule event or alarm) the case must show, with its window and counts."""

    kind: str
    side: str | None = None
    site: str | None = None
    after_s: float = 0.0
    before_s: float = math.inf
    min_count: int = 1
    max_count: int | None = None

    def matches(self, kind: str, t_s: float, side: str | None = None, site: str | None = None) -> bool:
        """The event ``kind`` at ``t_s`` (on ``side``/``site``) is this one."""
        return (kind == self.kind and (self.side is None or side == self.side)
                and (self.site is None or site == self.site) and self.after_s <= t_s <= self.before_s)


@dataclass(frozen=True)
class ForbiddenEvent:
    """An event the case must not show within its window."""

    kind: str
    side: str | None = None
    site: str | None = None
    after_s: float = 0.0
    before_s: float = math.inf

    def matches(self, kind: str, t_s: float, side: str | None = None, site: str | None = None) -> bool:
        """The event ``kind`` at ``t_s`` (on ``side``/``site``) is this one."""
        return (kind == self.kind and (self.side is None or side == self.side)
                and (self.site is None or site == self.site) and self.after_s <= t_s <= self.before_s)


@dataclass(frozen=True)
class ExpectedStep:
    """A procedure step the case must record, with its response and amplitude range."""

    step: str
    side: str
    response: bool = True
    min_amplitude_uV: float | None = None
    max_amplitude_uV: float | None = None


@dataclass(frozen=True)
class Expect:
    """Everything a scenario expects of the case."""

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
    """One scripted case: the patient, the world's events, the operator's actions, the expectations."""

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
    """A scenario from its parsed TOML; ``ScenarioError`` names the file and the problem."""
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


def _expected_event(section: str, where: str, e: Any, fail) -> ExpectedEvent | ForbiddenEvent:
    """One ``[[expect.event]]`` or ``[[expect.absent]]`` table, checked."""
    allowed = {"kind", "side", "site", "after_s", "before_s"} | (
        {"min_count", "max_count"} if section == "event" else set())
    if not isinstance(e, dict):
        raise fail(f"{where} must be a table")
    bad = set(e) - allowed
    if bad:
        raise fail(f"{where}: unknown key {sorted(bad)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    kind = e.get("kind")
    if kind not in EXPECT_KINDS:
        raise fail(f"{where}: kind {kind!r} is not known; one of {', '.join(sorted(EXPECT_KINDS))}")
    side = e.get("side")
    if side not in (None, "L", "R"):
        raise fail(f"{where}: side must be L or R (got {side!r})")
    site = e.get("site")
    if site not in (None, "VAGUS", "RLN", "EBSLN"):
        raise fail(f"{where}: site must be VAGUS, RLN or EBSLN (got {site!r})")
    after = e.get("after_s", 0.0)
    before = e.get("before_s", math.inf)
    for name, v in (("after_s", after), ("before_s", before)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise fail(f"{where}: {name} must be a number of seconds >= 0 (got {v!r})")
    if before < after:
        raise fail(f"{where}: before_s={before:g} is earlier than after_s={after:g}")
    if section != "event":
        return ForbiddenEvent(kind, side, site, float(after), float(before))
    lo, hi = e.get("min_count", 1), e.get("max_count")
    if isinstance(lo, bool) or not isinstance(lo, int) or lo < 0:
        raise fail(f"{where}: min_count must be an integer >= 0 (got {lo!r})")
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or hi < lo):
        raise fail(f"{where}: max_count must be an integer >= min_count (got {hi!r})")
    return ExpectedEvent(kind, side, site, float(after), float(before), lo, hi)


def _expect(data: Any, fail) -> Expect:
    if not isinstance(data, dict):
        raise fail("[expect] must be a table")
    unknown = set(data) - {"event", "absent", "step"}
    if unknown:
        raise fail(f"[expect]: unknown key {sorted(unknown)[0]!r}; allowed: event, absent, step")
    events, absent, steps = [], [], []
    for section, sink in (("event", events), ("absent", absent)):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise fail(f"expect.{section} entries must be written as [[expect.{section}]] tables")
        for i, e in enumerate(entries):
            sink.append(_expected_event(section, f"[[expect.{section}]] #{i + 1}", e, fail))
    entries = data.get("step", [])
    if not isinstance(entries, list):
        raise fail("expect.step entries must be written as [[expect.step]] tables")
    for i, e in enumerate(entries):
        where = f"[[expect.step]] #{i + 1}"
        if not isinstance(e, dict):
            raise fail(f"{where} must be a table")
        bad = set(e) - {"step", "side", "response", "min_amplitude_uV", "max_amplitude_uV"}
        if bad:
            raise fail(f"{where}: unknown key {sorted(bad)[0]!r}")
        if e.get("step") not in STEPS:
            raise fail(f"{where}: step must be one of {', '.join(STEPS)} (got {e.get('step')!r})")
        if e.get("side") not in ("L", "R"):
            raise fail(f"{where}: side must be L or R (got {e.get('side')!r})")
        response = e.get("response", True)
        if not isinstance(response, bool):
            raise fail(f"{where}: response must be true or false")
        amps = []
        for name in ("min_amplitude_uV", "max_amplitude_uV"):
            v = e.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise fail(f"{where}: {name} must be a number >= 0")
            amps.append(None if v is None else float(v))
        steps.append(ExpectedStep(e["step"], e["side"], response, amps[0], amps[1]))
    return Expect(tuple(events), tuple(absent), tuple(steps))
