"""Scenario files: every shipped scenario loads, its operator commands are valid local-API
requests, it runs to its end on the virtual board, and its world time line really
produces what its [expect] section promises (checked on the board's truth)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.alarms.catalog import AlarmKind
from app.api.protocol import parse_request
from app.model import EventKind
from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import (
    ConfigureAcquisition,
    EmgBlock,
    Hello,
    HostHeartbeat,
    Nack,
    Output,
    StimEpoch,
    StimMode,
    Stimulate,
)
from firmware_bridge.sim.board import VirtualBoard
from firmware_bridge.sim.scenario import (
    EXPECT_KINDS,
    Expect,
    ExpectedEvent,
    ForbiddenEvent,
    ScenarioError,
    list_scenarios,
    load_scenario,
)

NAMES = list_scenarios()
REQUIRED = {"standard_bilateral", "traction_recovery", "transection", "tube_displacement", "cautery_heavy",
            "no_current_probe", "nonrecurrent_right", "irritation"}


def test_the_required_scenarios_are_shipped():
    assert REQUIRED <= set(NAMES)


def test_expect_kinds_cover_rule_events_and_alarms():
    assert {k.value for k in EventKind} <= EXPECT_KINDS
    assert {k.value for k in AlarmKind} <= EXPECT_KINDS


@pytest.mark.parametrize("name", NAMES)
def test_scenario_loads_and_its_operator_commands_are_api_requests(name):
    s = load_scenario(name)
    assert s.name == name and s.title and s.description and 0 < s.duration_s <= 300
    assert s.world_events and s.operator_actions
    assert [e.t for e in s.world_events] == sorted(e.t for e in s.world_events)
    for a in s.operator_actions:
        parse_request({"cmd": a.cmd, **a.args})  # raises ApiError naming the problem
    cmds = [a.cmd for a in s.operator_actions]
    assert cmds[0] == "case.start" and cmds[-1] == "case.close"


# ----------------------------------------------------------------------------- running them


class Driver:
    """What the headless engine driver does with the stimulation part of the operator
    time line, reduced to Board API messages; the rest (tags, notes, ...) is ignored."""

    def __init__(self, name: str) -> None:
        self.scenario = load_scenario(name)
        self.clock = ManualClock()
        self.board = VirtualBoard(self.clock, scenario=self.scenario)
        self.dec = codec.Decoder()
        self.seq = 0
        self.settings = {"probe": dict(current_mA=1.0, rate_hz=4.0, pulse_width_us=100),
                         "aps": dict(current_mA=1.0, rate_hz=1.0, pulse_width_us=100)}
        self.on = {"probe": False, "aps": False}
        self.nacks: list[Nack] = []
        self.epochs: list[StimEpoch] = []
        self.blocks = 0
        self.tags: list[tuple[float, str, str]] = []  # (t, step, side)

    def send(self, m) -> None:
        self.board.receive(codec.encode(m, self.seq))
        self.seq += 1

    def _stim(self, output: str) -> None:
        st = self.settings[output]
        out = Output.PROBE if output == "probe" else Output.APS
        if self.on[output]:
            self.send(Stimulate(out, StimMode.CONTINUOUS, int(round(st["current_mA"] * 1000)),
                                st["pulse_width_us"], int(round(st["rate_hz"] * 1000))))
        else:
            self.send(Stimulate(out, StimMode.STOP))

    def act(self, cmd: str, args) -> None:
        if cmd == "stim.set":
            self.settings[args["output"]].update({k: v for k, v in args.items() if k in self.settings["probe"]})
            if self.on[args["output"]]:
                self._stim(args["output"])
        elif cmd == "stim.output":
            self.on[args["output"]] = bool(args["on"])
            self._stim(args["output"])
        elif cmd == "stim.single":
            st = self.settings["probe"]
            self.send(Stimulate(Output.PROBE, StimMode.SINGLE, int(st["current_mA"] * 1000), st["pulse_width_us"]))
        elif cmd == "step.tag":
            self.tags.append((self.clock.now(), args["step"], args["side"]))

    def run(self, step: float = 0.05) -> None:
        self.send(Hello())
        self.send(HostHeartbeat(0))
        self.send(ConfigureAcquisition(stream_block_samples=2000))
        actions = list(self.scenario.operator_actions)
        i = 0
        n = int(math.ceil(self.scenario.duration_s / step))
        for k in range(1, n + 1):
            self.clock.set(k * step)
            while i < len(actions) and actions[i].t <= self.clock.now():
                self.act(actions[i].cmd, actions[i].args)
                i += 1
            self.send(HostHeartbeat(k))
            for f in self.dec.feed(self.board.poll()):
                m = f.message
                if isinstance(m, Nack):
                    self.nacks.append(m)
                elif isinstance(m, StimEpoch):
                    self.epochs.append(m)
                elif isinstance(m, EmgBlock):
                    self.blocks += 1
        assert i == len(actions)

    def truth(self, output: Output | None = None, target: str | None = None, t0: float = 0.0, t1: float = math.inf):
        return [t for t in self.board.truth
                if (output is None or t.output == output) and (target is None or t.target == target) and t0 <= t.t < t1]


@pytest.fixture(scope="module")
def runs() -> dict[str, Driver]:
    return {}


def run(runs: dict, name: str) -> Driver:
    if name not in runs:
        d = Driver(name)
        d.run()
        runs[name] = d
    return runs[name]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_runs_to_its_end(runs, name):
    d = run(runs, name)
    assert not d.board.event_errors
    assert not d.nacks, d.nacks[:3]
    assert d.board.scenario_time() >= d.scenario.duration_s
    assert d.blocks >= 0.95 * d.scenario.duration_s * 10  # 2000-sample blocks at 20 kHz
    assert len(d.epochs) == len(d.board.truth)  # every pulse reported
    assert not d.board.beeper_on and not d.board.beeper_history


@pytest.mark.parametrize("name", NAMES)
def test_tagged_steps_are_backed_by_real_responses(runs, name):
    """Each [expect.step] has a tag in the operator time line whose preceding probe
    stimuli on the tagged side really responded (per the board's truth)."""
    d = run(runs, name)
    for exp in d.scenario.expect.steps:
        tags = [t for t, step, side in d.tags if step == exp.step and side == exp.side]
        assert tags, f"{name}: no step.tag for {exp.step} {exp.side}"
        t = tags[-1]
        recent = [x for x in d.truth(Output.PROBE, t0=t - 3.0, t1=t) if x.target and x.target.endswith(exp.side)]
        assert recent, f"{name}: no probe stimulus before the {exp.step} tag"
        good = [x for x in recent if x.delivered_uA >= 0.95 * x.set_uA and x.amplitude_uV >= 100]
        assert bool(good) is exp.response, f"{name} {exp.step}{exp.side}"
        if exp.min_amplitude_uV is not None:
            assert max(x.amplitude_uV for x in recent) >= exp.min_amplitude_uV


def _aps(d: Driver, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    tr = d.truth(Output.APS, t0=t0, t1=t1)
    return (np.array([x.amplitude_uV for x in tr]),
            np.array([x.latency_ms if x.latency_ms is not None else np.nan for x in tr]))


def test_traction_recovery_world(runs):
    d = run(runs, "traction_recovery")
    a0, l0 = _aps(d, 14.0, 34.0)
    a, lat = _aps(d, 88.0, 100.0)
    assert np.all(a < 0.5 * a0.mean()) and np.all(lat > 1.1 * l0.mean())  # combined-event pattern
    assert np.all(a >= 100)  # never a loss of signal
    a, lat = _aps(d, 125.0, 145.0)
    assert np.all(a > 0.5 * a0.mean())


def test_tube_displacement_world(runs):
    d = run(runs, "tube_displacement")
    a0, l0 = _aps(d, 14.0, 34.0)
    a, lat = _aps(d, 73.0, 94.0)
    assert np.all(a < 0.5 * a0.mean()) and np.all(np.abs(lat - l0.mean()) < 0.05 * l0.mean())
    a, _ = _aps(d, 100.0, 118.0)
    assert np.all(a > 0.7 * a0.mean())


def test_nmb_world(runs):
    d = run(runs, "nmb_both_sides")
    a0, l0 = _aps(d, 14.0, 34.0)
    a, lat = _aps(d, 90.0, 110.0)
    assert np.all(a < 0.5 * a0.mean()) and np.all(np.abs(lat - l0.mean()) < 0.05 * l0.mean())
    right = d.truth(Output.PROBE, "VAGUS-R", 103.0, 106.0)
    assert right and max(x.amplitude_uV for x in right) < 0.5 * d.board.patient.params.right.vagus_amp_uV


def test_transection_world(runs):
    d = run(runs, "transection")
    assert all(x.amplitude_uV == 0 for x in d.truth(Output.PROBE, "RLN-L", 50.0, 54.0))
    assert all(x.amplitude_uV == 0 for x in d.truth(Output.PROBE, "VAGUS-L", 70.0, 74.0))
    assert all(x.amplitude_uV > 100 for x in d.truth(Output.PROBE, "VAGUS-R", 60.0, 63.0))
    assert all(x.amplitude_uV > 100 for x in d.truth(Output.PROBE, "RLN-L", 80.0, 82.5))  # distal: type 1
    assert all(x.amplitude_uV == 0 for x in d.truth(Output.PROBE, "RLN-L", 92.0, 94.5))


def test_no_current_world(runs):
    d = run(runs, "no_current_probe")
    for t0, t1 in ((30.2, 34.5), (50.2, 52.5), (64.2, 67.5)):
        tr = d.truth(Output.PROBE, t0=t0, t1=t1)
        assert tr and all(x.delivered_uA < 0.95 * x.set_uA for x in tr)
    ok = d.truth(Output.PROBE, t0=0.0, t1=29.0)
    assert ok and all(x.delivered_uA >= 0.95 * x.set_uA for x in ok)


def test_nonrecurrent_world(runs):
    d = run(runs, "nonrecurrent_right")
    assert all(x.amplitude_uV == 0 for x in d.truth(Output.PROBE, "VAGUS-R", 6.0, 9.5))
    fast = d.truth(Output.PROBE, "VAGUS-R", 22.0, 25.5)
    assert fast and all(x.latency_ms < 3.5 and x.amplitude_uV > 200 for x in fast)
    assert all(x.latency_ms > 7.0 for x in d.truth(Output.PROBE, "VAGUS-L", 14.0, 17.0))


def test_cautery_world(runs):
    d = run(runs, "cautery_heavy")
    hit = [ep for ep in d.epochs if np.abs(ep.samples).max() >= (1 << 20) - 1]
    assert len(hit) >= 20  # many epochs saturated by cautery
    assert len(hit) < 0.7 * len(d.epochs)


# ----------------------------------------------------------------------------- expectations


def test_check_events():
    exp = Expect(
        events=(ExpectedEvent("loss_of_signal", "L", "RLN", 10.0, 20.0),),
        absent=(ForbiddenEvent("combined_event"),),
    )
    assert exp.check_events([("loss_of_signal", 12.0, "L", "RLN")]) == []
    problems = exp.check_events([("loss_of_signal", 25.0, "L", "RLN"), ("combined_event", 3.0, "R", "VAGUS")])
    assert len(problems) == 2 and "RLN-L in 10-20 s" in problems[0] and "t=3.00" in problems[1]


# ----------------------------------------------------------------------------- bad files


GOOD = """
[scenario]
seed = 1
duration_s = 10
[[world]]
t = 1
do = "probe"
contact = "air"
[[operator]]
t = 1
cmd = "probe.site"
site = "RLN"
side = "L"
"""


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("[scenario\n", "not valid TOML"),
        ("[scenario]\nduration_s = 10\n", "seed must be a non-negative integer"),
        ("[scenario]\nseed = 1\n", "duration_s must be a number"),
        (GOOD + "[extra]\n", "unknown section 'extra'"),
        (GOOD.replace("t = 1\ndo", "t = 11\ndo"), "[[world]] #1: t=11 outside the scenario (0-10 s)"),
        (GOOD.replace('do = "probe"', 'do = "teleport"'), "unknown control; known:"),
        (GOOD.replace('contact = "air"', 'contakt = "air"'), "unknown argument 'contakt'"),
        (GOOD.replace('do = "probe"\ncontact = "air"', 'do = "traction"'), "missing argument 'side'"),
        (GOOD.replace('cmd = "probe.site"', 'cmd = "Probe Site"'), "is not a local-API command name"),
        (GOOD.replace('cmd = "probe.site"', 'cmd = "sim.control"'), "belong in [[world]]"),
        (GOOD + "[patient]\nbogus = 1\n", "[patient]: unknown patient parameter 'bogus'"),
        (GOOD + "[[expect.event]]\nkind = 'los'\n", "kind 'los' is not known"),
        (GOOD + "[[expect.event]]\nkind = 'loss_of_signal'\nafter_s = 5\nbefore_s = 2\n", "earlier than after_s"),
        (GOOD + "[[expect.step]]\nstep = 'V3'\nside = 'L'\n", "step must be one of"),
    ],
)
def test_bad_scenario_files_are_refused_with_file_and_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_scenario_names_the_shipped_ones():
    with pytest.raises(ScenarioError, match="no such scenario file.*standard_bilateral"):
        load_scenario("no_such_case")
    with pytest.raises(ScenarioError, match="not valid"):
        load_scenario("bad name!")


def test_good_minimal_file(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(GOOD)
    s = load_scenario(path)
    assert s.name == "mini" and s.seed == 1 and s.world_events[0].args == {"contact": "air"}
    assert s.operator_actions[0].cmd == "probe.site" and s.expect == Expect()
    clock = ManualClock()
    board = VirtualBoard(clock, scenario=s)
    clock.advance(2.0)
    board.poll()
    assert board.patient.probe.kind == "air"
