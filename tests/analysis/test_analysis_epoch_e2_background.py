"""The epoch analyzer's per-geometry background models (``EpochAnalyzer._background_model``:
one per sample rate, onset and length, kept until more than 16 are held, with the basis
also given in the noise band) and its use of the mains profile over a batch
(``_mains_presence``: each row sees what the earlier rows and epochs taught, the eligible
rows teach in order), checked on small hand-made inputs."""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer, _Batch
from app.settings import Settings

# ------------------------------------------------------------------ _background_model


def test_one_background_model_per_geometry():
    an = EpochAnalyzer(Settings())
    m = an._background_model(10000.0, 100, 600)
    assert (m.fs, m.pre, m.n) == (10000.0, 100, 600)
    assert an._background_model(10000, 100, 600) is m  # the same geometry: the same model
    other = an._background_model(10000.0, 100, 400)
    assert other is not m
    assert (other.fs, other.pre, other.n) == (10000.0, 100, 400)
    assert other.basis.shape[0] == 400
    assert an._background_model(20000.0, 200, 600).fs == 20000.0


def test_the_noise_band_copy_of_the_basis_is_each_term_high_passed_at_150_hz():
    """Each basis column filtered like the noise copy: 2nd-order 150 Hz high-pass, zero
    phase, odd extension of 10 ms (100 samples at 10 kHz)."""
    an = EpochAnalyzer(Settings())
    m = an._background_model(10000.0, 100, 600)
    sos = sps.butter(2, 150.0, btype="highpass", fs=10000.0, output="sos")
    want = sps.sosfiltfilt(sos, m.basis, axis=0, padtype="odd", padlen=100)
    assert m.hp_basis.shape == m.basis.shape
    np.testing.assert_allclose(m.hp_basis, want, rtol=1e-9, atol=1e-9)
    # the mains terms pass the high-pass nearly unchanged at 150 Hz, the slow spline does not
    assert np.abs(m.hp_basis[:, : m.n_spline]).max() < 0.5 * np.abs(m.basis[:, : m.n_spline]).max()


def test_up_to_17_geometries_are_kept_and_the_18th_starts_afresh():
    an = EpochAnalyzer(Settings())
    first = an._background_model(5000.0, 10, 100)
    for n in range(101, 117):  # 16 more: 17 held
        an._background_model(5000.0, 10, n)
    assert an._background_model(5000.0, 10, 100) is first
    an._background_model(5000.0, 10, 117)  # the 18th empties the cache first
    again = an._background_model(5000.0, 10, 100)
    assert again is not first
    assert (again.fs, again.pre, again.n) == (5000.0, 10, 100)


# ------------------------------------------------------------------ _mains_presence

N_PAIRS = 6
STRONG_50 = np.array([100.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # 50 Hz clearly present, nothing else


def _batch(channels, times, chi, fs: float = 10000.0) -> _Batch:
    k = len(channels)
    b = _Batch(
        fs=fs,
        pre=0,
        bs=0,
        be=0,
        end=1,
        g=0,
        z=np.zeros((k, 1)),
        extra=None,
        se=np.zeros(k, dtype=np.int64),
        end_ms=[15.0] * k,
        background=None,
        channels=list(channels),
        times=np.array(times, dtype=np.float64),
    )
    b.mains_chi = np.array(chi, dtype=np.float64)
    return b


def test_a_mains_pair_is_known_present_after_8_earlier_epochs():
    """Ten rows on one channel, each with strong 50 Hz: rows 0-7 see fewer than 8 earlier
    epochs (nothing known), rows 8 and 9 see 50 Hz present."""
    an = EpochAnalyzer(Settings())
    b = _batch(["EMG L"] * 10, np.arange(10.0), [STRONG_50] * 10)
    present = an._mains_presence(b, np.ones(10, dtype=bool), N_PAIRS)
    assert present.shape == (10, N_PAIRS)
    assert present.dtype == bool  # a mask the background fit can negate
    want = np.zeros((10, N_PAIRS), dtype=bool)
    want[8:, 0] = True
    assert (present == want).all()
    assert (~present).sum() == 10 * N_PAIRS - 2


def test_each_channel_has_its_own_profile():
    """Rows alternate between the channels; only EMG L has hum. After 8 EMG L rows the next
    EMG L row sees 50 Hz, EMG R rows never do."""
    an = EpochAnalyzer(Settings())
    channels = ["EMG L", "EMG R"] * 9
    chi = [STRONG_50 if c == "EMG L" else np.zeros(N_PAIRS) for c in channels]
    b = _batch(channels, np.arange(18.0), chi)
    present = an._mains_presence(b, np.ones(18, dtype=bool), N_PAIRS)
    assert present[16, 0] and not present[16, 1:].any()  # the 9th EMG L row
    assert not present[:16].any()
    assert not present[17].any()


def test_rows_not_eligible_teach_nothing():
    """The same ten rows, but only the last is eligible: nothing is learned before it."""
    an = EpochAnalyzer(Settings())
    b = _batch(["EMG L"] * 10, np.arange(10.0), [STRONG_50] * 10)
    eligible = np.zeros(10, dtype=bool)
    eligible[9] = True
    assert not an._mains_presence(b, eligible, N_PAIRS).any()
    # later, the profile holds one epoch only: still not enough
    later = _batch(["EMG L"], [10.0], [STRONG_50])
    assert not an._mains_presence(later, np.ones(1, dtype=bool), N_PAIRS).any()


def test_rows_without_a_finite_chi_square_teach_nothing():
    """Eligible rows whose mains pairs could not be fitted (NaN) are skipped."""
    an = EpochAnalyzer(Settings())
    b = _batch(["EMG L"] * 10, np.arange(10.0), [np.full(N_PAIRS, np.nan)] * 10)
    assert not an._mains_presence(b, np.ones(10, dtype=bool), N_PAIRS).any()


def test_the_profile_carries_over_to_the_next_batch_until_time_jumps():
    """Learned from ten epochs at 0-9 s: an epoch at 20 s still sees 50 Hz present; after a
    gap of more than 600 s the profile is dropped; so it is when time goes backwards."""
    an = EpochAnalyzer(Settings())
    an._mains_presence(_batch(["EMG L"] * 10, np.arange(10.0), [STRONG_50] * 10), np.ones(10, dtype=bool), N_PAIRS)
    soon = an._mains_presence(_batch(["EMG L"], [20.0], [STRONG_50]), np.zeros(1, dtype=bool), N_PAIRS)
    assert soon[0, 0]
    stale = an._mains_presence(_batch(["EMG L"], [20.0 + 601.0], [STRONG_50]), np.zeros(1, dtype=bool), N_PAIRS)
    assert not stale.any()

    back = EpochAnalyzer(Settings())
    back._mains_presence(
        _batch(["EMG L"] * 10, 100.0 + np.arange(10.0), [STRONG_50] * 10), np.ones(10, dtype=bool), N_PAIRS
    )
    assert back._mains_presence(_batch(["EMG L"], [109.5], [STRONG_50]), np.zeros(1, dtype=bool), N_PAIRS)[0, 0]
    assert not back._mains_presence(_batch(["EMG L"], [50.0], [STRONG_50]), np.zeros(1, dtype=bool), N_PAIRS).any()


def test_the_profile_is_per_sample_rate():
    """What was learned at 10 kHz says nothing about the same channel at 20 kHz."""
    an = EpochAnalyzer(Settings())
    an._mains_presence(_batch(["EMG L"] * 10, np.arange(10.0), [STRONG_50] * 10), np.ones(10, dtype=bool), N_PAIRS)
    other = an._mains_presence(_batch(["EMG L"], [10.0], [STRONG_50], fs=20000.0), np.zeros(1, dtype=bool), N_PAIRS)
    assert not other.any()
