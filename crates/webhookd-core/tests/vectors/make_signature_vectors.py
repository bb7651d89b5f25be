#!/usr/bin/env python3
"""Computes X-Webhook-Signature test vectors with the receivers' own code.

Each signature is computed three independent ways, exactly as the JoggAI
documentation's snippets do it (shared/seeds/ beside this repository):
  - Python:  hmac.new(secret.encode('utf-8'), payload, hashlib.sha256).hexdigest()
  - openssl: echo -n "$payload" | openssl dgst -sha256 -hmac "$secret" | awk '{print $2}'
  - Node.js: crypto.createHmac('sha256', secret).update(payload).digest('hex')
and the script refuses to write a vector on which they disagree.

Run from this directory:  python3 make_signature_vectors.py > signatures.json
(committed output made with Python 3.11.7, OpenSSL 3.0, Node.js 20).
"""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

SEED_BODY = (
    '{"event_id":"evt_123456789","event":"generated_avatar_video_success",'
    '"timestamp":1732806631,"data":{"video_id":"video_123456","status":"completed",'
    '"video_url":"https://res.jogg.ai/video.mp4","cover_url":"https://res.jogg.ai/cover.jpg","duration":30}}'
)
NON_ASCII_BODY = (
    '{"event_id":"evt_ü","event":"generated_script_success","timestamp":1732806631,'
    '"data":{"title":"视频生成完成 ✅","name":"Zoë Ångström","emoji":"🎬🚀","escaped":"\\u00e9\\n"}}'
)
LONG_BODY = (
    '{"event_id":"evt_long","event":"generated_image_success","timestamp":1732806631,"data":{"images":['
    + ",".join(f'"https://res.jogg.ai/img/{i:06d}.png"' for i in range(2700))
    + "]}}"
)

VECTORS = [
    ("seed_example", "whsec_abc123xyz", SEED_BODY),
    ("non_ascii_body", "whsec_abc123xyz", NON_ASCII_BODY),
    ("long_body", "whsec_9GxGJ3F0rQ1ti8r5Cq0Mgq2cJ1zY5m1gM2vL7QZx8NU=", LONG_BODY),
    ("base64_secret_with_symbols", "whsec_+/+/aGVsbG8gd29ybGQ=", SEED_BODY),
    ("secret_longer_than_the_sha256_block", "whsec_" + "k" * 100, SEED_BODY),
    ("empty_body", "whsec_abc123xyz", ""),
]


def python_snippet(payload: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def openssl_snippet(payload: str, secret: str) -> str:
    script = 'echo -n "$payload" | openssl dgst -sha256 -hmac "$secret" | awk \'{print $2}\''
    env = dict(os.environ, payload=payload, secret=secret)
    return subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True, text=True).stdout.strip()


def node_snippet(payload: bytes, secret: str) -> str:
    with tempfile.NamedTemporaryFile() as body:
        body.write(payload)
        body.flush()
        script = (
            "const crypto = require('crypto');"
            "const payload = require('fs').readFileSync(process.argv[1]);"
            "process.stdout.write(crypto.createHmac('sha256', process.env.secret).update(payload).digest('hex'));"
        )
        env = dict(os.environ, secret=secret)
        return subprocess.run(["node", "-e", script, body.name], env=env, check=True, capture_output=True, text=True).stdout


vectors = []
for name, secret, body in VECTORS:
    payload = body.encode("utf-8")
    results = {
        "python": python_snippet(payload, secret),
        "openssl": openssl_snippet(body, secret),
        "node": node_snippet(payload, secret),
    }
    if len(set(results.values())) != 1:
        sys.exit(f"{name}: the snippets disagree: {results}")
    vectors.append({"name": name, "secret": secret, "body": body, "signature": results["python"]})

json.dump(vectors, sys.stdout, ensure_ascii=False, indent=1)
print()
