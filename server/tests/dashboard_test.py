#!/usr/bin/env python3
"""The dashboard in headless Chromium against the real aise-server.

Starts `aise-server --demo` on a free loopback port with a fresh data
directory, drives Chromium through chromedriver (the W3C WebDriver protocol
spoken directly with urllib: no selenium), and checks what a user sees:
logs in when the server asks for it, selects the demo project, sees a task
created through the REST API appear and change live, approves it with the
page's Approve button and sees it fail (its payload is invalid on purpose),
retries it and rejects the copy with the page's buttons, approves the demo's
merge and sees it succeed. Saves a screenshot and prints its path.

A missing chromium or chromedriver is a failure, not a skip.

Usage: dashboard_test.py --server PATH/aise-server --out DIR
"""

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element key


class Failure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, timeout=30):
    """One JSON request; returns (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def wait_for(what, fn, timeout):
    """Calls fn until it returns a true value; Failure after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (Failure, OSError) as e:
            last = e
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout} s waiting for {what}" + (f" ({last})" if last else ""))


class WebDriver:
    """The few W3C WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def cmd(self, method, path, body=None):
        url = self.base + (f"/session/{self.session}" if self.session else "") + path
        status, data = http(method, url, body, timeout=60)
        if status != 200:
            value = (data or {}).get("value", {})
            raise Failure(f"webdriver {method} {path}: {status} {value.get('error')}: "
                          f"{str(value.get('message', ''))[:300]}")
        return data["value"]

    def start(self, chromium, profile):
        options = {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--user-data-dir=" + profile, "--window-size=1600,1000", "--no-first-run"],
        }
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": options,
                                                 "goog:loggingPrefs": {"browser": "ALL"}}}}
        self.session = self.cmd("POST", "/session", caps)["sessionId"]

    def quit(self):
        if self.session:
            try:
                self.cmd("DELETE", "")
            except (Failure, OSError):
                pass
            self.session = None

    def find(self, css):
        """The elements matching css (possibly none)."""
        found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def text(self, css):
        """The text of the first element matching css, or None."""
        found = self.find(css)
        if not found:
            return None
        try:
            return self.cmd("GET", f"/element/{found[0]}/text")
        except Failure:
            return None  # replaced while we looked (the page re-renders rows)

    def displayed(self, css):
        found = self.find(css)
        return bool(found) and self.cmd("GET", f"/element/{found[0]}/displayed")

    def click(self, css):
        found = self.find(css)
        if not found:
            raise Failure(f"no element {css}")
        self.cmd("POST", f"/element/{found[0]}/click", {})

    def type(self, css, text):
        found = self.find(css)
        if not found:
            raise Failure(f"no element {css}")
        self.cmd("POST", f"/element/{found[0]}/clear", {})
        self.cmd("POST", f"/element/{found[0]}/value", {"text": text})

    def enabled(self, css):
        found = self.find(css)
        return bool(found) and self.cmd("GET", f"/element/{found[0]}/enabled")

    def browser_log(self):
        try:
            return self.cmd("POST", "/se/log", {"type": "browser"})
        except Failure:
            return []


def run(args):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        raise Failure("chromium and chromedriver are needed (Debian packages chromium and "
                      "chromium-driver; scripts/setup.sh installs them)")

    work = tempfile.mkdtemp(prefix="aise-dashboard-")
    procs = []
    driver = None
    try:
        # --- the server, with an admin in case it has authentication ---
        port = free_port()
        password = secrets.token_urlsafe(16)
        env = dict(os.environ, AISE_ADMIN_USER="dash-admin", AISE_ADMIN_PASSWORD=password)
        server_log = open(os.path.join(work, "server.log"), "wb")
        server = subprocess.Popen([args.server, "--listen", f"127.0.0.1:{port}",
                                   "--data-dir", os.path.join(work, "data"), "--demo"],
                                  stdout=server_log, stderr=subprocess.STDOUT, env=env)
        procs.append(server)
        api = f"http://127.0.0.1:{port}"
        wait_for("the server", lambda: http("GET", api + "/healthz", timeout=2)[0] == 200, 60)

        token = None
        status, _ = http("GET", api + "/api/v1/projects")
        auth = status == 401
        if auth:
            status, body = http("POST", api + "/api/v1/auth/login",
                                {"username": "dash-admin", "password": password})
            if status != 200:
                raise Failure(f"login through the API: {status} {body}")
            token = body["access_token"]

        # --- the browser ---
        driver_port = free_port()
        procs.append(subprocess.Popen([chromedriver, f"--port={driver_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("chromedriver", lambda: http("GET", f"http://127.0.0.1:{driver_port}/status",
                                              timeout=2)[1]["value"]["ready"], 30)
        driver = WebDriver(driver_port)
        driver.start(chromium, os.path.join(work, "profile"))
        driver.cmd("POST", "/url", {"url": api + "/"})

        if auth:
            wait_for("the login form", lambda: driver.displayed("#login-form"), 30)
            driver.type("#login-user", "dash-admin")
            driver.type("#login-password", password)
            driver.click("#login-submit")
            print("logged in through the page")

        wait_for("the demo project in the list", lambda: driver.find('#projects li[data-id="demo"]'), 30)
        driver.click('#projects li[data-id="demo"]')

        def status_of(task_id):
            return driver.text(f'#tasks tbody tr[data-id="{task_id}"] td:nth-child(3)')

        def wait_status(task_id, wanted, timeout=60):
            wait_for(f"task {task_id} to show {wanted}", lambda: status_of(task_id) == wanted, timeout)
            print(f"page shows {task_id}: {wanted}")

        # --- a task created through the REST API appears live ---
        status, body = http("POST", api + "/api/v1/projects/demo/tasks",
                            {"id": "dash-review", "kind": "review", "payload": {"n": -1},
                             "max_attempts": 1, "requires_approval": True}, token)
        if status != 201:
            raise Failure(f"creating a task through the API: {status} {body}")
        wait_status("dash-review", "awaiting_approval", 30)
        # A server with /api/v1/ws answers a plain GET there with 426: then
        # the page must be on the WebSocket, else polling the event log.
        has_ws = http("GET", api + "/api/v1/ws", None, token)[0] == 426
        expected = "websocket" if has_ws else "polling"
        live = wait_for(f"the live badge to say {expected}",
                        lambda: driver.text("#live") == expected and expected, 20)
        print(f"live updates: {live}")

        # --- Approve on the page: it runs and fails (n = -1 is refused) ---
        driver.click('#tasks tbody tr[data-id="dash-review"]')
        wait_for("the detail pane", lambda: driver.text("#d-id") == "dash-review", 10)
        wait_for("Approve enabled", lambda: driver.enabled("#b-approve"), 10)
        driver.click("#b-approve")
        wait_status("dash-review", "failed", 60)
        wait_for("the error in the detail pane",
                 lambda: "review needs" in (driver.text("#d-error") or ""), 20)
        wait_for("the attempt in the detail pane",
                 lambda: driver.text("#d-attempts tbody tr td:nth-child(5)") == "failed", 20)
        wait_for("the task's events in the detail pane",
                 lambda: "task.failed" in (driver.text("#d-events") or ""), 20)

        # --- Retry on the page makes a new task; Reject on the page cancels it ---
        wait_for("Retry enabled", lambda: driver.enabled("#b-retry"), 10)
        driver.click("#b-retry")
        retried = wait_for("the retried task",
                           lambda: (driver.text("#d-id") or "") not in ("", "dash-review")
                           and driver.text("#d-id"), 20)
        print(f"retry made {retried}")
        wait_status(retried, "awaiting_approval", 30)
        wait_for("Reject enabled", lambda: driver.enabled("#b-reject"), 10)
        driver.type("#d-reason", "not needed twice")
        driver.click("#b-reject")
        wait_status(retried, "cancelled", 30)

        # --- the New task form: a refused spec shows the API's error, a good one runs ---
        driver.click("#new-task summary")
        driver.type("#nt-kind", "review")
        driver.type("#nt-payload", "{not json")
        driver.click("#nt-submit")
        wait_for("the payload error", lambda: (driver.text("#message") or "").startswith("bad_json"), 10)
        driver.type("#nt-payload", '{"n": -1}')
        driver.type("#nt-priority", "1.5")
        driver.click("#nt-submit")
        message = wait_for("the API's error on the page",
                           lambda: "priority" in (driver.text("#message") or "") and driver.text("#message"), 10)
        if not message.startswith("invalid_argument"):
            raise Failure(f"the page shows {message!r}, not the API's invalid_argument")
        print(f"page shows the API's error: {message}")
        driver.type("#nt-priority", "2")
        driver.click("#nt-submit")
        created = wait_for("the task from the form",
                           lambda: (driver.text("#d-id") or "") not in ("", retried) and driver.text("#d-id"), 20)
        wait_status(created, "failed", 60)
        status, body = http("GET", api + f"/api/v1/tasks/{created}", None, token)
        if status != 200 or body["priority"] != 2 or body["payload"] != {"n": -1}:
            raise Failure(f"the form's task is {status} {body}")

        # --- the demo team's merge: Approve on the page, then it succeeds ---
        wait_status("demo-merge", "awaiting_approval", 300)
        driver.click('#tasks tbody tr[data-id="demo-merge"]')
        wait_for("the merge in the detail pane", lambda: driver.text("#d-id") == "demo-merge", 10)
        wait_for("Approve enabled", lambda: driver.enabled("#b-approve"), 10)
        driver.click("#b-approve")
        wait_status("demo-merge", "succeeded", 120)
        agents = driver.text("#agents tbody") or ""
        if "demo-reviewer-1" not in agents:
            raise Failure(f"the agents table lacks demo-reviewer-1: {agents!r}")

        # --- no Content-Security-Policy violation on the page ---
        log = driver.browser_log()
        for entry in log:
            message = str(entry.get("message", ""))
            if "Content Security Policy" in message:
                raise Failure(f"CSP violation: {message}")
        print(f"browser console: {len(log)} entries, no CSP violation")
        for entry in log:
            print("  console:", str(entry.get("message", ""))[:160])

        os.makedirs(args.out, exist_ok=True)
        shot = os.path.abspath(os.path.join(args.out, "dashboard.png"))
        with open(shot, "wb") as f:
            f.write(base64.b64decode(driver.cmd("GET", "/screenshot")))
        print(f"screenshot: {shot}")
        return 0
    except Failure:
        if driver and driver.session:
            try:
                os.makedirs(args.out, exist_ok=True)
                shot = os.path.abspath(os.path.join(args.out, "dashboard-failure.png"))
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(driver.cmd("GET", "/screenshot")))
                print(f"screenshot of the failure: {shot}")
            except (Failure, OSError):
                pass
        log = os.path.join(work, "server.log")
        if os.path.exists(log):
            with open(log, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            print("--- server log (tail) ---\n" + tail)
        raise
    finally:
        if driver:
            driver.quit()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the aise-server executable")
    parser.add_argument("--out", required=True, help="directory for the screenshot")
    args = parser.parse_args()
    try:
        return run(args)
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
