"""The virtual board's epochs measured by the product's own analysis (app.analysis):
what the analysis reports agrees with the board's truth, and the confounders come out as
the validity reasons they should."""

from __future__ import annotations

import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from firmware_bridge import codec
from firmware_bridge.clock import ManualClock
from firmware_bridge.messages import ConfigureAcquisition, Hello, HostHeartbeat, Output, StimEpoch, StimMode, Stimulate
from firmware_bridge.sim.board import VirtualBoard


class Bench:
    def __init__(self, seed: int) -> None:
        self.clock = ManualClock()
        self.board = VirtualBoard(self.clock, seed=seed)
        self.dec = codec.Decoder()
        self.seq = 0
        for m in (Hello(), HostHeartbeat(0), ConfigureAcquisition(stream_enabled=False)):
            self.send(m)
        self.step(0.1)

    def send(self, m) -> None:
        self.board.receive(codec.encode(m, self.seq))
        self.seq += 1

    def step(self, dt: float) -> list[StimEpoch]:
        self.clock.advance(dt)
        self.send(HostHeartbeat(self.seq))
        return [f.message for f in self.dec.feed(self.board.poll()) if isinstance(f.message, StimEpoch)]

    def pulse(self, current_uA: int = 1000, output: Output = Output.PROBE) -> tuple[StimEpoch, object]:
        self.send(Stimulate(output, StimMode.SINGLE, current_uA))
        (ep,) = self.step(0.1)
        truth = next(t for t in self.board.truth if t.stim_counter == ep.stim_counter)
        return ep, truth


def stimulus(site: str, side: str, ep: StimEpoch) -> Stimulus:
    return Stimulus(0, 0.0, Site(site), Side(side), Source.PROBE, ep.set_current_uA / 1000.0,
                    ep.delivered_current_uA / 1000.0, ep.pulse_width_us)


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    return EpochAnalyzer()


def test_analysis_agrees_with_the_truth(analyzer):
    n = 0
    for seed in range(1, 13):
        bench = Bench(seed)
        for site in ("VAGUS", "RLN"):
            for side in "LR":
                bench.board.control("probe", contact="nerve", site=site, side=side)
                ep, truth = bench.pulse()
                m = analyzer.measure_board_epoch(ep, stimulus(site, side, ep))
                assert m.valid, (seed, site, side, m.invalid_reason)
                assert m.response is (truth.amplitude_uV >= 100.0)
                if m.response:
                    assert m.amplitude_uV == pytest.approx(truth.amplitude_uV, rel=0.1, abs=15.0)
                    assert m.latency_ms == pytest.approx(truth.latency_ms, abs=0.2)
                    n += 1
    assert n >= 40


def test_no_response_on_tissue_and_near_threshold(analyzer):
    bench = Bench(3)
    bench.board.control("probe", contact="tissue")
    ep, _ = bench.pulse(2000)
    m = analyzer.measure_board_epoch(ep, stimulus("RLN", "L", ep))
    assert m.valid and not m.response  # current delivered, artifact only: no response
    bench.board.control("probe", contact="nerve", site="RLN", side="L")
    ep, truth = bench.pulse(200)  # well below threshold
    m = analyzer.measure_board_epoch(ep, stimulus("RLN", "L", ep))
    assert truth.amplitude_uV < 50 and not m.response


def test_confounders_become_validity_reasons(analyzer):
    bench = Bench(4)
    bench.board.control("probe", contact="air")
    ep, _ = bench.pulse()
    assert analyzer.measure_board_epoch(ep, stimulus("VAGUS", "L", ep)).invalid_reason is InvalidReason.NO_CURRENT
    bench.board.control("probe", contact="fluid", site="RLN", side="L")
    ep, _ = bench.pulse()
    assert analyzer.measure_board_epoch(ep, stimulus("RLN", "L", ep)).invalid_reason is InvalidReason.NO_CURRENT
    bench.board.control("probe", contact="nerve", site="VAGUS", side="R")
    bench.board.control("cautery", duration_s=0.5)
    ep, _ = bench.pulse()
    m = analyzer.measure_board_epoch(ep, stimulus("VAGUS", "R", ep))
    assert not m.valid and m.invalid_reason in (InvalidReason.CAUTERY, InvalidReason.SATURATED)
    assert not m.response
