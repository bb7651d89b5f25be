"""docs/receivers.md's Node or Go mTLS receiver (argv[1]: js or go) against a real
webhookd: the endpoint with the right client certificate is delivered to,
one without it is refused. Needs node or go, python3 with cryptography,
and target/debug/webhookd (or WEBHOOKD=path)."""
import sys
from harness import *
lang, cmd_fn = sys.argv[1], None
work = tempfile.mkdtemp()
server_ca, server_ca_key = ca("receiver CA"); clients_ca, clients_ca_key = ca("clients CA"); other, other_key = ca("other")
scert, skey = leaf(server_ca, server_ca_key, "receiver", ip="127.0.0.1")
open(f"{work}/server.pem","w").write(scert); open(f"{work}/server-key.pem","w").write(skey)
open(f"{work}/webhookd-clients-ca.pem","w").write(pem(clients_ca))
port = free()
if lang == "js":
    code = snippet("js", "requestCert").replace("listen(8443)", f"listen({port})")
    open(f"{work}/r.js","w").write(code); cmd = ["node", "r.js"]
else:
    code = snippet("go", "RequireAndVerifyClientCert").replace('":8443"', f'":{port}"')
    os.makedirs(f"{work}/g", exist_ok=True); open(f"{work}/g/main.go","w").write(code)
    subprocess.run(["go", "build", "-o", f"{work}/recv", "main.go"], cwd=f"{work}/g", check=True, env={**os.environ, "GO111MODULE": "off", "GOCACHE": "/tmp/gocache"})
    cmd = [f"{work}/recv"]
recv = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
wait_port(port)
proc, base, key = start_webhookd(work, True)
try:
    ccert, ckey = leaf(clients_ca, clients_ca_key, "webhookd.example", client=True)
    good = api(base, key, "POST", "/v2/endpoint", {"url": f"https://127.0.0.1:{port}/hook", "events": ["generated_video_success"], "ca_cert": pem(server_ca), "client_cert": ccert, "client_key": ckey, "retry_schedule": ["1h"]})["data"]["endpoint_id"]
    bad = api(base, key, "POST", "/v2/endpoint", {"url": f"https://127.0.0.1:{port}/hook", "events": ["generated_video_success"], "ca_cert": pem(server_ca), "retry_schedule": ["1h"]})["data"]["endpoint_id"]
    publish(base, "evt_h1")
    print(lang, "delivered:", len(status(base, key, good, "delivered")), "refused:", status(base, key, bad, "pending")[0]["attempts"][0]["reason"])
finally:
    proc.kill(); recv.kill()
    print(recv.stdout.read()[:500])
