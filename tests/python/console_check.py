"""The operator console in a real headless Chromium, driven by Selenium.

Usage: console_check.py HERALD_URL PROJECT FOREIGN_TOPIC SHOTS_DIR MAX_SERVER_MS

Runs against a Herald in auth_mode = noauth and a real webhook receiver started here
(its answer can be switched between 200 and 400). Every check raises on failure; the
last line printed is "all console checks passed". Screenshots go to SHOTS_DIR.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, PROJECT, FOREIGN_TOPIC, SHOTS = sys.argv[1:5]
# Every page may take at most this long on the server (its Server-Timing header).
MAX_SERVER_MS = float(sys.argv[5])
TOPIC = "console-demo"
XSS_META = "<script>alert('xss-meta')</script>"
XSS_IMG = "<img src=x onerror=\"alert('xss-img')\">"
XSS_BODY = "<script>alert('xss-body')</script>"



def gone(element):
    """True once the page that held `element` was replaced.

    Chromium answers a node of a document being torn down either with a stale
    element error or, mid-navigation, with an inspector error ("Node with given
    id does not belong to the document"); both mean the old page is gone.
    """
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True

class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: records every POST body, answers the current status."""

    status = 200
    bodies = []
    lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        with Receiver.lock:
            Receiver.bodies.append((Receiver.status, body))
        self.send_response(Receiver.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def received_ok(marker):
    with Receiver.lock:
        return any(s < 300 and marker in b for s, b in Receiver.bodies)


def received_any(marker):
    with Receiver.lock:
        return any(marker in b for _, b in Receiver.bodies)


def eventually(what, check, timeout=30.0, every=0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def chromium():
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="herald-console-chromium-")
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    # Runs before any page script: every alert() a page makes is recorded, not shown.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"},
    )
    return driver, profile


class Console:
    def __init__(self, driver):
        self.d = driver
        self.server_ms = {}

    def open(self, path):
        self.d.get(BASE + path)
        self.after_load(path)

    def after_load(self, label):
        """Checks of every loaded page: no script ran, no alert, server time recorded."""
        alerts = self.d.execute_script("return window.__alerts || []")
        assert alerts == [], f"a script ran on {label}: {alerts}"
        try:
            text = self.d.switch_to.alert.text
            raise AssertionError(f"an alert opened on {label}: {text}")
        except NoAlertPresentException:
            pass
        timing = self.d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n ? n.serverTiming.map(t => [t.name, t.duration]) : [];"
        )
        for name, dur in timing:
            if name == "app":
                path = self.d.current_url.replace(BASE, "")
                self.server_ms[path] = max(dur, self.server_ms.get(path, 0.0))

    def submit(self, form_css, fields=None, button_css="button[type=submit]"):
        form = self.d.find_element(By.CSS_SELECTOR, form_css)
        for name, value in (fields or {}).items():
            el = form.find_element(By.NAME, name)
            el.clear()
            el.send_keys(value)
        self.click(form.find_element(By.CSS_SELECTOR, button_css), form_css)

    def click(self, element, label):
        """Clicks and waits until the browser has loaded the next page."""
        old = self.d.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(self.d, 15).until(lambda d: gone(old))
        WebDriverWait(self.d, 15).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.after_load(label)

    def flash(self):
        try:
            return self.d.find_element(By.CSS_SELECTOR, ".flash").text
        except NoSuchElementException:
            return ""

    def title(self):
        return self.d.find_element(By.TAG_NAME, "h1").text

    def shot(self, name):
        # The whole page, not only the window.
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(1280, max(700, min(height + 40, 2400)))
        self.d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))
        self.d.set_window_size(1280, 1000)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"

    driver, profile = chromium()
    c = Console(driver)
    try:
        # The alert hook itself works (a positive control for the XSS checks below).
        c.open("/console/login")
        driver.execute_script("alert('control')")
        assert driver.execute_script("return window.__alerts") == ["control"]
        c.open("/console/login")

        # Not logged in: every page leads to the login form.
        c.open("/console/topics")
        assert driver.current_url.endswith("/console/login"), driver.current_url
        headers = driver.execute_script(
            "const r = await fetch('/console/login'); return [r.headers.get('content-security-policy'), r.headers.get('x-frame-options')];"
        )
        assert "default-src 'self'" in headers[0] and "unsafe-inline" not in headers[0], headers
        assert headers[1] == "DENY", headers
        c.shot("login")
        c.submit("form[action='/console/login']", {"project": PROJECT})
        assert driver.find_element(By.ID, "project").text == PROJECT
        assert c.title() == "Overview"
        cookie = driver.get_cookie("herald_console")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

        # A form without its CSRF token is refused, and nothing is created.
        c.open("/console/topics")
        driver.execute_script("document.querySelector(\"#create-topic input[name=csrf]\").remove()")
        c.submit("#create-topic", {"name": "no-csrf-topic"})
        assert c.title() == "403 Forbidden", c.title()
        assert "security token" in driver.page_source
        c.open("/console/topics")
        driver.execute_script("document.querySelector(\"#create-topic input[name=csrf]\").value = 'forged'")
        c.submit("#create-topic", {"name": "no-csrf-topic"})
        assert c.title() == "403 Forbidden", c.title()
        c.open("/console/topics/no-csrf-topic")
        assert c.title() == "404 Not Found", c.title()

        # Create a topic whose metadata carries markup.
        c.open("/console/topics")
        meta = json.dumps({"team": XSS_META, "note": XSS_IMG})
        c.submit("#create-topic", {"name": TOPIC, "metadata": meta})
        assert c.title() == f"Topic {TOPIC}", c.title()
        assert "created" in c.flash(), c.flash()
        page_text = driver.find_element(By.TAG_NAME, "main").text
        assert "<script>alert('xss-meta')</script>" in page_text, "metadata is shown as text"
        assert driver.find_elements(By.CSS_SELECTOR, "main script, main img") == []

        # A bad topic name is refused with the API's message, on the form's page.
        c.open("/console/topics")
        driver.execute_script("document.querySelector(\"#create-topic input[name=name]\").removeAttribute('pattern')")
        c.submit("#create-topic", {"name": "bad name!"})
        assert "Invalid topic" in c.flash(), c.flash()

        # Subscribe the receiver.
        c.open(f"/console/topics/{TOPIC}")
        c.submit(f"form[action='/console/topics/{TOPIC}/subscriptions']", {"subscriber": hook})
        assert c.title() == "Subscription", c.title()
        assert driver.find_element(By.ID, "status").text == "active"
        sub_path = driver.current_url.replace(BASE, "")

        # Publish from the console and see it delivered.
        c.open(f"/console/topics/{TOPIC}")
        c.submit(
            f"form[action='/console/topics/{TOPIC}/messages']",
            {"body": json.dumps({"order": 1, "marker": "first-delivery", "html": XSS_BODY})},
        )
        assert "Published message" in c.flash(), c.flash()
        eventually("the first message at the receiver", lambda: received_ok("first-delivery"))

        # The attempt shows in the subscription's attempt log (written in the background).
        def attempt_rows(outcome):
            c.open(sub_path)
            rows = driver.find_elements(By.CSS_SELECTOR, "#attempt-log tbody tr")
            return [r for r in rows if outcome in r.text]

        rows = eventually("the delivered attempt", lambda: attempt_rows("delivered"))
        assert "200" in rows[0].text, rows[0].text

        # Disable and enable it again from the console.
        c.submit("#enable")
        assert "disabled" in c.flash(), c.flash()
        assert driver.find_element(By.ID, "status").text == "disabled"
        c.submit("#enable")
        assert "enabled" in c.flash(), c.flash()
        assert driver.find_element(By.ID, "status").text == "active"
        c.open(f"/console/topics/{TOPIC}")
        rows = driver.find_elements(By.CSS_SELECTOR, "#subscriptions tbody tr")
        assert len(rows) == 1 and hook in rows[0].text, [r.text for r in rows]
        c.shot("topic")

        # Break the receiver: the next message fails (400 is permanent) and is dead-lettered.
        Receiver.status = 400
        c.submit(
            f"form[action='/console/topics/{TOPIC}/messages']",
            {"body": json.dumps({"order": 2, "marker": "second-delivery", "html": XSS_BODY})},
        )
        eventually("the failed attempt", lambda: received_any("second-delivery"))

        def dead_letter_row():
            c.open(sub_path)
            return driver.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")

        rows = eventually("the dead letter on the subscription page", dead_letter_row)
        assert len(rows) == 1, [r.text for r in rows]
        assert "400" in rows[0].text, rows[0].text
        assert "<script>alert('xss-body')</script>" in rows[0].text, "the body is shown as text"
        failed = eventually("the failed attempt in the log", lambda: attempt_rows("failed"))
        assert "400" in failed[0].text, failed[0].text
        assert "400" in driver.find_element(By.ID, "last-error").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")
        c.shot("subscription")

        # Repair the receiver and replay the dead letter from the console.
        Receiver.status = 200
        c.click(rows[0].find_element(By.CSS_SELECTOR, "button"), "replay")
        assert "Replayed 1" in c.flash(), c.flash()
        eventually("the replayed message at the receiver", lambda: received_ok("second-delivery"))

        def no_dead_letters():
            c.open(sub_path)
            return driver.find_elements(By.ID, "no-dead-letters")

        eventually("the dead letters to be empty", no_dead_letters)

        # The failure left a user message; see it, then delete it.
        def message_rows():
            c.open("/console/messages")
            return driver.find_elements(By.CSS_SELECTOR, "#user-messages tbody tr")

        rows = eventually("the user message of the failure", message_rows)
        first = rows[0].text
        c.shot("messages")
        c.submit("#user-messages tbody tr form")
        assert "deleted" in c.flash(), c.flash()
        after = driver.find_elements(By.CSS_SELECTOR, "#user-messages tbody tr")
        assert len(after) == len(rows) - 1, (first, [r.text for r in after])

        # Another project's topic is not reachable by URL.
        c.open(f"/console/topics/{FOREIGN_TOPIC}")
        assert c.title() == "404 Not Found", c.title()
        c.open(f"/console/topics/{FOREIGN_TOPIC}/delete")
        assert c.title() == "404 Not Found", c.title()

        # Topics list with stats, then the overview (charts) and its screenshot.
        c.open("/console/topics")
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#topics tbody td:first-child a")]
        assert names == [TOPIC], names
        c.shot("topics")
        c.open("/console/")
        assert driver.find_element(By.ID, "topic-count").text == "1"
        assert len(driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 2
        c.shot("overview")

        # Delete the topic through its confirmation step.
        c.open(f"/console/topics/{TOPIC}/delete")
        assert c.title() == "Delete topic?", c.title()
        c.shot("delete")
        c.submit(f"form[action='/console/topics/{TOPIC}/delete']")
        assert "deleted" in c.flash(), c.flash()
        assert driver.find_elements(By.CSS_SELECTOR, "#topics tbody tr") == []

        # Log out: the session is gone.
        c.submit("form[action='/console/logout']")
        c.open("/console/topics")
        assert driver.current_url.endswith("/console/login"), driver.current_url

        # No page let a script run, and the browser logged no script error from markup.
        errors = [e for e in driver.get_log("browser") if "xss" in e.get("message", "")]
        assert errors == [], errors
        slowest = max(c.server_ms.items(), key=lambda kv: kv[1])
        print("server time per page (ms):", json.dumps({k: round(v, 2) for k, v in sorted(c.server_ms.items())}))
        assert slowest[1] < MAX_SERVER_MS, f"slowest page {slowest}"
        print("all console checks passed")
    finally:
        driver.quit()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
