"""A webhook receiver that verifies every delivery the way receivers in the
wild do: with the official Standard Webhooks library (`standardwebhooks`
from PyPI), and with the JoggAI seeds' Python snippet (hex HMAC-SHA256 of
the raw body keyed by the whole secret), and — for endpoints signing with
ed25519 — Standard Webhooks' `v1a` entries with the public key alone, by
docs/receivers.md's own Python snippet (`cryptography`). Used by tests/standard_webhooks.rs.

POST /__secrets {"old": ..., "new": ..., "old_key": ..., "new_key": ...,
"phase": ...} says which secrets and public keys (`whpk_…`) the receiver
holds (before a rotation old and new are the same); GET /__stats
answers one record per delivery (with the headers and body it came
with); any other POST is a delivery. Prints its port.
"""

import hashlib
import hmac
import json
import pathlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

state = {"old": None, "new": None, "old_key": None, "new_key": None, "phase": None}
records = []
lock = threading.Lock()


def seeds_verify(secret: str, body: bytes, signature) -> bool:
    # The seeds' snippet, unchanged in substance.
    if signature is None or secret is None:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def standard_verify(secret: str, body: bytes, headers) -> bool:
    try:
        Webhook(secret).verify(body, headers)
        return True
    except Exception:
        return False


# docs/receivers.md's ed25519 snippet, as a reader copies it: the deliveries
# it verifies are the test that it works as written.
ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
SNIPPET = re.search(
    r"```python ed25519\n(.*?)```", (ROOT / "docs" / "receivers.md").read_text(), re.S
).group(1)
documented = {}
exec(SNIPPET, documented)


def ed25519_verify(public_key, body: bytes, headers) -> bool:
    if public_key is None:
        return False
    return documented["verified_ed25519"](body, headers, [public_key])


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
            "ed25519_new": ed25519_verify(state["new_key"], body, headers),
            "ed25519_old": ed25519_verify(state["old_key"], body, headers),
            # A body changed on the way fails with the same signature.
            "ed25519_tampered": ed25519_verify(state["new_key"], body + b" ", headers),
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
