"""Shared by mtls.py and oauth.py: certificates, a webhookd on the embedded
store, its API, and the snippets of docs/receivers.md."""
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request, datetime, pathlib, shutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

DOC = (pathlib.Path(__file__).resolve().parents[3] / "docs/receivers.md").read_text()
BIN = os.environ.get("WEBHOOKD", str(pathlib.Path(__file__).resolve().parents[3] / "target/debug/webhookd"))
now = datetime.datetime.utcnow()

def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def key(): return ec.generate_private_key(ec.SECP256R1())
def pem(obj): return obj.public_bytes(serialization.Encoding.PEM).decode()
def keypem(k): return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
def ca(cn):
    k = key()
    c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
         .sign(k, hashes.SHA256()))
    return c, k
def leaf(issuer, ikey, cn, ip=None, client=False):
    k = key()
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer.subject).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30)))
    sans = [x509.IPAddress(ipaddress.ip_address(ip))] if ip else [x509.DNSName(cn)]
    b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return pem(b.sign(ikey, hashes.SHA256())), keypem(k)

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def snippet(lang, marker):
    for block in re.findall(r"```" + lang + r"\n(.*?)```", DOC, re.S):
        if marker in block: return block
    raise SystemExit(f"no {lang} block with {marker}")

def api(base, key, method, path, body=None, token=None):
    h = {"content-type": "application/json"}
    if key: h["x-api-key"] = key
    if token: h["authorization"] = f"Bearer {token}"
    r = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None, headers=h, method=method)
    with urllib.request.urlopen(r) as a: return json.load(a) if a.status != 202 else None

def wait_port(p):
    for _ in range(600):
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError: time.sleep(0.1)
    raise SystemExit("receiver never listened")

def start_webhookd(work, https):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKD_")}
    env.update(WEBHOOKD_STORE=f"sqlite://{work}/db", WEBHOOKD_LISTEN="127.0.0.1:0", WEBHOOKD_INGEST_TOKEN="whi_harness_token_0123456789",
               WEBHOOKD_ALLOWED_NETWORKS="127.0.0.0/8", WEBHOOKD_REQUIRE_HTTPS=str(https).lower())
    key = subprocess.run([BIN, "users", "add", "--create", "johndoe"], env=env, capture_output=True, text=True).stdout.strip().split()[-1]
    proc = subprocess.Popen([BIN, "serve", "--log-format", "json"], env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "webhookd is ready" in line:
            base = "http://" + json.loads(line)["listen"]; break
    import threading; threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, base, key

def publish(base, eid):
    api(base, None, "POST", "/internal/events", {"event": "generated_video_success", "username": "johndoe", "event_id": eid, "data": {}}, token="whi_harness_token_0123456789")

def status(base, key, ep, st, n=1):
    for _ in range(200):
        d = api(base, key, "GET", f"/v2/endpoint/{ep}/deliveries?status={st}")["data"]["deliveries"]
        if len([x for x in d if x["attempts"]]) >= n: return d
        time.sleep(0.1)
    return d
