"""The patient's own response shape per channel and nerve site, and the measurement of a
response in noise by fitting that shape.

Owns: ``ResponseTemplate`` (one learned shape), ``TemplateFit`` (the result of fitting
it to one epoch), ``TemplateBank`` (the shapes of one case, keyed by channel and site)
and ``fit_template``.
May import: numpy. Pure: no I/O, no clock; the state changes only through ``learn`` and
``reset`` (and a template being dropped, see Lifetime).

Why. Stimulating the same nerve through the same tube electrodes gives the same response
shape time after time; its size and (a little) its latency change. Once the shape is
known, the size of a response buried in noise is best measured by fitting the shape: a
least-squares fit of a known shape is the minimum-variance unbiased estimate of its
scale (the Cramér-Rao bound), where the peak-to-peak value of the noisy trace is biased
upward by the noise riding on the peaks and scatters about 1.5 times as much. The
amplitude reported stays the peak-to-peak value of the response
(``recording-exchange.md``): that of the fitted, denoised response.

Learning. A template is the least-squares common shape of the recent valid responses at
that channel and site, each aligned on its first major peak:
``S = sum(A_i y_i / s_i^2) / sum(A_i^2 / s_i^2)`` (``A_i`` the response's peak-to-peak
value, ``y_i`` the response with the background removed, ``s_i`` the noise), so a clean
response weighs far more than a noisy one; older ones fade by ``DECAY`` per learned
response. It spans ``SPAN_MS`` around the first major peak. Its own noise, in units of
its peak-to-peak value, is ``1 / sqrt(sum(A_i^2 / s_i^2))``; it is used once that is
below ``1 / MIN_TEMPLATE_SNR``. A response teaches it when it stands ``LEARN_MIN_SNR``
noise RMS out of the noise. When a response does not fit the template, or a clean one
correlates less than ``SAME_SHAPE`` with it (a new shape: temporal dispersion after
traction, or another structure under a probe tagged with the same site), the old shape
is mostly forgotten (``RESHAPE_KEEP``) and the new one takes over within a response or
two.

Fitting. In the epoch's peak waveform, ``a * S(t - tau) + background`` is fitted by
least squares (the background model of ``app.analysis.noise``); ``tau`` is found by
correlation within ``SEARCH_MS`` of the template's usual latency and refined by
Gauss-Newton. The template's own noise would bias the scale low (it adds to the
template's energy, not to its match); that expected energy is taken out. The fit is
accepted when the residual over the response is what the noise explains (a chi-square
bound), the scale is not negative, the first major peak lies inside the response window,
and the amplitude agrees with the direct peak-to-peak measurement within what the noise
allows (``AGREE_SIGMAS`` above it, ``AGREE_BELOW_SIGMAS`` below it: the direct value of
an absent response is the noise's own peak-to-peak, ~5 noise RMS); otherwise the direct measurement stands.
A response standing more than ``TEMPLATE_MAX_SNR`` noise RMS out of the noise is
measured directly (there the direct value is as good, and needs no model).

Lifetime. The bank belongs to one case: ``reset()`` empties it (a new case or
recording). A template is also dropped when stimulus time at its site goes backwards (a
new case restarts case time at zero), when the site was not measured for ``STALE_S``, or
when the sample rate changes. Untagged probe stimuli never teach or use a template (the
probe may touch anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


GRID_MS = 0.01
SPAN_MS = (-4.0, 14.0)  # template extent around its first major peak
DECAY = 0.95  # weight kept per learned response (memory of about 20 responses)
RESHAPE_KEEP = 0.25  # weight kept when a clean response has a new shape
MIN_TEMPLATE_SNR = 25.0  # peak-to-peak over the template's own noise, to be used
SAME_SHAPE = 0.9  # a clean response correlating less with the template has a new shape
TEMPLATE_MAX_SNR = 50.0  # above this direct peak-to-peak over noise, the direct measurement is as good
LEARN_MIN_SNR = 8.0  # a response teaches the template when it stands this far out of the noise
SEARCH_MS = 2.5  # latency search around the template's usual latency
SUPPORT_SHARE = 0.08  # the response's support: where the 0.5 ms mean of |S| reaches this share of its peak-to-peak
SUPPORT_MARGIN_MS = 0.75  # added on both sides of the support
TAPER_MS = 0.5  # half-cosine taper to zero outside the support
CHI2_SIGMAS = 2.5  # residual variance allowed: 1 + CHI2_SIGMAS * sqrt(2 / N) times the noise's
NOISE_SLACK = 1.1  # the noise estimate's own uncertainty (as an RMS factor)
STALE_S = 600.0  # a template not refreshed for this long is dropped
AGREE_SIGMAS = 4.0  # the template's amplitude is at most this many noise RMS above the direct one
AGREE_BELOW_SIGMAS = 7.0  # and at most this many below it (noise alone gives a direct value of ~5 RMS)
AGREE_SHARE = 0.03  # (each plus this share of the direct value)
JOINT_PENALTY = 0.3  # second-difference penalty on the background spline in the template fit (stiffer
# than when the response is left out: the template carries the fast part, the spline only the slow)


@dataclass(frozen=True)
class TemplateFit:
    """A template fitted to one epoch (times in ms from the stimulus)."""

    accepted: bool
    amplitude_uV: float  # peak-to-peak of the fitted response (scale x template peak-to-peak)
    sigma_uV: float  # its standard error
    latency_ms: float  # first major peak of the fitted response
    onset_ms: float
    max_ms: float
    min_ms: float
    shift_ms: float  # where the template's first major peak was placed
    residual_ratio: float  # residual variance over the response / noise variance
    why: str  # reason for rejection ("" when accepted)


class ResponseTemplate:
    """One learned response shape (see the module docstring).

    The shape is accumulated on the epoch's own sample grid, each response placed at the
    sample nearest its first major peak (at 5 kHz that smears a 0.4 ms phase by at most
    0.1 ms, which moves the fitted peak-to-peak value by under 0.3 %), and read on a
    0.01 ms grid band-limited (FFT) interpolated from it. Outside the response's support
    (where the smoothed shape stays under ``SUPPORT_SHARE`` of its peak-to-peak value, plus
    ``SUPPORT_MARGIN_MS``) it is tapered to zero, so the template's own noise there does
    not dilute the fit.
    """

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self.h_ms = 1000.0 / self.fs
        k0 = int(np.floor(SPAN_MS[0] / self.h_ms))
        k1 = int(np.ceil(SPAN_MS[1] / self.h_ms))
        self.offsets = np.arange(k0, k1 + 1)
        self.num = np.zeros(len(self.offsets))
        self.den = np.zeros(len(self.offsets))
        self.latency_sum = 0.0  # weighted latency of the learned responses (ms)
        self.weight_sum = 0.0
        self.learned = 0
        self.last_t_s: float | None = None  # stimulus time of the last epoch measured at this key
        self._dirty = False  # learned since the shape was last derived
        self._fine_dirty = False
        self.native_ptp = 0.0
        self.up = max(1, int(np.ceil(self.h_ms / GRID_MS)))
        self.grid = (k0 + np.arange(len(self.offsets) * self.up) / self.up) * self.h_ms
        self.shape = np.zeros(len(self.grid))
        self.slope = np.zeros(len(self.grid))
        self.noise_var = np.zeros(len(self.offsets))  # of the tapered shape, per native sample
        self.native = np.zeros(len(self.offsets))  # the tapered shape on the sample grid
        self.taper = np.zeros(len(self.offsets))
        self.ptp = 0.0
        self.first_peak_ms = 0.0
        self.onset_ms = 0.0
        self.max_ms = 0.0
        self.min_ms = 0.0
        self.support = (0.0, 0.0)
        self.phase_ms = 0.0

    @property
    def snr(self) -> float:
        """Peak-to-peak over the template's own noise (per sample)."""
        return float(np.sqrt(self.den.max())) if self.learned else 0.0

    @property
    def usual_latency_ms(self) -> float:
        return self.latency_sum / self.weight_sum if self.weight_sum > 0 else 0.0

    def usable(self, max_phase_ms: float) -> bool:
        """Known well enough to measure with."""
        if self.snr < MIN_TEMPLATE_SNR:
            return False
        self._ensure(fine=True)
        return self.snr >= MIN_TEMPLATE_SNR and self.ptp > 0 and self.phase_ms <= max_phase_ms

    def values(self, t_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shape, slope per ms) at ``t_rel`` ms from the template's reference (its first
        learned response's first major peak)."""
        s = np.interp(t_rel, self.grid, self.shape, left=0.0, right=0.0)
        d = np.interp(t_rel, self.grid, self.slope, left=0.0, right=0.0)
        return s, d

    def variance(self, t_rel: np.ndarray) -> np.ndarray:
        """The template's own noise variance at ``t_rel`` (in units of its peak-to-peak^2)."""
        return np.asarray(np.interp(t_rel, self.offsets * self.h_ms, self.noise_var, left=0.0, right=0.0))

    def _overlap(self, first: int, n: int, latency_ms: float) -> tuple[slice, slice] | None:
        """(template slice, segment slice) where a segment of ``n`` samples from index
        ``first`` overlaps the template when aligned on ``latency_ms``."""
        r0 = first - int(round(latency_ms / self.h_ms))
        lo = max(r0, int(self.offsets[0]))
        hi = min(r0 + n - 1, int(self.offsets[-1]))
        if hi <= lo:
            return None
        return slice(lo - int(self.offsets[0]), hi - int(self.offsets[0]) + 1), slice(lo - r0, hi - r0 + 1)

    def similarity(self, first: int, y: np.ndarray, latency_ms: float) -> float:
        """Correlation of a response (as for ``learn``) with the shape over the shape's
        support (1: the same shape; used to recognise a new shape in a clean response)."""
        self._ensure(fine=False)
        cut = self._overlap(first, len(y), latency_ms)
        if cut is None or self.native_ptp <= 0:
            return 0.0
        dst, src = cut
        t = self.native[dst]
        v = y[src]
        inside = self.taper[dst] > 0
        t, v = t[inside], v[inside]
        norm = float(np.sqrt(np.dot(t, t) * np.dot(v, v)))
        return float(np.dot(t, v)) / norm if norm > 0 else 0.0

    def learn(self, first: int, y: np.ndarray, latency_ms: float, amplitude_uV: float, noise_uV: float,
              *, keep: float = DECAY) -> None:
        """Add one response: ``y`` (background removed) are the samples from index ``first``
        (counted from the stimulus onset), its first major peak is at ``latency_ms``."""
        if len(y) < 4 or amplitude_uV <= 0 or not noise_uV > 0:
            return
        cut = self._overlap(first, len(y), latency_ms)
        if cut is None:
            return
        dst, src = cut
        w = (amplitude_uV / noise_uV) ** 2
        self.num *= keep
        self.den *= keep
        self.latency_sum *= keep
        self.weight_sum *= keep
        self.num[dst] += w * y[src] / amplitude_uV
        self.den[dst] += w
        self.latency_sum += w * latency_ms
        self.weight_sum += w
        self.learned += 1
        self._dirty = True

    def _ensure(self, fine: bool) -> None:
        """Derive what was learned: the tapered shape on the sample grid (cheap), and when
        ``fine`` the 0.01 ms shape, its slope, peak-to-peak value and peak times."""
        if self._dirty:
            self._derive_native()
            self._dirty = False
            self._fine_dirty = True
        if fine and self._fine_dirty:
            self._derive_fine()
            self._fine_dirty = False

    def _derive_native(self) -> None:
        covered = self.den > 0.2 * self.den.max()
        native = np.where(covered, self.num / np.where(self.den > 0, self.den, 1.0), 0.0)
        self.native_ptp = float(np.ptp(native)) if covered.sum() >= 4 else 0.0
        if self.native_ptp <= 0:
            self.native[:] = 0.0
            self.taper[:] = 0.0
            return
        taper = self._taper(native)
        self.native, self.taper = native * taper, taper
        self.noise_var = np.where(covered, taper**2 / np.where(self.den > 0, self.den, 1.0), 0.0)

    def _derive_fine(self) -> None:
        if self.native_ptp <= 0:
            self.ptp = 0.0
            return
        native = self.native
        n = len(native)
        fine = np.fft.irfft(np.fft.rfft(native), n * self.up) * self.up if self.up > 1 else native.copy()
        self.shape = fine
        self.slope = np.gradient(fine, self.grid)
        inside = np.repeat(self.taper > 0, self.up)
        self.ptp = float(fine[inside].max() - fine[inside].min())
        self.max_ms = float(self.grid[int(np.argmax(fine))])
        self.min_ms = float(self.grid[int(np.argmin(fine))])
        self.first_peak_ms, self.onset_ms, self.phase_ms = first_major_peak(self.grid, fine)

    def _taper(self, native: np.ndarray) -> np.ndarray:
        """1 over the response's support, a half-cosine to 0 over ``TAPER_MS`` outside it."""
        ptp = float(np.ptp(native))
        m = max(1, int(round(0.5 / self.h_ms)))
        c = np.concatenate(([0.0], np.cumsum(np.abs(native))))
        j = np.arange(len(native))
        env = (c[np.minimum(j + m - m // 2, len(native))] - c[np.maximum(j - m // 2, 0)]) / m
        big = np.flatnonzero(env >= SUPPORT_SHARE * ptp)
        margin = int(round(SUPPORT_MARGIN_MS / self.h_ms))
        lo, hi = max(0, big[0] - margin), min(len(native) - 1, big[-1] + margin)
        self.support = (float(self.offsets[lo] * self.h_ms), float(self.offsets[hi] * self.h_ms))
        ramp = max(1, int(round(TAPER_MS / self.h_ms)))
        k = np.arange(len(native))
        dist = np.maximum(np.maximum(lo - k, k - hi), 0)
        return np.where(dist == 0, 1.0, np.where(dist < ramp, 0.5 * (1 + np.cos(np.pi * dist / ramp)), 0.0))


def first_major_peak(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(time of the first major peak, onset time, width of its phase at half height) of a
    clean waveform ``y`` at ``t`` (definitions of ``recording-exchange.md``)."""
    a = np.abs(y)
    big = a >= 0.5 * float(a.max())
    f = int(np.argmax(big))
    sign = 1.0 if y[f] > 0 else -1.0
    signed = y * sign
    lobe = big & (signed > 0)
    tail = lobe[f:]
    run_end = len(y) if tail.all() else f + int(np.argmin(tail))
    p = f + int(np.argmax(a[f:run_end]))
    half = 0.5 * float(signed[p])
    below = np.flatnonzero(signed[:p] < half)
    lo = int(below[-1]) + 1 if len(below) else 0
    after = np.flatnonzero(signed[p:] < half)
    hi = p + int(after[0]) - 1 if len(after) else len(y) - 1
    quiet = np.flatnonzero(a[:p] <= 0.1 * a[p])
    onset = float(t[quiet[-1]]) if len(quiet) else float(t[0])
    return float(t[p]), onset, float(t[hi] - t[lo])


class TemplateBank:
    """The response templates of one case, keyed by (channel, site)."""

    def __init__(self) -> None:
        self.templates: dict[tuple[str, str], ResponseTemplate] = {}

    def reset(self) -> None:
        """Forget every template (a new case or recording)."""
        self.templates.clear()

    def get(self, key: tuple[str, str], fs: float, t_s: float) -> ResponseTemplate | None:
        """The template for ``key`` at stimulus time ``t_s`` (s), or None.

        A template is dropped when the sample rate changed (another peak waveform), when
        stimulus time went backwards (a new case restarts case time at zero) or when the
        site was last measured more than ``STALE_S`` ago.
        """
        t = self.templates.get(key)
        if t is None:
            return None
        if t.fs != float(fs) or (t.last_t_s is not None and not t.last_t_s - 1.0 <= t_s <= t.last_t_s + STALE_S):
            del self.templates[key]
            return None
        return t

    def get_or_new(self, key: tuple[str, str], fs: float, t_s: float) -> ResponseTemplate:
        t = self.get(key, fs, t_s)
        if t is None:
            t = self.templates[key] = ResponseTemplate(fs)
        return t


def fit_template(
    template: ResponseTemplate,
    t_ms: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    background: np.ndarray,
    penalty: np.ndarray,
    n_spline: int,
    *,
    bg_removed: np.ndarray,
    window_ms: tuple[float, float],
    noise_uV: float,
    peak_hz: float,
    direct_uV: float,
) -> tuple[TemplateFit, np.ndarray | None]:
    """Fit ``a * S(t - tau) + background`` to ``y`` (decimated samples at ``t_ms``).

    ``background``: the background basis at those samples (spline terms first);
    ``bg_removed``: ``y`` with a background fitted without the response (for the latency
    search). Returns the fit and the coefficients (scale, then background terms), or None
    when rejected before the final solve.
    """
    step = float(t_ms[1] - t_ms[0])
    lo_w, hi_w = window_ms
    peak0 = template.usual_latency_ms
    lags = np.arange(max(lo_w, peak0 - SEARCH_MS), min(hi_w, peak0 + SEARCH_MS) + step / 2, step)
    if len(lags) < 1:
        return _rejected("no room for the response in the window"), None
    # coarse search: the template's first major peak placed at each candidate latency
    s = np.interp(t_ms[None, :] - lags[:, None] + template.first_peak_ms, template.grid, template.shape,
                  left=0.0, right=0.0)
    s *= weights[None, :]
    energy = np.einsum("ij,ij->i", s, s)
    score = (s @ bg_removed) / np.sqrt(np.maximum(energy, 1e-12))
    j = int(np.argmax(score))
    tau = float(lags[j]) - template.first_peak_ms  # the template's reference sits at t = tau
    if score[j] <= 0:  # nothing like the response: measured at its usual latency (about 0)
        tau = peak0 - template.first_peak_ms
    elif 0 < j < len(lags) - 1:
        y0, y1, y2 = score[j - 1], score[j], score[j + 1]
        d = y0 - 2 * y1 + y2
        if d < 0:
            tau += float(np.clip(0.5 * (y0 - y2) / d, -1.0, 1.0)) * step
    solver = _Solver(background, weights, y, penalty, n_spline)
    for _ in range(4):  # Gauss-Newton on the shift, the rest linear
        sv, dv = template.values(t_ms - tau)
        coef = solver.solve(np.column_stack((sv, dv)))
        a = coef[0]
        if a <= 0:
            break  # no response to align
        dtau = float(np.clip(-coef[1] / a, -0.3, 0.3))  # y ~ a S(t - tau) - a dtau S'(t - tau)
        tau += dtau
        if abs(dtau) < 1e-3:
            break
    sv, _dv = template.values(t_ms - tau)
    var_t = template.variance(t_ms - tau)
    # errors in the template: its own noise inflates its energy; take that out (unbiased scale)
    coef, cov00 = solver.solve(sv[:, None], energy_bias=float(np.sum(weights * var_t)), with_cov=True)
    a = max(float(coef[0]), 0.0)
    resid = (y - sv * coef[0] - background @ coef[1:]) * weights
    lo_s, hi_s = tau + template.support[0], tau + template.support[1]
    over = (t_ms >= lo_s) & (t_ms <= hi_s) & (weights > 0)
    if int(over.sum()) < 3:
        return _rejected("response support outside the epoch"), None
    expected = noise_uV**2 + (a * template.ptp) ** 2 * var_t[over]
    ratio = float(np.mean(resid[over] ** 2) / np.mean(expected)) if noise_uV > 0 else np.inf
    n_eff = max(2.0, 2.0 * peak_hz * (hi_s - lo_s) / 1000.0)
    correlated = max(1.0, 1000.0 / step / (2.0 * peak_hz))  # decimated samples are not independent
    sigma = float(np.sqrt(max(cov00, 0.0) * correlated)) * noise_uV * template.ptp
    amp = a * template.ptp
    slack = AGREE_SHARE * direct_uV
    why = ""
    if ratio > NOISE_SLACK**2 * (1.0 + CHI2_SIGMAS * np.sqrt(2.0 / n_eff)):
        why = f"shape does not fit (residual {np.sqrt(ratio):.1f} x noise)"
    elif not lo_w <= tau + template.first_peak_ms < hi_w:
        why = "first major peak outside the response window"
    elif not -AGREE_BELOW_SIGMAS * noise_uV - slack <= amp - direct_uV <= AGREE_SIGMAS * noise_uV + slack:
        why = f"disagrees with the direct measurement ({amp:.0f} vs {direct_uV:.0f} uV)"
    if why:
        return _rejected(why, ratio), coef
    fit = TemplateFit(
        accepted=True, amplitude_uV=amp, sigma_uV=sigma,
        latency_ms=tau + template.first_peak_ms, onset_ms=tau + template.onset_ms,
        max_ms=tau + template.max_ms, min_ms=tau + template.min_ms, shift_ms=tau,
        residual_ratio=ratio, why="",
    )
    return fit, coef


class _Solver:
    """Weighted, penalised least squares of ``y`` on extra columns plus the background
    terms, reusing the background's normal matrix across Gauss-Newton steps."""

    def __init__(self, background: np.ndarray, w: np.ndarray, y: np.ndarray, penalty: np.ndarray, ns: int) -> None:
        self.bw = background * w[:, None]
        self.w, self.y = w, y
        self.bb = background.T @ self.bw
        self.scale = max(float(np.trace(self.bb[:ns, :ns])) / ns, 1e-12)
        self.bb = self.bb + self.scale * (JOINT_PENALTY * penalty + 1e-9 * np.eye(len(self.bb)))
        self.by = self.bw.T @ y

    def solve(self, extra: np.ndarray, *, energy_bias: float = 0.0,
              with_cov: bool = False) -> np.ndarray | tuple[np.ndarray, float]:
        m = extra.shape[1]
        ew = extra * self.w[:, None]
        k = m + len(self.bb)
        a = np.empty((k, k))
        a[:m, :m] = extra.T @ ew + 1e-9 * self.scale * np.eye(m)
        a[0, 0] = max(a[0, 0] - energy_bias, 0.5 * a[0, 0])
        a[:m, m:] = extra.T @ self.bw
        a[m:, :m] = a[:m, m:].T
        a[m:, m:] = self.bb
        b = np.concatenate((ew.T @ self.y, self.by))
        try:
            coef = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            coef = np.zeros(k)
            return (coef, np.inf) if with_cov else coef
        if not with_cov:
            return coef
        e0 = np.zeros(k)
        e0[0] = 1.0
        return coef, float(np.linalg.solve(a, e0)[0])


def _rejected(why: str, ratio: float = np.nan) -> TemplateFit:
    nan = float("nan")
    return TemplateFit(False, nan, nan, nan, nan, nan, nan, nan, ratio, why)
