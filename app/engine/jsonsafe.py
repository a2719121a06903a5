"""JSON-safe copies of the engine's values for the journal, the API and the record.

Owns: ``plain`` (enums to values, numpy to Python, tuples to lists, NaN to None) and
``rnd`` (a rounded finite float, or None).
May import: the standard library and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """JSON-safe copy (enums to values, numpy to Python, tuples to lists, NaN to None)."""
    if isinstance(value, Mapping):
        return {str(getattr(k, "value", k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def rnd(x: float | None, nd: int = 3) -> float | None:
    """``x`` rounded to ``nd`` places; None for None, NaN and infinities."""
    return None if x is None or not math.isfinite(x) else round(float(x), nd)
