#!/usr/bin/env python3
"""Serve the portal straight from its source folder, so the page can be
changed without rebuilding webhookd.

    python3 tests/portal/devserver.py --upstream http://127.0.0.1:8080 [--listen 127.0.0.1:8081]

`/portal` is `index.html`, `/portal/assets/<name>` is any file of
`crates/webhookd-api/portal/`, both with the Content-Security-Policy webhookd
sends, so a CSP violation shows up during development just as in
production. Every other request (method, headers, body) goes to the running
webhookd given by `--upstream`, and its answer comes back unchanged.

Standard library only.
"""

import argparse
import http.client
import http.server
import mimetypes
import pathlib
import sys
import urllib.parse

PORTAL_DIR = pathlib.Path(__file__).resolve().parents[2] / "crates" / "webhookd-api" / "portal"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own business.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_OPTIONS(self):
        self._dispatch()

    def _dispatch(self):
        path = urllib.parse.urlsplit(self.path).path
        if self.command in ("GET", "HEAD") and path in ("/portal", "/portal/"):
            return self._serve_file("index.html")
        if self.command in ("GET", "HEAD") and path.startswith("/portal/assets/"):
            return self._serve_file(path.removeprefix("/portal/assets/"))
        return self._proxy()

    def _serve_file(self, name):
        file = PORTAL_DIR / name
        # Flat folder: a name with a slash (or dots to climb out) is not ours.
        if "/" in name or name.startswith(".") or not file.is_file():
            body = b'{"code":10104,"msg":"no such portal asset"}'
            return self._answer(404, "application/json", body)
        body = file.read_bytes()
        kind = CONTENT_TYPES.get(file.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._answer(200, kind, body)

    def _answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port or 80, timeout=30)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            payload = answer.read()
        except OSError as error:
            # Not the envelope: to the page this is "webhookd cannot be reached".
            message = f"dev server: webhookd at {self.upstream.geturl()} is unreachable ({error.__class__.__name__})"
            return self._answer(502, "text/plain; charset=utf-8", message.encode())
        finally:
            connection.close()
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write(f"devserver: {self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="running webhookd, e.g. http://127.0.0.1:8080")
    parser.add_argument("--listen", default="127.0.0.1:8081", help="address to serve on (default 127.0.0.1:8081)")
    args = parser.parse_args()
    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        parser.error("--upstream must be an http:// URL with a host")
    host, _, port = args.listen.rpartition(":")
    Handler.upstream = upstream
    server = http.server.ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    print(f"portal dev server: http://{host}:{server.server_port}/portal (files from {PORTAL_DIR}, API from {args.upstream})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
