"""Fuzzing the board seam: CRC-valid frames with arbitrary field values, through the real
link (codec, ``Receiver``, every frame validated) into the real engine, during a case.

A stateful property test (hypothesis): a stepped system (virtual board, real wire
protocol) monitors a case with the probe and the continuous vagal electrode running;
the board's frames are numbered on by the fault plan of ``lnm link-proxy`` (``renumber``),
so that made-up frames pass the sequence check and reach the content rules. Each step
injects frames that look like the board's last ones with arbitrary fields changed, old
frames again, frames out of sequence, or arbitrary answers, then lets time pass. After
every step: the engine is alive, the API answers ``state.get`` (and ``lnm status`` can
print it), and nothing implausible is in the journal: no stimulus outside the case or in
its future, none back-dated, none journaled twice, no waveform with a sample rate of 0.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.api.clients import format_status
from app.record.journal import Journal
from engine_testkit import stepped
from firmware_bridge.codec import SEQ_MODULO, encode
from firmware_bridge.faults import FaultPlan
from firmware_bridge.messages import (
    Ack,
    BoardHeartbeat,
    BoardStatus,
    Capabilities,
    Electrode,
    EmgBlock,
    Fault,
    ImpedanceResult,
    Nack,
    NackReason,
    Output,
    StimEpoch,
)

U8, U16, U32, U64 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1


def _near(base: int, spread: int, top: int) -> st.SearchStrategy[int]:
    """Values around ``base`` (most likely to pass the rules, so that made-up frames reach
    the engine; twice as likely as the others), anywhere in 0..top, or at the edges."""
    near = st.integers(max(0, base - spread), max(0, min(top, base + spread)))
    edges = st.sampled_from([v for v in (0, 1, top, top // 2, 1 << 48, (1 << 48) + 1, 1 << 63) if v <= top])
    return st.one_of(near, near, st.integers(0, top), edges)


def _board_time(now_us: int) -> st.SearchStrategy[int]:
    """Board times: about now, up to 2.5 s ahead or behind (the link's rules allow about 2 s
    either way), anywhere, or at the edges."""
    return st.one_of(_near(now_us, 100_000, U64), st.integers(now_us, now_us + 2_500_000),
                     st.integers(max(0, now_us - 2_500_000), now_us))


def _samples(draw, channels: int | None, n: int | None, like: np.ndarray) -> np.ndarray:
    ch = like.shape[0] if channels is None else channels
    k = like.shape[1] if n is None else n
    if (ch, k) == like.shape:
        return like
    return np.asarray(draw(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=8)) * (ch * k + 1),
                      dtype=np.int32)[: ch * k].reshape(ch, k)


class BoardSeam(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="lnm-fuzz-")
        self.journal = Journal(Path(self.tmp.name) / "journal.db")
        plan = FaultPlan(seed=3)
        plan.command("renumber on dir=board", 0.0)
        s = stepped(None, seed=41, journal=self.journal, faults=plan)
        self.s = s
        self.last: dict[type, object] = {}
        self.old: list[object] = []
        real = s.monitor.board.message

        def keep(msg):
            self.last[type(msg)] = msg
            if isinstance(msg, StimEpoch) and len(self.old) < 50:
                self.old.append(msg)
            real(msg)

        s.monitor.board.message = keep
        s.run_for(0.5)
        s.must("case.start", patient_id="FUZZ", planned_sides=["L", "R"])
        s.board.control("aps_attach", side="L")
        s.board.control("probe", contact="nerve", site="RLN", side="R")
        s.must("probe.site", site="RLN", side="R")
        s.must("stim.output", output="aps", on=True)
        s.must("stim.output", output="probe", on=True)
        s.run_for(1.5)
        self.case_id = s.monitor.case_id

    def teardown(self) -> None:
        self.journal.close()
        self.tmp.cleanup()

    # ------------------------------------------------------------------ wire

    def _in_sequence(self, msg: object) -> None:
        s = self.s
        s.to_engine(s.faults.process("board", encode(msg, 0), s.clock.now()))

    def _board_us(self) -> int:
        return int(self.s.board.now() * 1e6)

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: StimEpoch in self.last)
    @rule(data=st.data())
    def epoch(self, data) -> None:
        m: StimEpoch = self.last[StimEpoch]  # type: ignore[assignment]
        ch = data.draw(st.one_of(st.none(), st.integers(1, 3)))  # the wire carries 1..255 channels
        n = data.draw(st.one_of(st.none(), st.integers(0, 1300)))
        samples = _samples(data.draw, ch, n, m.samples)
        fields = data.draw(st.fixed_dictionaries({}, optional={
            "board_time_us": _board_time(self._board_us()),
            "stim_counter": _near(m.stim_counter + 1, 3, U32),
            "output": st.sampled_from(list(Output)),
            "set_current_uA": _near(m.set_current_uA, 1000, U32),
            "delivered_current_uA": st.integers(-(1 << 31), (1 << 31) - 1),
            "pulse_width_us": _near(m.pulse_width_us, 100, U16),
            "sample_rate_hz": _near(m.sample_rate_hz, 10, U32),
            "pre_samples": st.integers(0, samples.shape[1]),
            "nv_per_count": _near(m.nv_per_count, 100, U32),
            "config_token": st.one_of(st.none(), _near(m.config_token or 0, 3, U32)),
        }))
        fields.setdefault("pre_samples", min(m.pre_samples, samples.shape[1]))
        self._in_sequence(dataclasses.replace(m, samples=samples, **fields))

    @precondition(lambda self: EmgBlock in self.last)
    @rule(data=st.data())
    def emg(self, data) -> None:
        m: EmgBlock = self.last[EmgBlock]  # type: ignore[assignment]
        ch = data.draw(st.one_of(st.none(), st.integers(1, 3)))
        n = data.draw(st.one_of(st.none(), st.integers(0, 5000)))
        samples = _samples(data.draw, ch, n, m.samples)
        fields = data.draw(st.fixed_dictionaries({}, optional={
            "board_time_us": _board_time(self._board_us()),
            "first_sample": _near(m.first_sample + m.samples.shape[1], 2000, U64),
            "sample_rate_hz": _near(m.sample_rate_hz, 10, U32),
            "nv_per_count": _near(m.nv_per_count, 100, U32),
        }))
        self._in_sequence(dataclasses.replace(m, samples=samples, **fields))

    @rule(data=st.data())
    def status_or_heartbeat(self, data) -> None:
        now = self._board_us()
        if data.draw(st.booleans()):
            msg: object = BoardStatus(board_time_us=data.draw(_board_time(now)),
                                      faults=Fault(data.draw(st.integers(0, U8))),
                                      stimulating=tuple(data.draw(st.sets(st.sampled_from(list(Output))))),
                                      host_heartbeat_age_ms=data.draw(st.integers(0, U32)),
                                      uptime_s=data.draw(_near(now // 1_000_000, 3, U32)))
        else:
            last = self.last.get(BoardHeartbeat)
            counter = last.counter + 1 if isinstance(last, BoardHeartbeat) else 0
            msg = BoardHeartbeat(board_time_us=data.draw(_board_time(now)),
                                 counter=data.draw(_near(counter, 2, U32)))
        self._in_sequence(msg)

    @rule(data=st.data())
    def answers(self, data) -> None:
        kind = data.draw(st.sampled_from(["ack", "nack", "caps", "impedance"]))
        if kind == "ack":
            msg: object = Ack(seq=data.draw(st.integers(0, U32)))
        elif kind == "nack":
            msg = Nack(seq=data.draw(st.integers(0, U32)), reason=data.draw(st.sampled_from(list(NackReason))),
                       detail=data.draw(st.text(max_size=40)))
        elif kind == "caps":
            msg = Capabilities(protocol_version=data.draw(st.integers(0, U16)), firmware_version="fuzz",
                               board_id="FUZZ", channels=data.draw(st.integers(0, 8)),
                               max_current_uA=data.draw(st.integers(0, U32)))
        else:
            ohm = data.draw(st.integers(-(1 << 31), (1 << 31) - 1))
            msg = ImpedanceResult(board_time_us=data.draw(_board_time(self._board_us())),
                                  impedances_ohm=((Electrode.L_POS, ohm),))
        self._in_sequence(msg)

    @precondition(lambda self: bool(self.old))
    @rule(data=st.data())
    def replay(self, data) -> None:
        """A stimulus epoch the engine already has, again (renumbered: only its content tells)."""
        self._in_sequence(data.draw(st.sampled_from(self.old)))

    @precondition(lambda self: StimEpoch in self.last)
    @rule(seq=st.integers(0, SEQ_MODULO - 1))
    def out_of_sequence(self, seq: int) -> None:
        self.s.to_engine(encode(self.last[StimEpoch], seq))

    @rule(dt=st.sampled_from([0.02, 0.1, 0.3, 1.1]))
    def time_passes(self, dt: float) -> None:
        self.s.run_for(dt)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def engine_alive_and_answering(self) -> None:
        s = self.s
        s.run_for(0.01)
        assert s.monitor.fatal is None
        reply = s.command("state.get")
        assert reply["ok"], reply
        assert format_status(reply["result"])

    @invariant()
    def nothing_implausible_journaled(self) -> None:
        now = self.s.monitor.now_t()
        seen: set[tuple[float, str]] = set()
        last_t = -1.0
        for e in self.journal.entries(self.case_id, kinds=["stimulus"], blobs=False):
            p = e.payload
            assert 0.0 <= e.t_s <= now + 0.5, f"stimulus at {e.t_s} s of a case now at {now} s"
            assert e.t_s >= last_t - 1e-6, f"back-dated stimulus at {e.t_s} s after one at {last_t} s"
            key = (round(e.t_s, 6), p["source"])
            assert key not in seen, f"stimulus at {e.t_s} s journaled twice"
            seen.add(key)
            last_t = e.t_s
            assert (p.get("waveform") or p["waveform_in_stream"])["sample_rate_hz"] > 0
            assert 0.0 <= p["set_mA"] <= 30.0


# each example is a whole case on the stepped system: few of them, no shrinking (the steps
# of a failing example are printed as they are)
BoardSeam.TestCase.settings = settings(max_examples=10, stateful_step_count=15, deadline=None,
                                       phases=[Phase.explicit, Phase.reuse, Phase.generate],
                                       suppress_health_check=[HealthCheck.too_slow])
test_board_seam_fuzz = BoardSeam.TestCase
