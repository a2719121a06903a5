"""The mains profile's learning rules (``MainsProfile.update``: no channel or a non-finite
chi-square teaches nothing, the average starts from nothing, a profile is trusted after
``PROFILE_MIN`` epochs) and the background model's geometry (``Background``: fitted on
every sample at 5 kHz, a second-difference spline penalty, the broadband basis as the
noise-band basis until the owner replaces it)."""

from __future__ import annotations

import numpy as np

from app.analysis.noise import PRESENT_CHI, PROFILE_MIN, Background, MainsProfile

FS = 5000.0


def _taught(profile: MainsProfile, channel, chi, times: int) -> None:
    for k in range(times):
        profile.update(channel, FS, np.asarray(chi, dtype=float), t_s=float(k))


def test_epochs_without_a_channel_teach_no_profile():
    """Epochs with no channel carry no hum information for any channel: even a strong
    chi-square from them, many times over, never makes a pair present."""
    profile = MainsProfile()
    _taught(profile, None, [100.0, 100.0], PROFILE_MIN + 4)
    assert not profile.present(None, FS, 2, t_s=float(PROFILE_MIN + 4)).any()


def test_a_non_finite_chi_square_is_ignored():
    """A broken epoch (NaN chi-square) neither counts as an epoch nor spoils the average:
    after the minimum number of good epochs the pair is present as if it never came."""
    profile = MainsProfile()
    profile.update("EMG L", FS, np.array([np.nan, 50.0]), t_s=0.0)
    _taught(profile, "EMG L", [50.0, 50.0], PROFILE_MIN)
    assert profile.present("EMG L", FS, 2, t_s=float(PROFILE_MIN)).all()


def test_a_profile_is_trusted_after_exactly_profile_min_epochs():
    profile = MainsProfile()
    _taught(profile, "EMG L", [50.0], PROFILE_MIN - 1)
    assert not profile.present("EMG L", FS, 1, t_s=float(PROFILE_MIN - 1)).any()
    profile.update("EMG L", FS, np.array([50.0]), t_s=float(PROFILE_MIN - 1))
    assert profile.present("EMG L", FS, 1, t_s=float(PROFILE_MIN)).all()


def test_a_steady_chi_square_of_exactly_present_chi_is_present():
    """The profile is the decayed mean of the chi-squares: epochs all at exactly
    ``PRESENT_CHI`` average to exactly that (the mean starts from no weight), present."""
    profile = MainsProfile()
    _taught(profile, "EMG L", [PRESENT_CHI, PRESENT_CHI - 0.5], PROFILE_MIN)
    assert profile.present("EMG L", FS, 2, t_s=float(PROFILE_MIN)).tolist() == [True, False]


def test_at_5_khz_the_background_is_fitted_on_every_sample():
    bg = Background(FS, 50, 300)
    assert bg.decimation == 1
    assert np.array_equal(bg.idx, np.arange(300))
    assert np.array_equal(bg.fit_basis, bg.basis)


def test_at_10_khz_the_background_is_fitted_on_every_other_sample_from_the_first():
    bg = Background(10000.0, 100, 600)
    assert np.array_equal(bg.idx, np.arange(0, 600, 2))


def test_the_spline_penalty_lets_a_straight_line_through_and_charges_a_curve():
    """A second-difference penalty: spline coefficients on a straight line cost nothing,
    on a parabola they do."""
    bg = Background(FS, 50, 300)
    ns = bg.n_spline
    j = np.arange(ns, dtype=float)
    p = bg.penalty[:ns, :ns]
    line = 3.0 + 2.0 * j
    parabola = (j - ns / 2.0) ** 2
    assert abs(line @ p @ line) < 1e-9
    assert parabola @ p @ parabola > 1.0
    assert not bg.penalty[ns:, :].any() and not bg.penalty[:, ns:].any()


def test_a_new_background_models_the_noise_band_with_its_own_basis():
    """Until its owner replaces it with the filtered one, the noise-band basis is the
    basis itself (same samples and terms)."""
    bg = Background(FS, 50, 300)
    assert bg.hp_basis is not None
    assert np.array_equal(bg.hp_basis, bg.basis)
