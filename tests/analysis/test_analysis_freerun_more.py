"""Free-running EMG: the events as the engine publishes them, and the choice of the filter
kernel the free-running detector and the epoch filters use (``app.analysis.kernel``:
scipy's compiled ``sosfilt`` kernel, used only when it gives exactly what
``scipy.signal.sosfilt`` gives)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal._sosfilt as sosfilt_module
from scipy import signal as sps

from app.analysis import epoch, freerun, kernel as kernel_module
from app.analysis.freerun import EmgEvent, EmgEventKind


def test_an_activity_event_is_published_rounded():
    e = EmgEvent(EmgEventKind.ACTIVITY, 12.345678, "EMG L", 11.234567, 1.123456, 123.456, "train", 9, 7.123456)
    assert e.to_json() == {
        "kind": "activity", "t_s": 12.3457, "channel": "EMG L", "onset_s": 11.2346, "duration_s": 1.1235,
        "peak_uV": 123.5, "pattern": "train", "potentials": 9, "rate_hz": 7.12,
    }


def test_a_cautery_event_has_no_channel_and_no_values():
    e = EmgEvent(EmgEventKind.CAUTERY_START, 5.0, None, 4.99)
    assert e.to_json() == {
        "kind": "cautery_start", "t_s": 5.0, "channel": None, "onset_s": 4.99, "duration_s": None,
        "peak_uV": None, "pattern": None, "potentials": 0, "rate_hz": None,
    }


def test_the_compiled_kernel_is_used_on_this_scipy():
    kernel = kernel_module._load_kernel()
    assert kernel is not None and kernel is sosfilt_module._sosfilt
    assert kernel_module.SOSFILT is kernel and freerun._SOSFILT is kernel and epoch._SOSFILT is kernel


def _public(sos, y, zf):
    """What the public function gives, written back the way the kernel writes it."""
    out, z = sps.sosfilt(sos, y, axis=1, zi=zf.transpose(1, 0, 2))
    return out, np.ascontiguousarray(z.transpose(1, 0, 2))


def _exact(sos, y, zf):
    out, z = _public(sos, y, zf)
    y[...] = out
    zf[...] = z


def _output_only(sos, y, zf):
    y[...] = _public(sos, y, zf)[0]


def _state_only(sos, y, zf):
    zf[...] = _public(sos, y, zf)[1]


def _nothing(sos, y, zf):
    pass


def _rounded(sos, y, zf):
    out, z = _public(sos, y, zf)
    y[...] = np.float32(out)
    zf[...] = z


def _wrong_signature(sos, y, zf):
    raise TypeError("_sosfilt() takes 4 arguments")


def _wrong_layout(sos, y, zf):
    raise ValueError("wrong layout")


def test_a_kernel_that_gives_what_sosfilt_gives_is_taken(monkeypatch):
    monkeypatch.setattr(sosfilt_module, "_sosfilt", _exact)
    assert kernel_module._load_kernel() is _exact


@pytest.mark.parametrize("fake", [_output_only, _state_only, _nothing, _rounded, _wrong_signature, _wrong_layout])
def test_a_kernel_that_differs_is_not_used(monkeypatch, fake):
    monkeypatch.setattr(sosfilt_module, "_sosfilt", fake)
    assert kernel_module._load_kernel() is None


def test_no_kernel_in_scipy_means_the_public_function(monkeypatch):
    monkeypatch.delattr(sosfilt_module, "_sosfilt")
    assert kernel_module._load_kernel() is None
