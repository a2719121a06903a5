"""Fixtures of the record tests: a synthetic case journal made once per session."""

from __future__ import annotations

import pytest

import sys

import synthetic_case
from app.record import Journal
from synthetic_case import write_case

# IN FLIGHT: REMOVE WHEN MERGED. test_record_edf.py, being rewritten on another branch,
# still imports the fixture case from its former place in the product
# (``from app.record.synthetic import response``); once it imports ``synthetic_case``,
# delete these lines.
sys.modules.setdefault("app.record.synthetic", synthetic_case)


@pytest.fixture(scope="session")
def synthetic_journal(tmp_path_factory):
    """(path, case_id) of a 30-minute synthetic case with waveforms and 60 s of stream."""
    path = tmp_path_factory.mktemp("synthetic") / "journal.db"
    with Journal(path, durable=False) as j:
        case_id, _n = write_case(j, duration_s=1800.0, seed=7, emg=(700.0, 760.0))
    return path, case_id
