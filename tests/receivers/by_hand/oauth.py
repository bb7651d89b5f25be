"""docs/receivers.md's Node or Go OAuth2 receiver (argv[1]: js or go) against a
real webhookd and a small authorization server: tokens are taken, a
revoked one gets a 401, a new token and the delivery in the same attempt."""
import sys, threading
from harness import *
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
lang = sys.argv[1]
work = tempfile.mkdtemp()
state = {"issued": [], "revoked": set()}
class Auth(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        if self.path == "/token":
            tok = f"tok-{len(state['issued'])+1}"; state["issued"].append(tok)
            out = {"access_token": tok, "token_type": "Bearer", "expires_in": 3600}
        else:
            assert self.headers["authorization"] == "Basic bXktcmVjZWl2ZXI6cmVjZWl2ZXItc2VjcmV0", self.headers["authorization"]
            t = urllib.parse.parse_qs(body)["token"][0]
            out = {"active": t in state["issued"] and t not in state["revoked"]}
        data = json.dumps(out).encode()
        self.send_response(200); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
import urllib.parse
auth = ThreadingHTTPServer(("127.0.0.1", 0), Auth); threading.Thread(target=auth.serve_forever, daemon=True).start()
aport = auth.server_address[1]
port = free()
intro = f"http://127.0.0.1:{aport}/introspect"
if lang == "js":
    code = snippet("js", "INTROSPECTION_URL").replace("https://auth.example.com/oauth/introspect", intro).replace("listen(8080)", f"listen({port})")
    open(f"{work}/r.js","w").write(code); cmd = ["node", "r.js"]
else:
    code = snippet("go", "introspectionURL").replace("https://auth.example.com/oauth/introspect", intro).replace('":8080"', f'":{port}"')
    os.makedirs(f"{work}/g", exist_ok=True); open(f"{work}/g/main.go","w").write(code)
    subprocess.run(["go", "build", "-o", f"{work}/recv", "main.go"], cwd=f"{work}/g", check=True, env={**os.environ, "GO111MODULE": "off", "GOCACHE": "/tmp/gocache"})
    cmd = [f"{work}/recv"]
recv = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
wait_port(port)
proc, base, key = start_webhookd(work, False)
try:
    ep = api(base, key, "POST", "/v2/endpoint", {"url": f"http://127.0.0.1:{port}/hook", "events": ["generated_video_success"], "retry_schedule": ["1h"],
        "oauth2": {"token_url": f"http://127.0.0.1:{aport}/token", "client_id": "webhookd", "client_secret": "cs"}})["data"]["endpoint_id"]
    publish(base, "evt_o1"); d1 = len(status(base, key, ep, "delivered", 1))
    state["revoked"].add("tok-1")
    publish(base, "evt_o2"); d = status(base, key, ep, "delivered", 2)
    print(lang, "delivered", d1, len(d), "attempts", [len(x["attempts"]) for x in d], "issued", state["issued"])
finally:
    proc.kill(); recv.kill(); print(recv.stdout.read()[:300])
