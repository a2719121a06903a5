"""Helpers for the EDF+ reader tests: a hand-made file that must be refused, and how."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.analysis.edf import RecordingError, read_edf


def assert_refused(folder: Path, data: bytes, problem: str) -> None:
    """``data`` written to a file in ``folder`` is refused with exactly "<file>: <problem>"."""
    path = folder / "r.edf"
    path.write_bytes(data)
    with pytest.raises(RecordingError) as e:
        read_edf(path)
    assert str(e.value) == f"{path}: {problem}"
