"""A webhook receiver that verifies every delivery the way receivers in the
wild do: with the official Standard Webhooks library (`standardwebhooks`
from PyPI), and with the JoggAI seeds' Python snippet (hex HMAC-SHA256 of
the raw body keyed by the whole secret). Used by tests/standard_webhooks.rs.

POST /__secret sets the endpoint secret (body: the secret); GET /__stats
answers the counts as JSON; any other POST is a delivery. Prints its port.
"""

import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

state = {"secret": None}
stats = {"standard_ok": 0, "standard_failed": 0, "joggai_ok": 0, "joggai_failed": 0}
lock = threading.Lock()


def joggai_verify(secret: str, body: bytes, signature: str) -> bool:
    # The seeds' snippet, unchanged in substance.
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


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
            self.answer(200, json.dumps(stats).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/__secret":
            state["secret"] = body.decode()
            return self.answer(200)
        secret = state["secret"]
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            Webhook(secret).verify(body, headers)
            standard = True
        except Exception:
            standard = False
        joggai = joggai_verify(secret, body, headers.get("x-webhook-signature", ""))
        with lock:
            stats["standard_ok" if standard else "standard_failed"] += 1
            stats["joggai_ok" if joggai else "joggai_failed"] += 1
        self.answer(200 if standard and joggai else 400)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
