"""The web console at /console/, driven in a real headless Chromium (selenium + chromedriver):
sign-in (app secret and operator token), the pushes list and a push's funnel moving as real
WebSocket devices ack and click, the send form with errors next to their field, device search,
a dead-lettered callback batch replayed, recall; cookie flags, nothing secret in the page's
storage, no browser console errors, at 1400x900 and at a phone's 390x844. Plus the console
API's answers to bad input over plain HTTP.

With PIGEON_SCREENSHOTS=<dir> (e.g. docs/console) the main pages are saved there as PNGs."""

import json
import os
import shutil
import tempfile
import time

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import Device, Server
from test_callbacks import Receiver

TOKEN = "operator-token-for-tests-0123456789"
ENV = {"PIGEON_CONSOLE_TOKEN": TOKEN, "PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS": "true",
       "PIGEON_CALLBACKS_BATCH_WAIT_MS": "100", "PIGEON_CALLBACKS_RETRY_FIRST_MS": "20",
       "PIGEON_CALLBACKS_DEAD_AFTER_S": "1"}
SHOTS = os.environ.get("PIGEON_SCREENSHOTS")
CSRF = {"X-Pigeon-Console": "1"}


def _binary(*names):
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return None


CHROMIUM = _binary("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _binary("chromedriver")


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env=ENV)
        s.start()
        yield s
        s.stop()


def make_driver(width, height):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_window_size(width, height)
    return driver


def severe_logs(driver, allowed=()):
    """Browser console entries at SEVERE, except the expected failed calls in `allowed`
    (substrings, e.g. the 401 of a wrong secret, which Chromium logs as a failed resource)."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def wait(driver, check, limit=10, what="condition"):
    try:
        return WebDriverWait(driver, limit, poll_frequency=0.1, ignored_exceptions=(
            StaleElementReferenceException, NoSuchElementException)).until(lambda d: check(d))
    except Exception as e:  # noqa: BLE001 - name what was waited for
        raise AssertionError(f"waited {limit} s for {what}: {e}") from None


def el(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css)


def visible(driver, css):
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None
    except StaleElementReferenceException:  # the page redrew it meanwhile: look again
        return None


def shot(driver, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        time.sleep(0.3)
        driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def value_of(driver, scope, bar):
    try:
        return el(driver, f'{scope} [data-value="{bar}"]').text
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def fits_width(driver):
    return driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1")


def sign_in_app(driver, base, app):
    driver.get(base + "/console/")
    wait(driver, lambda d: visible(d, "#app_key"), what="the sign-in form")
    el(driver, "#app_key").send_keys(app["app_key"])
    el(driver, "#master_secret").send_keys(app["master_secret"])
    el(driver, "#sign-in").click()
    wait(driver, lambda d: visible(d, "#push-list"), what="the pushes page")


def admin(server, app, method, path, body=None):
    return requests.request(method, server.base + path, auth=(app["app_key"], app["master_secret"]),
                            data=None if body is None else json.dumps(body), timeout=5)


def test_bad_input_gets_json_errors(server):
    base = server.base + "/console/api"
    r = requests.get(base + "/pushes", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized"
    r = requests.get(base + "/pushes", cookies={"pigeon_console": "ab" * 32}, timeout=5)
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/json")
    r = requests.get(base + "/session", timeout=5)
    assert r.status_code == 200 and r.json() == {"signed_in": False, "operator_enabled": True}
    # State-changing calls need the CSRF header, signed in or not.
    r = requests.post(base + "/session", json={"token": TOKEN}, timeout=5)
    assert r.status_code == 403 and r.json()["error"]["kind"] == "csrf"
    r = requests.post(base + "/pushes", json={}, timeout=5)
    assert r.status_code == 403
    r = requests.post(base + "/session", data=b"{" + b" " * 70_000 + b"}", headers=CSRF, timeout=5)
    assert r.status_code == 413 and r.json()["error"]["kind"] == "too_large"
    r = requests.post(base + "/session", data=b"{nope", headers=CSRF, timeout=5)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = requests.post(base + "/session", json=[1], headers=CSRF, timeout=5)
    assert r.status_code == 400
    r = requests.post(base + "/session", json={"app_key": "x"}, headers=CSRF, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "master_secret"
    assert requests.get(base + "/nothing-here", timeout=5).status_code == 404
    r = requests.put(base + "/pushes", headers=CSRF, timeout=5)
    assert r.status_code == 405 and r.headers["Content-Type"].startswith("application/json")
    # Signed in as operator: calls about an app wait until one is picked; bad ids are JSON.
    s = requests.Session()
    r = s.post(base + "/session", json={"token": TOKEN}, headers=CSRF, timeout=5)
    assert r.status_code == 200 and r.json()["kind"] == "operator"
    assert s.get(base + "/pushes", timeout=5).status_code == 409
    r = s.put(base + "/session/app", json={"app_key": "none"}, headers=CSRF, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["field"] == "app_key"
    app = server.create_app("bad-input")
    assert s.put(base + "/session/app", json={"app_key": app["app_key"]}, headers=CSRF, timeout=5).ok
    assert s.get(base + "/pushes/abc", timeout=5).status_code == 400
    assert s.get(base + "/pushes/123", timeout=5).status_code == 404
    assert s.get(base + "/pushes?limit=100000", timeout=5).status_code == 400
    r = s.get(base + "/devices?by=nope&q=x", timeout=5)
    assert r.status_code == 400 and r.json()["error"]["field"] == "by"
    assert s.get(base + "/devices?q=" + "x" * 300, timeout=5).status_code == 400
    assert s.post(base + "/callbacks/1/dead/x/replay", headers=CSRF, timeout=5).status_code == 404
    # The page: served from the binary with a CSP.
    page = requests.get(server.base + "/console/", timeout=5)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script type="module" src="/console/app.js">' in page.text
    assert requests.get(server.base + "/console/app.js", timeout=5).headers["Content-Type"].startswith("text/javascript")
    # Signed out: the session is gone.
    assert s.delete(base + "/session", headers=CSRF, timeout=5).ok
    assert s.get(base + "/pushes", timeout=5).status_code == 401


def test_sign_in_attempts_are_rate_limited():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env=ENV)
        s.start()
        try:
            codes = [requests.post(s.base + "/console/api/session", json={"token": "wrong"},
                                   headers=CSRF, timeout=5).status_code for _ in range(12)]
            assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        finally:
            s.stop()


def test_console_in_a_browser(server):
    app = server.create_app("console")
    rcv = Receiver()
    rcv.answers = ["500"] * 100000
    r = admin(server, app, "POST", "/v3/callbacks",
              {"url": rcv.url, "commands": ["Push.Accepted"], "basic_auth": False})
    assert r.status_code == 200, r.text
    endpoint = r.json()["id"]
    time.sleep(1.2)  # the dispatcher picks the endpoint up
    a = Device(server, app["app_key"], tags=["vip"], alias="alice")
    b = Device(server, app["app_key"], tags=["vip"], alias="bob")
    driver = make_driver(1400, 900)
    try:
        driver.get(server.base + "/console/")
        wait(driver, lambda d: visible(d, "#app_key"), what="the sign-in form")
        # A wrong secret: a clear error on the page.
        el(driver, "#app_key").send_keys(app["app_key"])
        el(driver, "#master_secret").send_keys("not-the-secret")
        el(driver, "#sign-in").click()
        err = wait(driver, lambda d: visible(d, "#sign-in-error"), what="the sign-in error")
        assert "wrong app_key or master_secret" in err.text
        el(driver, "#master_secret").clear()
        el(driver, "#master_secret").send_keys(app["master_secret"])
        el(driver, "#sign-in").click()
        wait(driver, lambda d: visible(d, "#push-list"), what="the pushes page")

        cookie = driver.get_cookie("pigeon_console")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/console" and len(cookie["value"]) == 64 and "expiry" in cookie
        stored = driver.execute_script(
            "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])")
        assert app["master_secret"] not in stored and cookie["value"] not in stored
        assert json.loads(stored)[:2] == [[], []]

        # The form: errors next to their field, then a push to the two devices.
        driver.get(server.base + "/console/#/send")
        wait(driver, lambda d: visible(d, "#send-form"), what="the send form")
        Select(el(driver, "#audience_kind")).select_by_value("tag")
        el(driver, "#send").click()
        e = wait(driver, lambda d: visible(d, "#error-audience"), what="the audience error")
        assert "audience.tag" in e.text
        el(driver, "#audience_values").send_keys("vip")
        el(driver, "#alert").send_keys("Hello from the console")
        el(driver, "#title").send_keys("Hi")
        el(driver, "#time_to_live").send_keys("-5")
        el(driver, "#send").click()
        e = wait(driver, lambda d: visible(d, "#error-time_to_live"), what="the time_to_live error")
        assert "time_to_live" in e.text
        assert el(driver, "#time_to_live").get_attribute("aria-invalid") == "true"
        assert not visible(driver, "#error-audience")
        shot(driver, "send")
        el(driver, "#time_to_live").clear()
        el(driver, "#time_to_live").send_keys("600")
        el(driver, "#send").click()
        link = wait(driver, lambda d: visible(d, "#sent-link"), what="the sent push")
        msg_id = link.text.split()[-1]

        # Its page: targeted 2, nothing delivered until the devices ack.
        link.click()
        wait(driver, lambda d: visible(d, "#push-page [data-value=targeted]"), what="the push page")
        assert value_of(driver, "#push-page", "targeted") == "2"
        assert value_of(driver, "#push-page", "delivered").startswith("0")
        for d in (a, b):
            assert [p["msg_id"] for p in d.pushes(1)] == [msg_id]
        wait(driver, lambda d: value_of(d, "#push-page", "delivered") == "2 (100%)",
             what="delivered 2")
        a.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
        wait(driver, lambda d: value_of(d, "#push-page", "clicked") == "1 (50%)", what="clicked 1")
        page = el(driver, "#push-page").text
        assert "Pigeon connection: 2 delivered of 2 sent" in page
        assert "Hello from the console" in page and "Accepted" in page and "Expires" in page
        shot(driver, "push")

        # The list, newest first, with the funnel drawn.
        driver.get(server.base + "/console/#/pushes")
        card = wait(driver, lambda d: visible(d, f'#push-list [data-msg-id="{msg_id}"]'), what="the push in the list")
        assert card.find_elements(By.CSS_SELECTOR, "svg.funnel rect[data-bar=delivered]")
        wait(driver, lambda d: value_of(d, f'[data-msg-id="{msg_id}"]', "clicked") == "1 (50%)", what="the list's funnel")
        shot(driver, "pushes")

        # Devices: by alias, then by tag.
        driver.get(server.base + "/console/#/devices")
        Select(wait(driver, lambda d: visible(d, "#device-by"), what="the device search")).select_by_value("alias")
        el(driver, "#device-q").send_keys("alice")
        el(driver, "#device-find").click()
        dev = wait(driver, lambda d: visible(d, f'[data-rid="{a.registration_id}"]'), what="alice's device")
        assert "Online now" in dev.text and "vip" in dev.text and "android" in dev.text
        Select(el(driver, "#device-by")).select_by_value("tag")
        el(driver, "#device-q").clear()
        el(driver, "#device-q").send_keys("vip")
        el(driver, "#device-find").click()
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".device")) == 2, what="two vip devices")
        shot(driver, "devices")

        # Callbacks: the batch of Push.Accepted dies (the receiver fails), then is replayed.
        deadline = time.time() + 15
        while not admin(server, app, "GET", f"/v3/callbacks/{endpoint}/dead").json()["dead"]:
            assert time.time() < deadline, "the batch was never dead-lettered"
            time.sleep(0.2)
        driver.get(server.base + "/console/#/callbacks")
        button = wait(driver, lambda d: visible(d, "button.replay"), what="a replay button")
        assert "Failing" in el(driver, f'[data-endpoint="{endpoint}"]').text
        shot(driver, "callbacks")
        tries = len(rcv.requests)
        rcv.answers = []
        button.click()
        wait(driver, lambda d: "Replaying" in el(d, "#replay-status").text, what="the replay")
        assert rcv.wait(lambda: len(rcv.requests) > tries)
        assert json.loads(rcv.requests[-1]["body"])["Events"][0]["MsgId"] == msg_id
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "button.replay"), what="no dead letters")

        # An A/B test with a push to it, drawn per variant.
        r = admin(server, app, "POST", "/v3/abtests", {
            "name": "spring", "audience": {"tag": ["vip"]}, "control_weight": 0,
            "variants": [{"name": "A", "weight": 50, "notification": {"alert": "20% off"}},
                         {"name": "B", "weight": 50, "notification": {"alert": "Spring sale"}}]})
        assert r.status_code == 200, r.text
        r = admin(server, app, "POST", "/v3/push", {"platform": "all", "audience": {"abtest": [r.json()["abtest_id"]]},
                                                    "notification": {"alert": "x"}})
        assert r.status_code == 200, r.text
        for d in (a, b):
            d.pushes(1)
        driver.get(server.base + "/console/#/abtests")
        wait(driver, lambda d: visible(d, ".abtest svg.funnel"), what="the A/B test")
        wait(driver, lambda d: "Leader:" in el(d, ".abtest .leader").text or d.refresh(), limit=8, what="a leader")
        shot(driver, "abtest")

        # A geofence drawn, and the other pages load without errors.
        r = admin(server, app, "POST", "/v3/geofences", {"name": "Mall", "lat": 31.2304, "lon": 121.4737,
                                                         "radius_m": 250, "events": ["enter"]})
        assert r.status_code == 200, r.text
        driver.get(server.base + "/console/#/geofences")
        wait(driver, lambda d: visible(d, "svg.plot circle[data-fence]"), what="the geofence plot")
        driver.get(server.base + "/console/#/vendors")
        assert len(wait(driver, lambda d: visible(d, "#vapid"), what="vendors").text) > 40
        for view in ("schedules", "segments"):
            driver.get(server.base + f"/console/#/{view}")
            wait(driver, lambda d: visible(d, "h1") and view in d.find_element(By.TAG_NAME, "h1").text.lower(), what=view)

        # Recall from the push's page.
        driver.get(server.base + f"/console/#/push/{msg_id}")
        wait(driver, lambda d: visible(d, "#recall"), what="the recall button").click()
        driver.switch_to.alert.accept()
        wait(driver, lambda d: "Recalled" in el(d, "#recall-status").text, what="the recall")
        wait(driver, lambda d: "Recalled" in el(d, ".timeline").text, what="the recall in the timeline")
        assert fits_width(driver)

        # Sign out: back to the sign-in form, and the cookie no longer works.
        el(driver, "#sign-out").click()
        wait(driver, lambda d: visible(d, "#sign-in-form"), what="the sign-in form again")
        assert requests.get(server.base + "/console/api/pushes", timeout=5,
                            cookies={"pigeon_console": cookie["value"]}).status_code == 401

        allowed = ("/console/api/session - Failed to load resource: the server responded with a status of 401",
                   "/console/api/pushes - Failed to load resource: the server responded with a status of 400")
        assert severe_logs(driver, allowed) == []
    finally:
        driver.quit()
        rcv.close()
        a.close()
        b.close()


def test_operator_on_a_phone(server):
    app = server.create_app("phone")
    d = Device(server, app["app_key"], alias="carol")
    r = admin(server, app, "POST", "/v3/push", {"platform": "all", "audience": "all",
                                                "notification": {"alert": "to the phone"}})
    assert r.status_code == 200, r.text
    msg_id = r.json()["msg_id"]
    d.pushes(1)
    driver = make_driver(390, 844)
    try:
        driver.get(server.base + "/console/")
        wait(driver, lambda d: visible(d, "#tab-operator"), what="the operator tab").click()
        el(driver, "#token").send_keys(TOKEN)
        el(driver, "#sign-in").click()
        wait(driver, lambda d: visible(d, f'[data-app="{app["app_key"]}"]'), what="the app picker").click()
        card = wait(driver, lambda d: visible(d, f'[data-msg-id="{msg_id}"]'), what="the app's push")
        wait(driver, lambda d: value_of(d, f'[data-msg-id="{msg_id}"]', "delivered") == "1 (100%)", what="delivered")
        assert card.find_elements(By.CSS_SELECTOR, "svg.funnel")
        assert fits_width(driver)
        shot(driver, "phone-pushes")
        driver.get(server.base + f"/console/#/push/{msg_id}")
        wait(driver, lambda d: visible(d, "#recall"), what="the push page")
        assert fits_width(driver)
        driver.get(server.base + "/console/#/devices")
        wait(driver, lambda d: visible(d, "#device-q"), what="devices").send_keys(d.registration_id)
        el(driver, "#device-find").click()
        wait(driver, lambda dr: visible(dr, f'[data-rid="{d.registration_id}"]'), what="the device")
        assert fits_width(driver)
        stored = driver.execute_script("return JSON.stringify([localStorage.length, sessionStorage.length])")
        assert stored == "[0,0]" and TOKEN not in driver.page_source
        assert severe_logs(driver) == []
    finally:
        driver.quit()
        d.close()


def test_a_push_keeps_its_split_by_channel_across_a_restart():
    """What each channel carried is checkpointed with the push: after a restart the push's
    page still splits it by channel (here: Pigeon's connection), not "not recorded"."""
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env=ENV)
        s.start()
        try:
            app = s.create_app("channels")
            d = Device(s, app["app_key"], tags=["ch"])
            r = admin(s, app, "POST", "/v3/push", {"platform": "all", "audience": {"tag": ["ch"]},
                                                   "notification": {"alert": "kept"}})
            assert r.status_code == 200, r.text
            msg_id = r.json()["msg_id"]
            assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]  # acked by pushes()
            d.close()
            time.sleep(0.5)  # the ack's checkpoint (every 100 ms)
            s.stop()
            s.start()
            session = requests.Session()
            r = session.post(s.base + "/console/api/session", headers={"X-Pigeon-Console": "1"},
                             json={"app_key": app["app_key"], "master_secret": app["master_secret"]},
                             timeout=5)
            assert r.status_code == 200, r.text
            one = session.get(f"{s.base}/console/api/pushes/{msg_id}", timeout=5).json()
            assert one["channels"] == [{"channel": "pigeon", "sent": 1, "delivered": 1}], one
            listed = session.get(s.base + "/console/api/pushes", timeout=5).json()
            mine = [p for p in listed["pushes"] if p["msg_id"] == msg_id]
            assert mine and mine[0]["channels"] == one["channels"], listed
        finally:
            s.stop()
