"""A webhook receiver that verifies every delivery the way receivers in the
wild do: with the official Standard Webhooks library (`standardwebhooks`
from PyPI), and with the JoggAI seeds' Python snippet (hex HMAC-SHA256 of
the raw body keyed by the whole secret), and — for endpoints signing with
ed25519 — Standard Webhooks' `v1a` entries with the `cryptography` package
and the endpoint's public key alone. Used by tests/standard_webhooks.rs.

POST /__secrets {"old": ..., "new": ..., "old_key": ..., "new_key": ...,
"phase": ...} says which secrets and public keys (`whpk_…`) the receiver
holds (before a rotation old and new are the same); GET /__stats
answers one record per delivery (with the headers and body it came
with); any other POST is a delivery. Prints its port.
"""

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
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


def ed25519_verify(public_key, body: bytes, headers) -> bool:
    """True when a `v1a` entry of webhook-signature verifies with the
    public key alone over "<webhook-id>.<webhook-timestamp>.<body>"."""
    if public_key is None or not public_key.startswith("whpk_"):
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    signed = b".".join(
        [headers.get("webhook-id", "").encode(), headers.get("webhook-timestamp", "").encode(), body]
    )
    for entry in headers.get("webhook-signature", "").split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
            return True
        except (InvalidSignature, ValueError):
            continue
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
