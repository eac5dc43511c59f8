"""A minimal Docker registry token server for Ferry's tests (127.0.0.1 only).

GET /token?service=S&scope=repository:NAME:pull[,push] with HTTP basic auth for the one user it
knows; answers {"token", "access_token", "expires_in"} with an ES256 JWT whose x5c header carries
a self-signed certificate, written to --cert for the registry's rootcertbundle.
"""
import argparse
import base64
import datetime
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from serverlog import log_line


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--service", required=True)
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry test token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(args.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # quiet default logging
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_response(404)
                self.end_headers()
                return
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"details":"bad credentials"}')
                return
            query = parse_qs(url.query)
            access = []
            for scope in query.get("scope", []):
                for item in scope.split(" "):
                    parts = item.split(":")
                    if len(parts) >= 3 and parts[0] == "repository":
                        access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                       "actions": parts[-1].split(",")})
            issued = int(time.time())
            header = {"typ": "JWT", "alg": "ES256", "x5c": [x5c]}
            claims = {"iss": args.issuer, "sub": args.user, "aud": args.service, "exp": issued + 300,
                      "nbf": issued - 10, "iat": issued, "jti": str(uuid.uuid4()), "access": access}
            signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
            token = signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            log_line(f"issued token for {query.get('scope', [])}")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
