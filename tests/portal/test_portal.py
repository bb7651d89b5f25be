#!/usr/bin/env python3
"""Browser test of the webhookd portal (SPEC §9), as an endpoint owner sees it.

    python3 tests/portal/test_portal.py --webhookd target/release/webhookd
    python3 tests/portal/test_portal.py --webhookd PATH --devserver
    python3 tests/portal/test_portal.py --base-url http://127.0.0.1:8080 --api-key whk_… --admin-token T

By default it starts the given webhookd binary on a free port with a fresh
SQLite store (http endpoints and 127.0.0.0/8 allowed, retry schedule "1s":
two attempts, then dead), creates a user with `webhookd users add`, runs a
local HTTP receiver whose answer the test switches, and drives Debian's
chromium through Playwright's sync API (never `playwright install`):

  sign in (a wrong key first) → empty state → add an endpoint (a 40000 first)
  → send a test event to a receiver answering 500 → the failed delivery with
  its two 500 attempts → receiver answers 200 → Resend → delivered with a 200
  attempt → reveal the secret and check it signed what the receiver got →
  rotate it (confirm dialog) → recover a dead delivery → edit, disable,
  enable → delete a second endpoint → event catalog → sign out → a portal
  link signs in and leaves the address bar → an expired link says so.

Every step asserts what the user sees through accessible names (roles and
labels), and the whole run fails on a page error, a console error other than
the browser's own line for an expected 400/401 answer, or a CSP violation.
Screenshots of each main view go to target/portal-screenshots/NN-name.png.

Options:
  --webhookd PATH   the webhookd binary to start (required unless --base-url)
  --base-url URL    use a running webhookd instead (must allow http receivers on
                    127.0.0.1 and retry quickly, e.g. WEBHOOKD_RETRY_SCHEDULE=1s);
                    then --api-key names a user with no endpoints yet
  --devserver       serve the page from crates/webhookd-api/portal through
                    tests/portal/devserver.py (to try changes without a rebuild)
  --headed          show the browser
Exit status: 0 when every step passed, 1 otherwise.
"""

import argparse
import hashlib
import hmac
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect, sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[2]
SHOTS = REPO / "target" / "portal-screenshots"
CHROMIUM = "/usr/bin/chromium"
USERNAME = "portal-tester"
EVENT_A = "generated_video_success"
EVENT_B = "generated_video_failed"

# Chromium logs every 4xx/5xx answer to fetch() as a console error. The
# test provokes some on purpose (a wrong key, a bad URL, an expired link).
EXPECTED_CONSOLE = (
    "Failed to load resource: the server responded with a status of 400",
    "Failed to load resource: the server responded with a status of 401",
)

_step = 0

FAILING_ANSWER = b'{"error":"receiver told to fail <img src=x onerror=\\"document.title=\'pwned\'\\">"}'


def step(message):
    global _step
    _step += 1
    print(f"[{_step:02d}] {message}", flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- receiver


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers
    the status the test sets."""

    def __init__(self):
        self.status = 200
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    status = receiver.status
                # A failing answer carries markup: the portal must show it
                # as text (a receiver is not trusted with the owner's page).
                answer = b'{"ok":true}' if status < 300 else FAILING_ANSWER
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path=None):
        with self.lock:
            return len([r for r in self.requests if path is None or r["path"] == path])

    def received(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_for(self, path, count, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(path) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"receiver got {self.count(path)} requests at {path}, expected {count}")

    def close(self):
        self.server.shutdown()


# ---------------------------------------------------------------- webhookd


class Webhookd:
    """The binary under test, on a free port with a fresh SQLite store."""

    def __init__(self, binary, workdir, admin_token):
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "webhookd.log"
        self.env = dict(os.environ)
        self.env.update(
            {
                "WEBHOOKD_LISTEN": f"127.0.0.1:{self.port}",
                "WEBHOOKD_STORE": f"sqlite://{workdir}/webhookd.db",
                "WEBHOOKD_REQUIRE_HTTPS": "false",
                "WEBHOOKD_ALLOWED_NETWORKS": "127.0.0.0/8",
                "WEBHOOKD_RETRY_SCHEDULE": "1s",
                "WEBHOOKD_INGEST_TOKEN": secrets.token_urlsafe(24),
                "WEBHOOKD_LOG_FORMAT": "json",
            }
        )
        if admin_token:
            self.env["WEBHOOKD_ADMIN_TOKEN"] = admin_token
        self.process = None

    def add_user(self, username):
        out = subprocess.run(
            [self.binary, "users", "add", "--create", username], env=self.env, capture_output=True, text=True, timeout=30
        )
        if out.returncode != 0:
            raise AssertionError(f"webhookd users add failed: {out.stderr.strip()}")
        key = out.stdout.strip()
        assert key and "\n" not in key, f"users add printed more than a key: {out.stdout!r}"
        return key

    def start(self):
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [self.binary, "serve"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"webhookd exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"webhookd did not answer /healthz within 30 s:\n{self.tail()}")

    def tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()


class DevServer:
    """tests/portal/devserver.py in front of webhookd: the page from source."""

    def __init__(self, upstream):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "portal" / "devserver.py"), "--upstream", upstream,
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/portal", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the dev server did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def portal_link(base_url, admin_token, username, ttl_seconds):
    request = urllib.request.Request(
        f"{base_url}/internal/portal-links",
        data=json.dumps({"username": username, "ttl_seconds": ttl_seconds}).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            envelope = json.load(answer)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"POST /internal/portal-links: HTTP {error.code} {error.read()[:300]!r}") from None
    assert envelope.get("code") == 0, envelope
    data = envelope["data"]
    assert data["url"].startswith("/portal#link=wpl_"), data
    assert data["expires_at"] > time.time(), data
    return data["url"]


def admin(base_url, admin_token, method, path, body):
    request = urllib.request.Request(
        f"{base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            envelope = json.load(answer)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read()[:300]!r}") from None
    assert envelope.get("code") == 0, envelope
    return envelope.get("data")


def create_endpoint(base_url, api_key, body):
    request = urllib.request.Request(
        f"{base_url}/v2/endpoint",
        data=json.dumps(body).encode(),
        headers={"x-api-key": api_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        envelope = json.load(answer)
    assert envelope.get("code") == 0, envelope
    return envelope["data"]


def ingest(base_url, token, message):
    """POST /internal/events as a producer does: 202 once durable."""
    request = urllib.request.Request(
        f"{base_url}/internal/events",
        data=json.dumps(message).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202, answer.status


def client_certificate(days):
    """A self-signed client certificate valid for `days` more days, and its key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhookd client")])
    now = datetime.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def add_user(base_url, admin_token, username):
    request = urllib.request.Request(
        f"{base_url}/internal/users",
        data=json.dumps({"username": username}).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer).get("code") == 0


# ---------------------------------------------------------------- the flow


def run(args, base_url, api_key, admin_token, receiver, api_url, ingest_token=None):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    problems = []
    # The operator's own type, next to JoggAI's (SPEC §12): the catalog
    # page and the event picker show its description and that it is
    # deprecated.
    admin(
        api_url,
        admin_token,
        "PUT",
        "/internal/event-types/invoice.paid",
        {"description": "An invoice was paid in full.", "deprecated": True},
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=not args.headed)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        # Report CSP violations however the browser words them.
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e =>"
            " console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
        )
        page = context.new_page()
        page.set_default_timeout(10_000)
        expect.set_options(timeout=10_000)

        def on_console(message):
            if message.type == "error" and not message.text.startswith(EXPECTED_CONSOLE):
                problems.append(f"console error: {message.text}")
            if "Content Security Policy" in message.text or "CSP violation" in message.text:
                problems.append(f"CSP: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

        def shot(name, full_page=True):
            # Toasts are fixed to the viewport: in a full-page picture they
            # would float over the middle of it.
            page.evaluate("() => document.getElementById('toasts').replaceChildren()")
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)

        def check_clean(where):
            assert not problems, f"{where}: " + "; ".join(problems)
            assert api_key not in page.url, "the API key is in the address bar"

        def button(name):
            return page.get_by_role("button", name=name, exact=True)

        # ---- sign in
        step("open /portal: the sign-in form")
        page.goto(f"{base_url}/portal")
        expect(page.get_by_role("heading", name="Sign in to your webhooks")).to_be_visible()
        expect(page.get_by_label("API key", exact=True)).to_be_visible()
        shot("01-sign-in")

        step("a wrong key is refused with a clear message")
        page.get_by_label("API key", exact=True).fill("whk_not_a_real_key")
        button("Sign in").click()
        expect(page.get_by_role("alert").filter(has_text="This API key is not valid")).to_be_visible()
        expect(page.get_by_label("API key", exact=True)).to_have_value("whk_not_a_real_key")

        step("sign in with the key: the empty state")
        page.get_by_label("API key", exact=True).fill(api_key)
        button("Sign in").click()
        expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
        expect(page.get_by_text("No endpoints yet — add one to start receiving webhooks")).to_be_visible()
        expect(page.get_by_text(f"Signed in as {USERNAME}")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('webhookd.portal.credential')") == api_key
        assert api_key not in page.evaluate("() => JSON.stringify(localStorage) + document.cookie")
        check_clean("sign-in")
        shot("02-empty-state")

        # ---- add an endpoint
        hook = f"{receiver.url}/hook"
        step("the add dialog is a real dialog: Escape closes it, focus goes back")
        button("Add endpoint").click()
        expect(page.get_by_role("dialog", name="Add endpoint")).to_be_visible()
        expect(page.get_by_label("URL", exact=True)).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog", name="Add endpoint")).to_be_hidden()
        expect(button("Add endpoint")).to_be_focused()

        step("Add endpoint: a bad URL gets the API's 40000 message next to the form")
        button("Add endpoint").click()
        dialog = page.get_by_role("dialog", name="Add endpoint")
        expect(dialog).to_be_visible()
        page.get_by_label("URL", exact=True).fill("ftp://example.com/hook")
        page.get_by_label(EVENT_A, exact=True).check()
        page.get_by_label(EVENT_B, exact=True).check()
        expect(dialog.get_by_text("2 of 23 selected")).to_be_visible()
        shot("03-add-endpoint")
        button("Add endpoint").click()  # the dialog's: the page behind is hidden
        url_field = page.get_by_label("URL", exact=True)
        expect(url_field).to_have_attribute("aria-invalid", "true")
        expect(url_field).to_have_accessible_description(re.compile(r"^The URL must "))
        expect(dialog.get_by_text(re.compile(r"^url:"))).to_be_hidden()
        shot("03b-field-error", full_page=False)

        step("Add endpoint to the receiver with two event types and a rate limit: listed")
        page.get_by_label("URL", exact=True).fill(hook)
        page.get_by_label("Rate limit", exact=True).fill("50")
        button("Add endpoint").click()
        expect(dialog).to_be_hidden()
        expect(button(hook)).to_be_visible()
        expect(page.get_by_text(f"{EVENT_A}, {EVENT_B}")).to_be_visible()
        if not args.base_url:
            expect(page.get_by_text(f"Signed in as {USERNAME}")).to_be_visible()
        check_clean("add endpoint")
        shot("04-endpoint-list")

        # ---- a failing delivery
        step("receiver answers 500; open the endpoint; Send test event")
        receiver.status = 500
        button(hook).click()
        expect(page.get_by_role("heading", name=hook)).to_be_visible()
        expect(page.get_by_text("50 per second")).to_be_visible()
        secret_field = page.get_by_role("textbox", name="Signing secret", exact=True)
        assert "•" in secret_field.input_value(), "the secret is shown before Reveal"
        page.get_by_label("Event type", exact=True).select_option(EVENT_B)
        button("Send test event").click()
        receiver.wait_for("/hook", 1)

        step("the delivery fails twice with 500 and is listed under Failed")
        page.get_by_role("tab", name="Failed").click()
        failed = page.locator(".delivery").filter(has_text=EVENT_B)
        wait_until(page, lambda: failed.get_by_text("2 attempts").count() >= 1, "two failed attempts")
        expect(failed.get_by_text("Failed", exact=True)).to_be_visible()
        expect(failed.get_by_text("Server error (5xx)").first).to_be_visible()
        expect(failed.get_by_text("2 attempts")).to_be_visible()
        assert receiver.count("/hook") == 2, f"receiver got {receiver.count('/hook')} requests"
        first = receiver.received("/hook")[0]
        assert first["headers"].get("x-webhook-event") == EVENT_B, first["headers"]
        assert json.loads(first["body"])["data"] == {"test": True}
        expect(page.get_by_text("Deliveries are failing.")).to_be_visible()
        # XSS: a hostile receiver's answer is shown as text, never markup.
        expect(failed.get_by_text("<img src=x onerror=", exact=False).first).to_be_attached()
        assert failed.locator("img").count() == 0, "a response excerpt became markup"
        assert page.title() != "pwned"
        check_clean("failed delivery")
        shot("05-endpoint-failed")

        # ---- resend
        step("receiver answers 200; Resend; delivered with a 200 attempt")
        receiver.status = 200
        button("Resend").click()
        receiver.wait_for("/hook", 3)
        page.get_by_role("tab", name="Delivered").click()
        delivered = page.locator(".delivery").filter(has_text=EVENT_B)
        wait_until(page, lambda: delivered.get_by_text("3 attempts").count() >= 1, "the delivered delivery")
        expect(delivered.get_by_text("Delivered", exact=True)).to_be_visible()
        expect(delivered.get_by_text("latest: 200 OK")).to_be_visible()

        step("the attempts are one summary line that expands to the table")
        expect(delivered.get_by_role("cell", name="200", exact=True)).to_be_hidden()
        delivered.get_by_text("3 attempts").click()
        expect(delivered.get_by_role("cell", name="200", exact=True)).to_be_visible()
        expect(delivered.get_by_role("cell", name="500", exact=True)).to_have_count(2)
        check_clean("resend")
        expect(page.get_by_role("tab", name="Delivered")).to_contain_text("1")
        shot("06-delivered")

        step("a delivery's own page: its attempts and the request as sent, headers and payload")
        delivered.get_by_role("link", name="Request", exact=True).click()
        expect(page.get_by_role("heading", name=EVENT_B, level=1)).to_be_visible()
        delivery_address = page.evaluate("() => location.hash")
        assert re.fullmatch(r"#/endpoints/wh_[0-9a-f]+/deliveries/dlv_[0-9a-f]+", delivery_address), delivery_address
        expect(page.get_by_text("As sent on attempt 3.")).to_be_visible()
        sent = receiver.received("/hook")[2]
        headers = page.get_by_role("table", name="Headers")
        for name in ("x-webhook-signature", "webhook-signature", "webhook-timestamp", "webhook-id", "user-agent"):
            row = headers.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name, exact=True))
            expect(row.get_by_role("cell")).to_have_text(sent["headers"][name])
        payload = page.get_by_role("region", name="Request").locator("pre.payload")
        assert json.loads(payload.inner_text()) == json.loads(sent["body"]), payload.inner_text()
        page.get_by_role("button", name="Copy payload").click()
        assert page.evaluate("() => navigator.clipboard.readText()").encode() == sent["body"]
        check_clean("delivery page")
        shot("06c-delivery")

        step("the delivery's address survives a reload; Back returns to the endpoint's tab")
        page.reload()
        expect(page.get_by_role("heading", name=EVENT_B, level=1)).to_be_visible()
        expect(page.get_by_text("As sent on attempt 3.")).to_be_visible()
        page.go_back()
        expect(page.get_by_role("tab", name="Delivered")).to_have_attribute("aria-selected", "true")
        page.go_forward()
        expect(page.get_by_role("heading", name=EVENT_B, level=1)).to_be_visible()
        # Its own way back leads to where it is listed: the Delivered tab.
        back_link = page.get_by_role("link", name="Back to the endpoint")
        expect(back_link).to_have_attribute("href", re.compile(r"^#/endpoints/wh_[0-9a-f]+/delivered$"))
        page.go_back()
        expect(page.get_by_role("tab", name="Delivered")).to_have_attribute("aria-selected", "true")

        step("the deliveries filter by event type and by event id")
        event_id = delivered.get_by_title("Event ID (X-Webhook-Id)").inner_text()
        page.get_by_label("Filter by event type").select_option(EVENT_A)
        button("Filter").click()
        expect(page.locator(".delivery")).to_have_count(0)
        expect(button("Clear filters")).to_be_visible()
        button("Clear filters").click()
        expect(page.locator(".delivery").filter(has_text=EVENT_B)).to_be_visible()
        page.get_by_label("Filter by event ID").fill(event_id)
        button("Filter").click()
        expect(page.locator(".delivery")).to_have_count(1)
        expect(page.locator(".delivery").filter(has_text=event_id)).to_be_visible()
        shot("06b-filtered", full_page=False)
        button("Clear filters").click()
        expect(button("Clear filters")).to_be_hidden()

        step("the view has its own address: reload stays on the tab, Back returns to the list")
        endpoint_address = page.evaluate("() => location.hash")
        assert re.fullmatch(r"#/endpoints/wh_[0-9a-f]+/delivered", endpoint_address), endpoint_address
        page.reload()
        expect(page.get_by_role("tab", name="Delivered")).to_have_attribute("aria-selected", "true")
        expect(page.locator(".delivery").filter(has_text=EVENT_B)).to_be_visible()
        page.go_back()
        expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
        assert page.evaluate("() => location.hash") == "#/endpoints"
        page.go_forward()
        expect(page.get_by_role("tab", name="Delivered")).to_have_attribute("aria-selected", "true")
        # A shared address, opened in a fresh tab: sign in, then that view.
        shared = page.context.new_page()
        shared.goto(f"{base_url}/portal{endpoint_address}")
        shared.get_by_label("API key", exact=True).fill(api_key)
        shared.get_by_role("button", name="Sign in").click()
        expect(shared.get_by_role("tab", name="Delivered")).to_have_attribute("aria-selected", "true")
        shared.close()
        check_clean("deep links")

        # ---- the secret
        step("Reveal shows the secret that signed the deliveries; Copy copies it")
        button("Reveal").click()
        secret = secret_field.input_value()
        assert secret.startswith("whsec_") and "•" not in secret, secret
        last = receiver.received("/hook")[-1]
        signature = hmac.new(secret.encode(), last["body"], hashlib.sha256).hexdigest()
        assert last["headers"].get("x-webhook-signature") == signature, "the shown secret did not sign the delivery"
        button("Copy").click()
        expect(page.get_by_text("Secret copied to the clipboard.")).to_be_visible()
        assert page.evaluate("() => navigator.clipboard.readText()") == secret

        step("Rotate secret: confirm dialog, the secret changes, the grace is shown")
        button("Rotate secret").click()
        rotate = page.get_by_role("dialog", name="Rotate signing secret")
        expect(rotate).to_be_visible()
        expect(rotate.get_by_label("24 hours", exact=False)).to_be_checked()
        shot("07-rotate-dialog", full_page=False)
        button("Rotate secret").click()  # the dialog's
        expect(rotate).to_be_hidden()
        expect(secret_field).not_to_have_value(secret)
        rotated = secret_field.input_value()
        assert rotated.startswith("whsec_") and rotated != secret
        expect(page.get_by_text("Rotation in progress")).to_be_visible()
        check_clean("rotate")

        # ---- delivery options (SPEC §14)
        step("Edit → Delivery options: both signatures, a retry schedule, a header and a secret one")
        button("Edit").click()
        edit = page.get_by_role("dialog", name="Edit endpoint")
        edit.get_by_text("Delivery options", exact=True).click()
        edit.get_by_label("Signature", exact=True).select_option("both")
        # As short as the service's ("1s"): the recover step below waits for a death.
        edit.get_by_label("Retry schedule", exact=True).fill("1s")
        for name, value, secret_value in (("X-Tenant", "acme", False), ("X-Api-Key", "k-portal-1", True)):
            button("Add header").click()
            row = edit.locator(".header-row").last
            row.get_by_label("Header name").fill(name)
            row.get_by_label("Header value").fill(value)
            if secret_value:
                row.get_by_label("Secret").check()
        shot("07d-options-dialog", full_page=False)
        button("Save").click()
        expect(edit).to_be_hidden()
        card = page.get_by_role("region", name="Delivery options")
        expect(card.get_by_text("HMAC-SHA256 and ed25519")).to_be_visible()
        expect(card.locator("#ep-public-key")).to_have_text(re.compile(r"^whpk_"))
        # Mid-rotation: the previous key signs as well, and is shown.
        expect(card.get_by_text("The previous key signs too")).to_be_visible()
        expect(card.get_by_text("1s (2 attempts)")).to_be_visible()
        expect(card.get_by_text("acme")).to_be_visible()
        expect(card.get_by_text("secret, hidden")).to_be_visible()
        assert "k-portal-1" not in page.content(), "a secret header value is in the page"
        sent_before = receiver.count("/hook")
        button("Send test event").click()
        receiver.wait_for("/hook", sent_before + 1)
        last = receiver.received("/hook")[-1]["headers"]
        assert last.get("x-tenant") == "acme" and last.get("x-api-key") == "k-portal-1", last
        assert "v1a," in last.get("webhook-signature", ""), last
        check_clean("delivery options")
        shot("07c-delivery-options")

        # ---- payload filter (SPEC §15)
        step("Edit → Payload filter: a refused filter is explained at its field, a preview says yes and no")
        button("Edit").click()
        edit = page.get_by_role("dialog", name="Edit endpoint")
        edit.get_by_text("Payload filter", exact=True).click()
        filter_box = edit.get_by_label("Filter (JSON)", exact=True)
        filter_box.fill('{"data.amount": {"$between": [1, 9]}}')
        button("Save").click()
        expect(edit.locator("#ef-filter-error")).to_have_text(
            re.compile(r"^In the filter, data\.amount: \$between is not an operator")
        )
        expect(filter_box).to_have_attribute("aria-invalid", "true")
        filter_box.fill("{not json")
        button("Preview").click()
        expect(edit.get_by_text(re.compile(r"^The filter is not JSON"))).to_be_visible()
        filter_box.fill('{"data.amount": {"$gte": 100}, "data.currency": {"$in": ["EUR", "USD"]}}')
        sample = edit.get_by_label("Try it with a sample event", exact=True)
        sample.fill(json.dumps({"event": EVENT_A, "data": {"amount": 250, "currency": "EUR"}}))
        button("Preview").click()
        expect(edit.get_by_text("This event would be delivered.")).to_be_visible()
        shot("07f-filter-preview", full_page=False)
        sample.fill(json.dumps({"event": EVENT_A, "data": {"amount": 5, "currency": "EUR"}}))
        button("Preview").click()
        expect(edit.get_by_text(re.compile(r"^This event would not be delivered"))).to_be_visible()
        button("Save").click()
        expect(edit).to_be_hidden()
        card = page.get_by_role("region", name="Delivery options")
        expect(card.locator("#ep-filter")).to_contain_text('"data.amount"')
        check_clean("payload filter")
        card.scroll_into_view_if_needed()
        shot("07g-filter-card", full_page=False)

        step("an endpoint whose client certificate expires in 10 days is flagged")
        cert, key = client_certificate(10)
        expiring = create_endpoint(
            api_url,
            api_key,
            {"url": f"{receiver.url}/mtls", "events": [EVENT_A], "signature": "ed25519",
             "client_cert": cert, "client_key": key},
        )
        # Made through the API: the page learns of it on a reload.
        page.goto(f"{base_url}/portal#/endpoints/{expiring['endpoint_id']}")
        page.reload()
        expect(page.get_by_text("The client certificate expires soon.")).to_be_visible()
        expect(page.get_by_text("renew", exact=True)).to_be_visible()
        # ed25519 alone: no secret to show, the public key instead.
        expect(page.get_by_role("textbox", name="Signing secret", exact=True)).to_be_hidden()
        expect(page.get_by_text("This endpoint signs with ed25519 only")).to_be_visible()
        check_clean("expiring certificate")
        shot("07e-certificate-expiring")
        page.go_back()
        expect(page.get_by_role("heading", name=hook)).to_be_visible()

        # ---- an ordered endpoint
        step("Edit → Delivery order: in order per /data/video_id; the Head of line card shows what waits and why")
        if ingest_token:
            hook_address = page.url
            ordered_url = f"{receiver.url}/ordered"
            ordered = create_endpoint(api_url, api_key, {"url": ordered_url, "events": [EVENT_A], "retry_schedule": ["10m"]})
            page.goto(f"{base_url}/portal#/endpoints/{ordered['endpoint_id']}")
            page.reload()
            expect(page.get_by_role("heading", name=ordered_url)).to_be_visible()
            line = page.get_by_role("region", name="Head of line")
            expect(line).to_be_hidden()
            button("Edit").click()
            edit = page.get_by_role("dialog", name="Edit endpoint")
            edit.get_by_text("Delivery order", exact=True).click()
            edit.get_by_label("Deliver in order").check()
            key_field = edit.get_by_label("Ordering key", exact=True)
            key_field.fill("data.video_id")
            button("Save").click()
            expect(edit.locator("#ef-ordering_key-error")).to_have_text(
                re.compile(r"^The ordering key must be a JSON pointer")
            )
            expect(key_field).to_have_attribute("aria-invalid", "true")
            key_field.fill("/data/video_id")
            shot("07h-ordering-dialog", full_page=False)
            button("Save").click()
            expect(edit).to_be_hidden()
            card = page.get_by_role("region", name="Delivery options")
            expect(card.locator("#ep-ordering-key")).to_have_text("/data/video_id")
            expect(line.get_by_text(re.compile(r"^Nothing is waiting"))).to_be_visible()
            receiver.status = 500
            for n, video in enumerate(["v1", "v1", "v2"]):
                ingest(api_url, ingest_token,
                       {"event": EVENT_A, "username": USERNAME, "event_id": f"evt_ordered_{n}", "data": {"video_id": video}})
            # The heads of v1 and v2 go at once and fail; the second v1 waits.
            receiver.wait_for("/ordered", 2)
            receiver.status = 200
            page.wait_for_timeout(1000)  # their attempts are recorded
            page.reload()
            expect(line.locator("#ep-line-why")).to_have_text(
                re.compile(r"^Its last attempt failed with HTTP 500; the next is due ")
            )
            expect(line.get_by_text("key v1")).to_be_visible()
            expect(line.get_by_text(re.compile(r"^2 more deliveries are pending"))).to_be_visible()
            page.get_by_role("tab", name="Pending").click()
            expect(page.get_by_text("waits for the delivery before it in its line")).to_have_count(1)
            check_clean("ordered endpoint")
            line.scroll_into_view_if_needed()
            shot("07i-head-of-line", full_page=False)
            assert receiver.count("/ordered") == 2, "nothing went past a failing head"
            page.goto(hook_address)
            expect(page.get_by_role("heading", name=hook)).to_be_visible()
        else:
            print("  (skipped: --base-url runs have no ingest token)")

        # ---- recover
        step("a dead delivery, then Recover since an hour ago: counted and re-sent")
        receiver.status = 500
        sent_before = receiver.count("/hook")
        button("Send test event").click()
        receiver.wait_for("/hook", sent_before + 2)
        page.get_by_role("tab", name="Failed").click()
        wait_until(page, lambda: button("Resend").count() == 1, "the new dead delivery")
        receiver.status = 200
        since = (datetime.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        page.get_by_label("Since", exact=True).fill(since)
        button("Recover").click()
        confirm = page.get_by_role("dialog", name="Recover 1 failed delivery?")
        expect(confirm).to_be_visible()
        shot("08b-recover-confirm", full_page=False)
        confirm.get_by_role("button", name="Recover").click()
        expect(confirm).to_be_hidden()
        expect(page.get_by_text("1 failed delivery gets one more attempt")).to_be_visible()
        receiver.wait_for("/hook", sent_before + 3)

        # ---- edit, disable, enable
        step("Edit: drop one event type, Save")
        button("Edit").click()
        edit = page.get_by_role("dialog", name="Edit endpoint")
        expect(edit).to_be_visible()
        expect(page.get_by_label("URL", exact=True)).to_have_value(hook)
        page.get_by_label(EVENT_B, exact=True).uncheck()
        button("Save").click()
        expect(edit).to_be_hidden()
        expect(page.get_by_role("definition").filter(has_text=EVENT_A)).to_be_visible()
        expect(page.locator(".chip").filter(has_text=EVENT_B)).to_have_count(0)

        step("Disable, then Enable")
        button("Disable").click()
        expect(page.get_by_text("This endpoint is disabled")).to_be_visible()
        # What happens to events published meanwhile is said where it happens.
        expect(page.get_by_text("Events published meanwhile are not delivered to it")).to_be_visible()
        shot("07b-disabled", full_page=False)
        button("Enable").click()
        expect(page.get_by_text("This endpoint is disabled")).to_be_hidden()
        check_clean("edit")

        # ---- delete a second endpoint
        step("a second endpoint, deleted through the confirm dialog")
        second = f"{receiver.url}/second"
        button("All endpoints").click()
        button("Add endpoint").click()
        page.get_by_label("URL", exact=True).fill(second)
        page.get_by_label("generated_image_success", exact=True).check()
        button("Add endpoint").click()
        expect(button(second)).to_be_visible()
        button(second).click()
        button("Delete").click()
        confirm = page.get_by_role("dialog", name="Delete this endpoint?")
        expect(confirm).to_be_visible()
        expect(confirm.get_by_text(second)).to_be_visible()
        button("Delete").click()  # the dialog's
        expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
        expect(button(second)).to_have_count(0)
        expect(button(hook)).to_be_visible()
        check_clean("delete")

        # ---- event catalog
        step("the event catalog lists the 22 types and the operator's own, with descriptions")
        page.get_by_role("navigation").get_by_role("button", name="Event catalog").click()
        expect(page.get_by_role("heading", name="Event catalog")).to_be_visible()
        expect(page.locator("table.catalog tbody tr")).to_have_count(23)
        expect(page.get_by_role("cell", name="generated_motion_failed", exact=True)).to_be_visible()
        expect(page.get_by_role("cell", name="The motion generation failed.", exact=True)).to_be_visible()
        invoice = page.get_by_role("region", name="Invoice events")
        expect(invoice.get_by_role("cell", name="invoice.paid")).to_be_visible()
        expect(invoice.get_by_text("deprecated", exact=True)).to_be_visible()
        expect(invoice.get_by_role("cell", name="An invoice was paid in full.")).to_be_visible()
        shot("08-event-catalog")

        step("at 390 px wide (a phone) no view scrolls sideways")
        page.set_viewport_size({"width": 390, "height": 844})

        def fits(where):
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{where}: the page is {width} px wide in a 390 px viewport"

        fits("the event catalog")
        shot("11-phone-catalog", full_page=False)
        page.get_by_role("navigation").get_by_role("button", name="Endpoints").click()
        expect(button(hook)).to_be_visible()
        fits("the endpoint list")
        shot("12-phone-endpoints", full_page=False)
        button(hook).click()
        page.get_by_role("tab", name="Delivered").click()
        expect(page.locator(".delivery").first).to_be_visible()
        page.locator(".delivery").first.get_by_text("3 attempts").click()
        fits("an endpoint with its deliveries, attempts open")
        shot("13-phone-endpoint")
        page.goto(f"{base_url}/portal{delivery_address}")
        expect(page.get_by_role("heading", name=EVENT_B, level=1)).to_be_visible()
        expect(page.get_by_text("As sent on attempt 3.")).to_be_visible()
        fits("a delivery's page")
        shot("14-phone-delivery")
        page.set_viewport_size({"width": 1280, "height": 800})

        step("Sign out: back to the sign-in form, the tab forgets the key")
        button("Sign out").click()
        expect(page.get_by_label("API key", exact=True)).to_be_visible()
        assert page.evaluate("() => sessionStorage.length") == 0
        check_clean("sign out")

        # ---- portal links (minted by the admin API)
        step("a portal link signs in as its user and leaves the address bar")
        url = portal_link(api_url, admin_token, USERNAME, 900)
        page.goto("about:blank")
        page.goto(f"{base_url}{url}")
        expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
        expect(button(hook)).to_be_visible()
        if not args.base_url:
            expect(page.get_by_text(f"Signed in as {USERNAME}")).to_be_visible()
        wait_until(page, lambda: "#" not in page.url, "the fragment to leave the address bar")
        assert "wpl_" not in page.url and page.url.endswith("/portal"), page.url
        check_clean("portal link")
        shot("09-portal-link")

        if not args.base_url:
            # Security round 3: an evil page set the tab's location to a link
            # of its own account, and the portal silently swapped the session.
            step("a link of another account asks first, naming both; staying keeps the session")
            add_user(api_url, admin_token, "mallory")
            foreign = portal_link(api_url, admin_token, "mallory", 900)
            page.evaluate("(url) => { location.hash = url.split('#')[1]; }", foreign)
            dialog = page.get_by_role("dialog", name="Switch accounts?")
            expect(dialog).to_be_visible()
            expect(dialog.get_by_text(f"You are signed in as {USERNAME}. This link signs in as mallory.")).to_be_visible()
            shot("09b-switch-account", full_page=False)
            dialog.get_by_role("button", name=f"Stay as {USERNAME}").click()
            expect(dialog).to_be_hidden()
            expect(page.locator(".account-name")).to_have_text(f"Signed in as {USERNAME}")
            wait_until(page, lambda: "#" not in page.url, "the fragment to leave the address bar")

            step("the same link a second time is refused: a link signs in once")
            page.evaluate("(url) => { location.hash = url.split('#')[1]; }", foreign)
            expect(page.get_by_text("This sign-in link has expired or is not valid. Ask for a new one.")).to_be_visible()
            expect(page.locator(".account-name")).to_have_text(f"Signed in as {USERNAME}")

            step("an API key in #link= is never taken")
            page.evaluate("(key) => { location.hash = 'link=' + key; }", api_key)
            expect(page.get_by_text("This address does not hold a sign-in link.", exact=False)).to_be_visible()
            expect(page.locator(".account-name")).to_have_text(f"Signed in as {USERNAME}")
            assert page.evaluate("() => sessionStorage.getItem('webhookd.portal.credential')").startswith("wps_")
            wait_until(page, lambda: "#" not in page.url, "the key to leave the address bar")

            step("switching, when chosen, signs in as the link's account")
            foreign = portal_link(api_url, admin_token, "mallory", 900)
            page.evaluate("(url) => { location.hash = url.split('#')[1]; }", foreign)
            page.get_by_role("dialog", name="Switch accounts?").get_by_role("button", name="Switch to mallory").click()
            expect(page.locator(".account-name")).to_have_text("Signed in as mallory")
            check_clean("switch accounts")

        step("an expired link says so and shows the sign-in form")
        button("Sign out").click()
        url = portal_link(api_url, admin_token, USERNAME, 1)
        time.sleep(2)
        page.goto("about:blank")
        page.goto(f"{base_url}{url}")
        expect(page.get_by_text("This sign-in link has expired or is not valid. Ask for a new one.")).to_be_visible()
        expect(page.get_by_label("API key", exact=True)).to_be_visible()
        assert "wpl_" not in page.url, page.url
        check_clean("expired link")
        shot("10-expired-link")

        browser.close()


def wait_until(page, condition, what, timeout=20):
    """Clicks Refresh until `condition()` holds (the list does not push)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        page.wait_for_timeout(400)
        refresh = page.get_by_role("button", name="Refresh", exact=True)
        if refresh.is_visible() and refresh.is_enabled():
            refresh.click()
            page.wait_for_timeout(300)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhookd", help="webhookd binary to start")
    parser.add_argument("--base-url", help="use a running webhookd at this URL instead of starting one")
    parser.add_argument("--api-key", help="with --base-url: key of a user with no endpoints")
    parser.add_argument("--admin-token", help="with --base-url: WEBHOOKD_ADMIN_TOKEN, for the portal-link steps")
    parser.add_argument("--devserver", action="store_true", help="serve the page from source via devserver.py")
    parser.add_argument("--headed", action="store_true", help="show the browser")
    args = parser.parse_args()
    if not args.base_url and not args.webhookd:
        parser.error("--webhookd PATH is required (or --base-url with --api-key)")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key")
    if args.base_url and not args.admin_token:
        parser.error("--base-url needs --admin-token for the portal-link steps")
    if not os.path.exists(CHROMIUM):
        parser.error(f"{CHROMIUM} not found: apt-get install chromium")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="webhookd-portal-"))
    receiver = Receiver()
    server = dev = None
    ok = False
    try:
        if args.base_url:
            api_url = args.base_url.rstrip("/")
            api_key, admin_token = args.api_key, args.admin_token
        else:
            admin_token = secrets.token_urlsafe(24)
            server = Webhookd(os.path.abspath(args.webhookd), workdir, admin_token)
            step(f"start webhookd on {server.url} (store in {workdir})")
            api_key = server.add_user(USERNAME)
            server.start()
            api_url = server.url
        base_url = api_url
        if args.devserver:
            dev = DevServer(api_url)
            base_url = dev.url
            step(f"dev server on {dev.url}: the page from {REPO / 'crates/webhookd-api/portal'}")
        run(args, base_url, api_key, admin_token, receiver, api_url,
            server.env["WEBHOOKD_INGEST_TOKEN"] if server else None)
        ok = True
    except Exception:
        traceback.print_exc()
        if server:
            print("---- webhookd log (tail) ----\n" + server.tail(), file=sys.stderr)
    finally:
        if dev:
            dev.stop()
        if server:
            server.stop()
        receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'PASS' if ok else 'FAIL'}: portal test ({_step} steps); screenshots in {SHOTS}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
