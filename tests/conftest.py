"""Test-wide environment: no display or sound card needed, Kivy kept in a temp home."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")
if "KIVY_HOME" not in os.environ:
    os.environ["KIVY_HOME"] = tempfile.mkdtemp(prefix="lnm-kivy-")
    atexit.register(shutil.rmtree, os.environ["KIVY_HOME"], ignore_errors=True)
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", deadline=None, derandomize=True, max_examples=100)
_hyp_settings.register_profile("dev", deadline=None)
_hyp_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001 - pytest's hook signature
    """Under ``make test`` as root (``LNM_REQUIRE_TOOLS=1``: the Makefile has installed the
    system packages), a test skipped because a tool "is not installed" fails instead: a
    broken installation must not pass as a skipped test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _tools_required() and "not installed" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"required system tool missing under make test: {report.longrepr}"


def _tools_required() -> bool:
    return os.environ.get("LNM_REQUIRE_TOOLS") == "1"
