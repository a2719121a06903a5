"""The reading station in a real headless Chromium (Selenium, Debian's chromium-driver),
against a real broker (TLS, passwords, the shipped ACL) and engines on the virtual board:
login required, tiles appear, an alarm shows, a message reaches the touchscreen's inbox and
the journal and its acknowledgement comes back, an unassigned OR is invisible."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

import pytest

from app.api.client import EngineClient
from app.station.auth import verify_audit_log
from remote_accounts import READERS
from waiting import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="chromium and chromium-driver are not installed ('make test' installs them as root)"),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def login(driver, base, user, password):
    from selenium.webdriver.common.by import By

    driver.get(base + "login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-button").click()


def visible(driver, css):
    """How many elements match ``css`` and are shown (asked in the page: the app redraws often)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(e => e.offsetParent !== null).length", css)


def text(driver, css):
    """The shown text of the first element matching ``css`` ("" when there is none)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def click(driver, css):
    driver.execute_script("document.querySelector(arguments[0]).click()", css)


def test_login_is_required_and_wrong_passwords_are_refused(station, browser):
    base = station.url
    browser.get(base)
    assert browser.current_url.endswith("/login")
    for path in ("api/me", "api/stream", "api/or/or-1/case"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + path, timeout=5)
        assert err.value.code == 401
    login(browser, base, "anna.rossi", "wrong password!")
    # the form posts and the page is replaced: asked in the page until the new one is there
    assert wait_until(lambda: "Wrong user name or password" in text(browser, "#login-error"), 10)
    assert browser.current_url.endswith("/login")
    login(browser, base, "anna.rossi", READERS["anna.rossi"][0])
    assert wait_until(lambda: visible(browser, '.tile[data-or="or-1"]'), 10)
    log = station.station.audit.path

    def actions():
        return [json.loads(line)["action"] for line in log.read_text().splitlines()]

    assert wait_until(lambda: "view" in actions(), 10), actions()  # the live stream opened: a view
    assert actions()[:2] == ["login_failed", "login"]
    ok, _lines, problem = verify_audit_log(log)
    assert ok, problem


def test_tiles_alarm_message_and_only_assigned_ors(station, browser, broker, engines):
    from selenium.webdriver.common.by import By

    or1 = engines(broker, "or-1")
    or3 = engines(broker, "or-3")  # assigned to ben.kim only
    case1 = or1.call("case.start", patient_id="PSEUDO-1", planned_sides=["L"], procedure="left lobectomy")["case_id"]
    or3.call("case.start", patient_id="SECRET-3", planned_sides=["R"], procedure="not for anna")
    or1.call("sim.control", command="aps_attach", args={"side": "L"})
    or1.call("stim.set", output="aps", rate_hz=10.0)
    or1.call("stim.output", output="aps", on=True)

    base = station.url
    login(browser, base, "anna.rossi", READERS["anna.rossi"][0])
    assert wait_until(lambda: visible(browser, '.tile[data-or="or-1"]') and visible(browser, '.tile[data-or="or-2"]'),
                      15)
    tile = '.tile[data-or="or-1"]'
    assert wait_until(lambda: "PSEUDO-1" in text(browser, tile) and "online" in text(browser, tile), 15), \
        text(browser, tile)
    # an OR not assigned to this reader does not exist for her, in the page or the API
    assert not browser.find_elements(By.CSS_SELECTOR, '.tile[data-or="or-3"]')
    assert "SECRET-3" not in browser.page_source
    status = browser.execute_script(
        "return fetch('/api/or/or-3/case', {credentials: 'same-origin'}).then(r => r.status)")
    assert status == 404
    # or-2 has no appliance running: its tile says so instead of showing old numbers
    assert wait_until(lambda: "no data" in text(browser, '.tile[data-or="or-2"]'), 10)
    # live values arrive
    amp = tile + ' .side[data-side="L"] .amp'
    assert wait_until(lambda: " uV" in text(browser, amp) and "-" not in text(browser, amp), 20), text(browser, amp)

    assert wait_until(lambda: or1.call("state.get")["aps"]["L"]["baseline_uV"] is not None, 20)
    # an alarm at the OR shows on the tile, with its acknowledgement state
    t0 = time.monotonic()
    or1.call("sim.control", command="lead", args={"electrode": "L_POS", "state": "off"})
    assert wait_until(lambda: visible(browser, '.tile[data-or="or-1"] [data-alarm-id^="lead_off"]'), 10)
    shown_after = time.monotonic() - t0
    alarm = tile + ' [data-alarm-id^="lead_off"]'
    assert "NOT acknowledged" in text(browser, alarm)
    assert shown_after < 5.0  # generous: the benchmark measures the real figure (bench/remote.py)
    # this alarm by its id: on a loaded machine another (a stall of the 10 Hz vagal epochs)
    # may be on top, and alarm.ack alone acknowledges the top one
    lead = [a["id"] for a in or1.call("state.get")["alarms"]["active"] if a["id"].startswith("lead_off")]
    assert or1.call("alarm.ack", alarm=lead[0])["alarm"] == lead[0]
    assert wait_until(lambda: "acknowledged by" in text(browser, alarm), 10), text(browser, alarm)
    or1.call("sim.control", command="lead", args={"electrode": "L_POS", "state": "ok"})

    # the focus view: events, the trend, a stimulus explored over its baseline
    click(browser, tile)
    assert wait_until(lambda: visible(browser, "#focus") and "Case opened" in text(browser, "#f-events"), 15)
    assert wait_until(lambda: visible(browser, "#f-stimuli tbody tr") > 25, 15)
    click(browser, "#f-stimuli tbody tr")
    assert wait_until(lambda: "over the baseline" in text(browser, "#f-stim-title"), 15), text(browser, "#f-stim-title")

    # a message to the OR: the touchscreen's inbox and the journal have it, the nurse
    # acknowledges, and the station shows that
    box = browser.find_element(By.ID, "f-text")
    box.send_keys("vagal amplitude 45 %: please release retraction")
    browser.find_element(By.ID, "f-send-button").click()
    result = "#f-send-result"
    assert wait_until(lambda: "waiting for the OR" in text(browser, result), 10), text(browser, result)
    touchscreen = EngineClient(or1.service.config.socket_path, name="ui", timeout_s=10.0)
    touchscreen.connect()
    touchscreen.subscribe(["inbox"])  # what the touchscreen's banner shows
    inbox = {}

    def unacknowledged():
        for msg in touchscreen.poll():
            if msg.get("type") == "inbox":
                inbox.update(msg)
        return [x for x in inbox.get("messages", []) if not x["acknowledged"]]

    assert wait_until(unacknowledged, 10)
    msg = unacknowledged()[0]
    assert inbox["case_id"] == case1
    assert msg["from"] == "Dr Anna Rossi" and msg["reader"] == "anna.rossi" and "release retraction" in msg["text"]
    from app.record.journal import Journal

    def journaled():  # handed to the journal writer before it was shown; on the disk a moment later
        with Journal(or1.data / "journal.db", readonly=True) as j:
            return [e.payload for e in j.entries(case1, kinds=["reader_message"], blobs=False)]

    entries = wait_until(journaled, 10)
    assert entries and entries[0]["event"] == "received" and entries[0]["reader"] == "anna.rossi"
    assert wait_until(lambda: "not yet acknowledged" in text(browser, "#f-messages"), 10)
    result = touchscreen.call("inbox.ack")
    assert result["acknowledged"] == [msg["id"]]
    assert wait_until(lambda: not unacknowledged(), 10)
    touchscreen.close()
    assert wait_until(lambda: "acknowledged by" in text(browser, "#f-messages"), 10)
    log = [json.loads(line) for line in station.station.audit.path.read_text().splitlines()]
    assert any(r["action"] == "message" and r["or"] == "or-1" and r["detail"]["sent"] for r in log)
    assert any(r["action"] == "view" and r["detail"].get("what") == "stimulus" for r in log)
    assert any(r["action"] == "denied" and r["or"] == "or-3" for r in log)
    assert verify_audit_log(station.station.audit.path)[0]
