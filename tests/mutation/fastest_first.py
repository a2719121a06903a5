"""pytest plugin of the mutation runs (``tests/mutation/run.py``): the tests picked for a
mutant run fastest first.

mutmut stops a mutant's tests at the first failure (``-x``) but runs them in file order, so
a mutant that a 0.1 s test kills can first wait for a 15 s statistical test in an earlier
file. Ordering by the durations mutmut measured (``mutmut-stats.json`` in the working folder,
``mutants/``) changes how soon a mutant is killed, not whether: every picked test still runs
when none fails. Tests without a measured duration run first, in their own order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _durations() -> dict[str, float]:
    try:
        stats = json.loads(Path("mutmut-stats.json").read_text())
    except (OSError, ValueError):
        return {}
    found = stats.get("duration_by_test") if isinstance(stats, dict) else None
    return {str(k): float(v) for k, v in found.items()} if isinstance(found, dict) else {}


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    """Sort the collected tests by their measured duration (stable: ties keep file order)."""
    durations = _durations()
    if durations:
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
