"""``lnm station --demo``: one command gives a broker, three virtual ORs running different
scenarios and the station; a reader logs in and sees all three live; Ctrl-C stops it all."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from app.remote.mosquitto import find_mosquitto
from waiting import LineReader, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(180), pytest.mark.slow,
              pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (Debian package "
                                 "mosquitto; 'make run' installs it)")]


def test_demo_starts_three_live_ors_and_ctrl_c_stops_everything():
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "station", "--demo"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = LineReader(proc.stdout)
    try:
        password = re.search(r"password (\S+)", out.expect("Log in as demo.reader", 60)).group(1)
        url = re.search(r"open (http://\S+)", out.expect("LNM reading station: open", 30)).group(1)
        folder = Path(re.search(r"Files in (\S+) \(removed", "".join(out.lines)).group(1))
        assert folder.is_dir()
        jar = http.cookiejar.CookieJar()
        web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        web.open(url + "login", data=urllib.parse.urlencode({"username": "demo.reader", "password": password})
                 .encode(), timeout=20)
        me = json.load(web.open(url + "api/me", timeout=10))
        assert me["ors"] == ["or-1", "or-2", "or-3"]

        def cases():
            got = {}
            for o in me["ors"]:
                view = json.load(web.open(url + f"api/or/{o}/case", timeout=10))
                if view["state"] and view["state"].get("case") and view["events"]:
                    got[o] = view["state"]["case"]["procedure"]
            return got if len(got) == 3 else None

        got = wait_until(cases, 90)
        assert got, "three ORs with a case open"
        assert len(set(got.values())) >= 2  # different scenarios
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0, out.text()
    assert not folder.exists()  # everything it made is gone
    left = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
    assert not left, "engines or the broker of the demonstration still running"
