"""Fixtures of the record tests: a synthetic case journal made once per session."""

from __future__ import annotations

import pytest

from app.record import Journal
from app.record.synthetic import write_case


@pytest.fixture(scope="session")
def synthetic_journal(tmp_path_factory):
    """(path, case_id) of a 30-minute synthetic case with waveforms and 60 s of stream."""
    path = tmp_path_factory.mktemp("synthetic") / "journal.db"
    with Journal(path, durable=False) as j:
        case_id, _n = write_case(j, duration_s=1800.0, seed=7, emg=(700.0, 760.0))
    return path, case_id
