#!/usr/bin/env python3
"""docs/receivers.md's Python snippet works with every shape of headers a
receiver meets: a case-insensitive mapping's canonical names, a plain dict
with lowercase names (AWS Lambda), raw ASGI's list of byte pairs."""

import hashlib
import hmac
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
doc = (ROOT / "docs" / "receivers.md").read_text()
snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
namespace = {}
exec(snippet.replace("whsec_new…", "whsec_new").replace("whsec_old…", "whsec_old"), namespace)
verified = namespace["verified"]

body = b'{"event_id":"evt_1","event":"generated_video_success","timestamp":1,"data":{}}'
old = hmac.new(b"whsec_old", body, hashlib.sha256).hexdigest()
new = hmac.new(b"whsec_new", body, hashlib.sha256).hexdigest()
for headers in (
    {"X-Webhook-Signature": old},
    {"x-webhook-signature": old},
    {"x-webhook-signature": "0" * 64, "x-webhook-signature-next": new},
    [(b"content-type", b"application/json"), (b"x-webhook-signature", new.encode())],
):
    assert verified(body, headers), headers
for headers in ({}, {"x-webhook-signature": "0" * 64}, [(b"x-webhook-signature", b"nope")]):
    assert not verified(body, headers), headers
assert not verified(body + b" ", {"x-webhook-signature": old})
print("docs/receivers.md's Python snippet verifies every header shape")
