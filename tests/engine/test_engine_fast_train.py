"""A fast probe train (30 Hz: the next pulse and its response fall inside this epoch) is
measured as the nerve's response, not as noise: the engine tells the analysis where the
train's other pulses fall, and what follows them is no noise reference."""

from __future__ import annotations

import pytest

from app.settings import Settings
from engine_testkit import stepped


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("site", ["VAGUS", "RLN"])
def test_every_stimulus_of_a_30_hz_probe_train_on_a_nerve_is_a_valid_response(seed, site):
    s = stepped(settings=Settings(), seed=seed)
    s.run_for(0.5)
    s.must("case.start", patient_id="TRAIN-1", planned_sides=["L"])
    s.board.control("probe", contact="nerve", site=site, side="L")
    s.must("probe.site", site=site, side="L")
    s.must("stim.set", output="probe", rate_hz=30.0, current_mA=2.0)
    seen = []
    s.must("stim.output", output="probe", on=True)
    for _ in range(10):
        s.run_for(0.1)
        last = s.must("state.get")["last"]["L"]
        seen.append((last["index"], last["valid"], last["response"], last.get("invalid_reason")))
    s.must("stim.output", output="probe", on=False)
    assert len({i for i, *_ in seen}) >= 8, seen  # the train ran
    assert all(valid and response for _, valid, response, _r in seen[1:]), seen
