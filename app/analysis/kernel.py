"""The compiled second-order-section filter behind ``scipy.signal.sosfilt``, for short blocks.

Owns: ``SOSFILT`` (the kernel, or None) and ``Kernel``.
May import: numpy, scipy.signal.

Pure: no threads, clocks or I/O. ``sosfilt`` checks and reshapes its arguments on every
call, which costs more than the filtering itself on the blocks the live analysis filters
(a 60 ms epoch, a 0.1 s stream block). The kernel it calls filters C-ordered float64 rows
in place: ``SOSFILT(sos, x, zi)`` with ``sos`` ``(sections, 6)``, ``x`` ``(rows, n)`` and
``zi`` ``(rows, sections, 2)`` (both changed in place: the filtered rows and the final
state). It is used only when this scipy has it and it gives exactly what ``sosfilt``
gives (checked once at import); otherwise ``SOSFILT`` is None and the callers use
``sosfilt``, with the same results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal as sps

Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _load_kernel() -> Kernel | None:
    """The compiled kernel behind ``scipy.signal.sosfilt`` (filters C-ordered float64 rows
    in place), when this scipy has it and it gives exactly what ``sosfilt`` gives; else
    None and the public function is used. ``sosfilt`` itself spends most of its time on a
    0.1 s block checking and reshaping its arguments (about 40 of 65 µs)."""
    try:
        from scipy.signal._sosfilt import _sosfilt as kernel
    except ImportError:  # pragma: no cover - another scipy
        return None
    sos = np.vstack([sps.butter(4, 0.01, btype="highpass", output="sos"), sps.butter(2, 0.2, output="sos")])
    x = np.sin(np.arange(2 * 64, dtype=np.float64) * 0.7).reshape(2, 64) * 100.0
    zi = np.cos(np.arange(sos.shape[0] * 2 * 2, dtype=np.float64)).reshape(sos.shape[0], 2, 2)
    want, want_zf = sps.sosfilt(sos, x, axis=1, zi=zi)
    y, zf = x.copy(), np.ascontiguousarray(zi.transpose(1, 0, 2))
    try:
        kernel(np.ascontiguousarray(sos), y, zf)
    except (TypeError, ValueError):  # pragma: no cover - another signature
        return None
    if not (np.array_equal(y, want) and np.array_equal(zf.transpose(1, 0, 2), want_zf)):
        return None  # pragma: no cover - another kernel
    return kernel


SOSFILT = _load_kernel()
