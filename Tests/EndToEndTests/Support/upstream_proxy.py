"""An upstream registry that misbehaves on purpose, in front of a real distribution registry.

Listens on --port (the "registry") and --cdn-port (another origin, like Docker Hub's blob CDN) on
127.0.0.1 and forwards to --backend. Options:
  --require-basic USER:PASS  answer 401 with a Basic challenge unless the request carries them;
  --redirect-blobs           send blob GETs to the CDN origin with a 307 (the CDN logs whether an
                             Authorization header reached it);
  --flaky-blobs              per blob: 1st GET 503, 2nd 429 with Retry-After: 1, 3rd cut off
                             mid-body, 4th served.
  --unavailable-while FILE --unavailable-path TEXT
                             while FILE holds a number N > 0, answer 503 to the next N requests whose
                             path contains TEXT (N counts down in the file).
  --corrupt-blobs            flip one byte in the middle of every blob GET's body.
  --extend-blobs N           send N bytes more than each blob has (Content-Length says so too): a
                             registry that lies about a blob's size.
  --ignore-range             drop a request's Range header: every blob GET answers 200 with the
                             whole blob, as a server without range support does.
Every request is logged as one line: "front|cdn METHOD PATH STATUS auth=yes|no".
"""
import argparse
import base64
import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serverlog import log_line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cdn-port", type=int, required=True)
    parser.add_argument("--backend", required=True)  # host:port of a plain-HTTP registry
    parser.add_argument("--require-basic")
    parser.add_argument("--redirect-blobs", action="store_true")
    parser.add_argument("--flaky-blobs", action="store_true")
    parser.add_argument("--unavailable-while")
    parser.add_argument("--unavailable-path")
    parser.add_argument("--corrupt-blobs", action="store_true")
    parser.add_argument("--extend-blobs", type=int, default=0)
    parser.add_argument("--ignore-range", action="store_true")
    args = parser.parse_args()
    expected = ("Basic " + base64.b64encode(args.require_basic.encode()).decode()) if args.require_basic else None
    attempts = {}
    lock = threading.Lock()

    def take_outage():
        with lock:
            try:
                with open(args.unavailable_while) as f:
                    left = int(f.read().strip() or "0")
            except (OSError, ValueError):
                return False
            if left <= 0:
                return False
            with open(args.unavailable_while, "w") as f:
                f.write(str(left - 1))
            return True

    log = log_line

    def forward(handler, path, head_only=False, cut=False, corrupt=False, blob=False):
        conn = http.client.HTTPConnection(args.backend, timeout=60)
        # Clients send several Accept headers: all of them go on, joined.
        headers = {}
        for k, v in handler.headers.items():
            if k.lower() == "accept" or (k.lower() == "range" and not args.ignore_range):
                headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        conn.request(handler.command, path, headers=headers)
        resp = conn.getresponse()
        handler.send_response(resp.status)
        extra = args.extend_blobs if blob and resp.status == 200 else 0
        for k, v in resp.getheaders():
            if k.lower() == "content-length" and extra:
                v = str(int(v) + extra)
            if k.lower() not in ("connection", "transfer-encoding"):
                handler.send_header(k, v)
        handler.end_headers()
        sent = 0
        length = int(resp.getheader("Content-Length") or 0)
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            if cut and sent + len(chunk) > length // 2:
                handler.wfile.write(chunk[: max(0, length // 2 - sent)])
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)
                return resp.status
            if corrupt and sent <= length // 2 < sent + len(chunk):
                at = length // 2 - sent
                chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1:]
            handler.wfile.write(chunk)
            sent += len(chunk)
        if extra:
            handler.wfile.write(bytes(extra))
        return resp.status

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def handle_any(self):
            auth = "yes" if self.headers.get("Authorization") else "no"
            if expected and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="proxy"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                log(f"front {self.command} {self.path} 401 auth={auth}")
                return
            if args.unavailable_while and args.unavailable_path in self.path and take_outage():
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                log(f"front {self.command} {self.path} 503 auth={auth}")
                return
            is_blob = "/blobs/sha256:" in self.path and self.command == "GET"
            if is_blob and args.flaky_blobs:
                with lock:
                    n = attempts.get(self.path, 0) + 1
                    attempts[self.path] = n
                if n == 1:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    log(f"front {self.command} {self.path} 503 auth={auth}")
                    return
                if n == 2:
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    log(f"front {self.command} {self.path} 429 auth={auth}")
                    return
                if n == 3:
                    status = forward(self, self.path, cut=True)
                    log(f"front {self.command} {self.path} {status}-cut auth={auth}")
                    return
            if is_blob and args.redirect_blobs:
                self.send_response(307)
                self.send_header("Location", f"http://127.0.0.1:{args.cdn_port}/cdn{self.path}?signature=x")
                self.send_header("Content-Length", "0")
                self.end_headers()
                log(f"front {self.command} {self.path} 307 auth={auth}")
                return
            status = forward(self, self.path, corrupt=is_blob and args.corrupt_blobs, blob=is_blob)
            log(f"front {self.command} {self.path} {status} auth={auth}")

        do_GET = handle_any
        do_HEAD = handle_any

    class Cdn(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def do_GET(self):
            auth = "yes" if self.headers.get("Authorization") else "no"
            path = self.path.split("?")[0][len("/cdn"):]
            status = forward(self, path)
            log(f"cdn {self.command} {path} {status} auth={auth}")

    cdn = ThreadingHTTPServer(("127.0.0.1", args.cdn_port), Cdn)
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", args.port), Front).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
