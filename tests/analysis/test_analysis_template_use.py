"""When the learned response shape is not used: the epoch says why (its ``detail``), so the
neuromonitoring professional can see that a noisy response was measured directly."""

from __future__ import annotations

import numpy as np

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, site_sequence

FS = 20000.0


def _stim(i: int, t_s: float) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)


def test_a_response_of_another_shape_is_measured_directly_and_says_why():
    analyzer = EpochAnalyzer(Settings())
    learned = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, learned, 10, noise_uV=3.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    other = ResponseSpec(250.0, 9.0, polarity=-1, width_ms=1.2, ratio=0.3, gap_ms=3.0)  # late, wide, inverted
    for j in range(3):
        x, pre, _ = make_epoch(EpochSpec(fs=FS, response=other, noise_uV=25.0, seed=100 + j, t0_s=200.0 + j))
        a = analyzer.analyse(x, FS, pre, _stim(20 + j, 200.0 + j), "EMG L")
        assert a.method == "direct"
        assert a.detail.startswith("template not used: shape does not fit (residual "), a.detail
        assert a.measurement.valid and a.measurement.response
