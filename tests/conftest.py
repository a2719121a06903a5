"""Test-wide environment: no display or sound card needed, Kivy kept in a temp home."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

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
