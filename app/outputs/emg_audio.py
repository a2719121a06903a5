"""The free-running EMG made audible, muted automatically during cautery.

Owns: ``EmgAudio``, a stateful block processor from EMG microvolts to loudspeaker samples.
May import: numpy, scipy, ``app.settings``.

Pure computation (no clock, no I/O): the caller passes each block's time ``t`` (clock
seconds). Chain, all filters stateful so blocks join without clicks:

1. mix the channels (``channel`` "mix", or pick "L"/"R");
2. band-limit to ``band_hz`` (default 100-3000 Hz, 8th-order Butterworth in SOS form at
   the input rate): removes breathing wander and mains hum, keeps the EMG crackle;
3. resample to the output rate (linear interpolation with phase carried across blocks),
   then a 6th-order low-pass at the upper band edge removes interpolation images;
4. gain: ``full_scale_uV`` maps to full scale, then a ``tanh`` soft limiter;
5. mute envelope (``fade_s`` ramps, never a hard cut).

Muted when: ``audio.emg_audio`` is false; *cautery*: flagged by the caller or detected
(band RMS of the block above ``analysis.cautery_rms_uV``), and for ``cautery_holdoff_s``
after the last cautery block; *ducked*: ``mute_until(t)`` by the annunciator while a
high-priority alarm burst plays, so the burst is never masked by the crackle.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from app.settings import Settings


class EmgAudio:
    """The free-running EMG made audible: band-passed, scaled, resampled, muted during cautery."""

    def __init__(
        self,
        settings: Settings | None = None,
        out_rate: int = 48000,
        band_hz: tuple[float, float] = (100.0, 3000.0),
        full_scale_uV: float = 500.0,
        cautery_holdoff_s: float = 0.5,
        fade_s: float = 0.010,
        channel: str = "mix",
    ) -> None:
        if channel not in ("mix", "L", "R"):
            raise ValueError(f"EMG audio channel {channel!r}: choose mix, L or R")
        if not 0 < band_hz[0] < band_hz[1]:
            raise ValueError(f"EMG audio band {band_hz} Hz: need 0 < low < high")
        if full_scale_uV <= 0:
            raise ValueError(f"EMG audio full scale {full_scale_uV} uV must be > 0")
        self.out_rate = int(out_rate)
        self.band_hz = (float(band_hz[0]), float(band_hz[1]))
        self.full_scale_uV = float(full_scale_uV)
        self.cautery_holdoff_s = float(cautery_holdoff_s)
        self.fade_s = float(fade_s)
        self.channel = channel
        self._in_rate: float | None = None
        self._gain = 0.0  # current mute-envelope value (0 muted .. 1 open)
        self._cautery_until = -np.inf
        self._duck_until = -np.inf
        self.last_mute_reason: str | None = None
        self.update_settings(settings or Settings())
        self._out_sos = signal.butter(
            6, min(self.band_hz[1], 0.45 * self.out_rate), btype="low", fs=self.out_rate, output="sos"
        )
        self._out_zi = np.zeros((self._out_sos.shape[0], 2))

    def update_settings(self, settings: Settings) -> None:
        self.enabled = bool(settings["audio.emg_audio"])
        self.cautery_rms_uV = float(settings["analysis.cautery_rms_uV"])

    def mute_until(self, t: float) -> None:
        """Duck the EMG audio until clock time ``t`` (e.g. while a high burst plays)."""
        self._duck_until = max(self._duck_until, float(t))

    def reset(self) -> None:
        self._in_rate = None

    def _setup(self, in_rate: float) -> None:
        self._in_rate = float(in_rate)
        hi = min(self.band_hz[1], 0.45 * in_rate)
        if hi <= self.band_hz[0]:
            raise ValueError(f"EMG audio: input rate {in_rate:g} Hz too low for the band {self.band_hz} Hz")
        self._in_sos = signal.butter(4, (self.band_hz[0], hi), btype="band", fs=in_rate, output="sos")
        self._in_zi = np.zeros((self._in_sos.shape[0], 2))
        self._prev = 0.0
        self._phase = 0.0  # position of the next output sample, in input samples, relative to the block start

    def _select(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float64)
        if x.ndim == 1:
            return x
        if x.ndim != 2:
            raise ValueError(f"EMG block must be (samples,) or (channels, samples), got shape {x.shape}")
        if self.channel == "mix" or x.shape[0] == 1:
            return x.mean(axis=0)
        idx = 0 if self.channel == "L" else 1
        if idx >= x.shape[0]:
            raise ValueError(f"EMG block has {x.shape[0]} channel(s); channel {self.channel} missing")
        return x[idx]

    def _resample(self, x: np.ndarray) -> np.ndarray:
        step = self._in_rate / self.out_rate  # type: ignore[operator]
        ext = np.concatenate([[self._prev], x])
        q0 = self._phase + 1.0  # position in ``ext``
        n = len(x)
        if q0 > n:
            count = 0
        else:
            count = int(np.floor((n - q0) / step)) + 1
        q = q0 + step * np.arange(count)
        i = np.minimum(np.floor(q).astype(np.int64), n - 1)
        frac = q - i
        y = ext[i] * (1 - frac) + ext[np.minimum(i + 1, n)] * frac
        self._phase = q0 + step * count - 1.0 - n
        self._prev = float(x[-1]) if n else self._prev
        return y

    def process(self, block_uV: np.ndarray, in_rate: float, t: float, cautery: bool | None = None) -> np.ndarray:
        """One block of EMG (µV) sampled at ``in_rate`` starting at clock time ``t``.

        Returns float32 samples at ``out_rate`` (before the loudspeaker volume).
        """
        if in_rate <= 0:
            raise ValueError(f"EMG audio: input rate must be > 0 Hz (got {in_rate})")
        if self._in_rate != float(in_rate):
            self._setup(in_rate)
        x = self._select(block_uV)
        if x.size == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        y, self._in_zi = signal.sosfilt(self._in_sos, x, zi=self._in_zi)
        rms = float(np.sqrt(np.mean(y * y)))
        detected = rms > self.cautery_rms_uV
        block_end = t + len(x) / in_rate
        if cautery or detected:
            self._cautery_until = block_end + self.cautery_holdoff_s
        z = self._resample(y)
        z, self._out_zi = signal.sosfilt(self._out_sos, z, zi=self._out_zi)
        z = np.tanh(z / self.full_scale_uV)
        # Mute envelope: target per output sample, approached with a linear ramp.
        n = len(z)
        times = t + np.arange(n) / self.out_rate
        open_ = self.enabled & (times >= self._cautery_until) & (times >= self._duck_until)
        if not self.enabled:
            self.last_mute_reason = "disabled"
        elif not open_.all():
            self.last_mute_reason = "cautery" if (times < self._cautery_until).any() else "alarm"
        else:
            self.last_mute_reason = None
        step = 1.0 / max(1, int(self.fade_s * self.out_rate))
        env = np.empty(n)
        g = self._gain
        edges = np.flatnonzero(np.diff(open_.astype(np.int8))) + 1
        for a, b in zip(np.r_[0, edges], np.r_[edges, n], strict=True):  # runs of one target value
            target = 1.0 if open_[a] else 0.0
            ramp = g + np.sign(target - g) * step * np.arange(1, b - a + 1)
            env[a:b] = np.clip(ramp, min(g, target), max(g, target))
            g = float(env[b - 1]) if b > a else g
        self._gain = g
        return (z * env).astype(np.float32)

    @property
    def muted(self) -> bool:
        return self._gain == 0.0
