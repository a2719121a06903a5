"""``lnm simulate --scenario NAME``: a whole scripted case, headless, through the real protocol.

Owns: the ``simulate`` command, ``run_scenario`` (the scenario driver the end-to-end
tests use too) and the case summary.
May import: the standard library, ``app.settings``, ``app.engine`` (stepped system,
outputs, documents), ``app.record`` and ``firmware_bridge.sim.scenario``.

One thread, one ``ManualClock`` advanced in small steps (``SteppedSystem``): the virtual
board plays the scenario's world events (probe contact, traction, cautery, ...), every
message crosses the wire protocol both ways, the engine measures, applies the rules and
raises alarms into a capturing audio backend, the scenario's operator actions go through
the same command handler as the local API at their times, and the case is journaled.
Deterministic: the same scenario and seed give the same case. ``--speed`` 0 or ``max``
(default) runs as fast as possible; a number paces it to that many times real time.

Exit status: 0 the case ran to its end, was closed and its documentation written, and
the scenario's expectations held; 1 an expectation failed or documentation could not be
written (the summary says which); 2 unknown scenario (the shipped ones are listed), bad
configuration or output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from app.engine.core import EngineOptions


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("--scenario", metavar="NAME", help="scenario name (config/scenarios/NAME.toml) or file")
    parser.add_argument("--speed", default="max", metavar="X",
                        help="times real time (e.g. 1, 10); 0 or max: as fast as possible (default)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the journal and the documentation (default ./lnm-simulate-NAME)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--config", type=Path, default=None, metavar="DIR", help="configuration directory")
    parser.add_argument("--profile", default=None, metavar="NAME", help="surgeon profile")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@dataclass
class SimulationResult:
    """What a scenario run gave: the case, its events, alarms and steps, and what went wrong."""

    scenario: str
    case_id: str | None
    duration_s: float
    wall_s: float
    closed: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    documents: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    system: Any = None

    @property
    def ok(self) -> bool:
        return self.closed and not self.problems

    def matched_events(self) -> list[tuple[str, float, str | None, str | None]]:
        """(kind, scenario time, side, site) in the vocabulary of scenario expectations."""
        out = []
        for ev in self.events:
            cat, kind = ev.get("category"), ev.get("kind")
            t = ev.get("scenario_t_s", ev["t_s"])
            if cat == "rule":
                out.append((kind, t, ev.get("side"), ev.get("site")))
            elif cat == "alarm" and kind in ("raised", "re_raised"):
                d = ev.get("detail") or {}
                out.append((d.get("kind"), t, ev.get("side"), ev.get("site")))
            elif cat == "emg" and kind == "irritation":
                out.append(("spontaneous_activity", t, ev.get("side"), None))
            elif cat == "emg" and kind == "cautery_start":
                out.append(("cautery", t, None, None))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "case_id": self.case_id, "duration_s": self.duration_s,
                "wall_s": round(self.wall_s, 3), "closed": self.closed, "ok": self.ok,
                "alarms": self.alarms, "steps": self.steps, "problems": self.problems, "refused": self.refused,
                "documents": self.documents, "counters": self.counters,
                "events": [e for e in self.events
                           if e.get("category") in ("rule", "emg", "technical", "case", "procedure")]}


def run_scenario(
    scenario: Any,
    settings: Any,
    *,
    journal: Any = None,
    out_dir: Path | None = None,
    speed: float = 0.0,
    seed: int | None = None,
    step_s: float = 0.005,
    options: EngineOptions | None = None,
    progress: Callable[[float, float], None] | None = None,
    write_documents: bool = True,
    keep_system: bool = False,
    settings_loader: Callable[[Any, str | None], Any] | None = None,
    until_s: float | None = None,
    on_monitor: Callable[[Any], None] | None = None,
) -> SimulationResult:
    """Play ``scenario`` to its end (or ``until_s``); see the module docstring."""
    from app.engine.outputs import make_outputs
    from app.engine.stepped import SteppedSystem

    events: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}

    def sink(stream: str, msg: Mapping[str, Any], sticky: bool) -> None:
        if stream == "events":
            ev = dict(msg)
            sysm = holder.get("system")
            if sysm is not None:  # scenario time: the scenario's expectations are written in it
                ev["scenario_t_s"] = round(ev["t_s"] + sysm.monitor.case_origin - holder["start"], 4)
            events.append(ev)

    system = SteppedSystem(settings, scenario=scenario, seed=seed, journal=journal, options=options,
                           step_s=step_s, sink=sink, wants=lambda s: s == "events",
                           monitor_kwargs={"settings_loader": settings_loader})
    holder.update(system=system, start=system.clock.now())
    mon = system.monitor
    mon.outputs = make_outputs(mon.alarms, system.clock, mon.settings, audio="capture", gpio="sim",
                               on_footswitch=mon.footswitch)
    if on_monitor is not None:
        on_monitor(mon)
    refused: list[str] = []
    duration = float(scenario.duration_s if until_s is None else min(until_s, scenario.duration_s))
    wall0 = time.perf_counter()
    _play(system, scenario, duration, step_s, speed, progress, refused)
    closed = _close(system, scenario, until_s, refused)
    case_id = mon.case_id or mon.last_case_id
    result = SimulationResult(
        scenario=scenario.name, case_id=case_id, duration_s=duration, wall_s=time.perf_counter() - wall0,
        closed=closed, events=events, refused=refused, counters=dict(mon.counters),
    )
    result.alarms = [
        {"t_s": e["t_s"], "alarm": e["detail"].get("alarm"), "kind": e["detail"].get("kind"),
         "priority": e.get("priority"), "side": e.get("side"), "site": e.get("site")}
        for e in events if e.get("category") == "alarm" and e.get("kind") in ("raised", "re_raised")
    ]
    if mon.case is not None:
        summary = mon.summary()["procedure"]
    else:  # closed: what its closing entry holds (a closed case's state is gone)
        summary = (mon.last_case_summary or {}).get("procedure") or mon.rules.procedure.summary(mon.settings)
    result.steps = {side: summary["sides"][side]["steps"] for side in ("L", "R")}
    result.problems = list(scenario.expect.check_events(result.matched_events())) + [f"refused: {r}" for r in refused]
    result.problems += _step_problems(scenario, result.steps)
    if write_documents and out_dir is not None and case_id is not None and closed:
        _write_documents(result, journal, out_dir, case_id)
    if keep_system:
        result.system = system
    return result


def _play(system: Any, scenario: Any, duration: float, step_s: float, speed: float,
          progress: Callable[[float, float], None] | None, refused: list[str]) -> None:
    """Step the system to ``duration``, sending each operator action at its time."""
    actions = list(scenario.operator_actions)
    start_clock = system.clock.now()
    if not any(a.cmd == "case.start" for a in actions):
        reply = system.command("case.start", client="simulate", patient_id=_pid(scenario.name),
                               procedure=scenario.title[:120])
        if not reply["ok"]:
            refused.append(f"t=0 case.start: {reply['error']['message']}")
    wall0 = time.perf_counter()
    next_progress = wall0
    i = 0
    while True:
        t = system.clock.now() - start_clock
        while i < len(actions) and actions[i].t <= t + 1e-9:
            a = actions[i]
            i += 1
            reply = system.command(a.cmd, client="scenario", **dict(a.args))
            if not reply["ok"]:
                refused.append(f"t={a.t:g} {a.cmd}: {reply['error']['message']}")
        if t >= duration - 1e-9:
            break
        nxt = actions[i].t if i < len(actions) else duration
        system.step(max(1e-6, min(step_s, nxt - t, duration - t)))
        if speed > 0:
            ahead = (system.clock.now() - start_clock) / speed - (time.perf_counter() - wall0)
            if ahead > 0.002:
                time.sleep(ahead)
        if progress is not None and time.perf_counter() >= next_progress:
            next_progress = time.perf_counter() + 0.5
            progress(system.clock.now() - start_clock, duration)


def _close(system: Any, scenario: Any, until_s: float | None, refused: list[str]) -> bool:
    """Close the case at the scenario's end (unless it closed itself); True when it is closed."""
    mon = system.monitor
    if until_s is not None:
        return False
    if mon.case_id is not None:
        reply = system.command("case.close", client="simulate", note=f"end of scenario {scenario.name}")
        if not reply["ok"]:
            refused.append(f"case.close: {reply['error']['message']}")
        return bool(reply["ok"])
    return mon.last_case_id is not None  # the scenario closed the case itself


def _step_problems(scenario: Any, steps: dict[str, Any]) -> list[str]:
    """The scenario's expected steps that were not recorded as expected."""
    problems = []
    for exp in scenario.expect.steps:
        v = steps.get(exp.side, {}).get(exp.step)
        if v is None:
            problems.append(f"step {exp.step} {exp.side} was not recorded")
            continue
        if bool(v.get("response")) != exp.response:
            problems.append(f"step {exp.step} {exp.side}: response {v.get('response')}, expected {exp.response}")
        amp = v.get("amplitude_uV")
        if exp.min_amplitude_uV is not None and (amp is None or amp < exp.min_amplitude_uV):
            problems.append(f"step {exp.step} {exp.side}: {amp} uV below {exp.min_amplitude_uV} uV")
        if exp.max_amplitude_uV is not None and amp is not None and amp > exp.max_amplitude_uV:
            problems.append(f"step {exp.step} {exp.side}: {amp} uV above {exp.max_amplitude_uV} uV")
    return problems


def _write_documents(result: SimulationResult, journal: Any, out_dir: Path, case_id: str) -> None:
    from app.api.protocol import ApiError
    from app.engine.documents import Documents

    try:
        docs = Documents(journal, out_dir).write(case_id, out_dir)
    except ApiError as exc:
        result.problems.append(f"documentation: {exc.message}")
        return
    result.documents = {k: v for k, v in docs.items() if k in ("pdf", "json", "edf")}
    missing = [k for k in ("pdf", "json", "edf") if k not in result.documents]
    if missing:
        result.problems.append("documentation not written: " + ", ".join(missing) + " ("
                               + "; ".join(docs.get("messages", [])) + ")")


def _pid(name: str) -> str:
    import re

    pid = re.sub(r"[^A-Za-z0-9_.-]", "-", f"SIM-{name}")[:32]
    return pid if pid[0].isalnum() else "SIM"


def format_summary(res: SimulationResult) -> str:
    """The summary the command prints: steps, alarms, events, documents, problems."""
    lines = [f"scenario {res.scenario}: {res.duration_s:.0f} s of case in {res.wall_s:.1f} s "
             f"({res.duration_s / max(res.wall_s, 1e-9):.0f}x real time), case {res.case_id}"
             + ("" if res.closed else " (NOT closed)")]
    c = res.counters
    lines.append(f"stimuli {c.get('stimuli', 0)}, journal entries {c.get('journal_entries', 0)}, "
                 f"EMG blocks {c.get('emg_blocks', 0)}")
    lines.append("steps:")
    for side in ("L", "R"):
        parts = []
        for name, v in sorted(res.steps.get(side, {}).items(),
                              key=lambda kv: ("L1 V1 S1 R1 R2 R2P R2D S2 V2 L2".split().index(kv[0])
                                              if kv[0] in "L1 V1 S1 R1 R2 R2P R2D S2 V2 L2".split() else 99)):
            amp, lat = v.get("amplitude_uV"), v.get("latency_ms")
            parts.append(f"{name} " + (f"{amp:.0f} uV" if amp is not None else "--")
                         + (f" {lat:.2f} ms" if lat is not None else "")
                         + ("" if v.get("response") else " (no response)")
                         + (f" @{v.get('set_mA'):.1f} mA" if v.get("set_mA") is not None else ""))
        lines.append(f"  {'left ' if side == 'L' else 'right'}: " + ("; ".join(parts) if parts else "none"))
    lines.append("alarms:" if res.alarms else "alarms: none")
    for a in res.alarms:
        lines.append(f"  {a['t_s']:8.2f} s  {str(a['priority']).upper():<6} {a['alarm']}")
    rule = [e for e in res.events if e.get("category") in ("rule", "emg", "procedure")
            or (e.get("category") == "technical" and e.get("priority") in ("high", "medium"))]
    lines.append("events:" if rule else "events: none")
    for e in rule[:200]:
        lines.append(f"  {e['t_s']:8.2f} s  {e.get('kind'):<28} {str(e.get('message'))[:110]}")
    if len(rule) > 200:
        lines.append(f"  ... {len(rule) - 200} more")
    if res.documents:
        lines.append("documentation: " + ", ".join(f"{k} {v}" for k, v in sorted(res.documents.items())))
    if res.problems:
        lines.append("PROBLEMS:")
        lines.extend(f"  {p}" for p in res.problems)
    else:
        lines.append("scenario expectations: all met")
    return "\n".join(lines)


def _list_scenarios() -> int:
    from firmware_bridge.sim.scenario import ScenarioError, list_scenarios, load_scenario

    for name in list_scenarios():
        try:
            sc = load_scenario(name)
            print(f"{name:<28} {sc.duration_s:7.0f} s  {sc.title}")
        except ScenarioError as exc:
            print(f"{name:<28} (broken: {exc})")
    return 0


def _speed(text: str) -> float | None:
    """``--speed``: times real time, 0 for as fast as possible; None when not a number >= 0."""
    try:
        speed = 0.0 if str(text).lower() in ("0", "max", "0.0") else float(text)
    except ValueError:
        return None
    return speed if math.isfinite(speed) and speed >= 0 else None


def run(args: argparse.Namespace) -> int:
    """``lnm simulate``; the exit status as the module docstring says."""
    from app import settings as settings_mod
    from app.record.journal import Journal, StorageError
    from firmware_bridge.sim.scenario import ScenarioError, list_scenarios, load_scenario

    if args.list:
        return _list_scenarios()
    if not args.scenario:
        print("lnm simulate: give --scenario NAME; shipped scenarios: " + ", ".join(list_scenarios()),
              file=sys.stderr)
        return 2
    speed = _speed(args.speed)
    if speed is None:
        print(f"lnm simulate: --speed {args.speed!r}: give a positive number of times real time, or max",
              file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"lnm simulate: {exc}", file=sys.stderr)
        if "no such scenario" not in str(exc):
            print("shipped scenarios: " + ", ".join(list_scenarios()), file=sys.stderr)
        return 2
    try:
        st = settings_mod.load(args.config, args.profile)
    except settings_mod.SettingError as exc:
        print(f"lnm simulate: configuration refused: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(f"lnm-simulate-{scenario.name}")
    holder: dict[str, Any] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        journal = Journal(out / "journal.db", on_status=lambda st: (
            holder["mon"].storage_status(st.ok, st.message) if "mon" in holder else None))
    except (OSError, StorageError) as exc:
        print(f"lnm simulate: output folder {out}: {exc}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(t: float, total: float) -> None:
        if args.quiet:
            return
        pct = 100.0 * t / total if total else 100.0
        text = f"simulating {scenario.name}: {t:7.1f} / {total:.0f} s ({pct:3.0f} %)"
        print(("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    try:
        res = run_scenario(scenario, st, journal=journal, out_dir=out, speed=speed, seed=args.seed,
                           progress=progress, settings_loader=lambda d, p: settings_mod.load(d or args.config, p),
                           on_monitor=lambda m: holder.__setitem__("mon", m))
    finally:
        journal.close()
    if not args.quiet and tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        print(format_summary(res))
    if not res.closed:
        print(f"lnm simulate: the case of {scenario.name} did not complete", file=sys.stderr)
        return 1
    if res.problems:
        print(f"lnm simulate: {len(res.problems)} problem(s) in scenario {scenario.name} (see above)", file=sys.stderr)
        return 1
    return 0
