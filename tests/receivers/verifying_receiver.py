"""A webhook receiver that verifies every delivery the way receivers in the
wild do: with the official Standard Webhooks library (`standardwebhooks`
from PyPI), and with the JoggAI seeds' Python snippet (hex HMAC-SHA256 of
the raw body keyed by the whole secret). Used by tests/standard_webhooks.rs.

POST /__secrets {"old": ..., "new": ..., "phase": ...} says which secrets
the receiver holds (before a rotation both are the same); GET /__stats
answers one record per delivery (with the headers and body it came
with); any other POST is a delivery. Prints its port.
"""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

state = {"old": None, "new": None, "phase": None}
records = []
lock = threading.Lock()


def seeds_verify(secret: str, body: bytes, signature) -> bool:
    # The seeds' snippet, unchanged in substance.
    if signature is None:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def standard_verify(secret: str, body: bytes, headers) -> bool:
    try:
        Webhook(secret).verify(body, headers)
        return True
    except Exception:
        return False


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            self.answer(200, json.dumps(records).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/__secrets":
            state.update(json.loads(body))
            return self.answer(200)
        headers = {name.lower(): value for name, value in self.headers.items()}
        old, new = state["old"], state["new"]
        record = {
            "phase": state["phase"],
            "standard_new": standard_verify(new, body, headers),
            "standard_old": standard_verify(old, body, headers),
            "signature_old": seeds_verify(old, body, headers.get("x-webhook-signature")),
            "signature_new": seeds_verify(new, body, headers.get("x-webhook-signature")),
            "next_new": seeds_verify(new, body, headers.get("x-webhook-signature-next")),
            "has_next": "x-webhook-signature-next" in headers,
            # What arrived, for comparing with the delivery detail.
            "headers": headers,
            "body": body.decode("utf-8"),
        }
        with lock:
            records.append(record)
        self.answer(200)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
