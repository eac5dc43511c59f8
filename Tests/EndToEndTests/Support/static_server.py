"""A static file server over TLS on 127.0.0.1, like the web servers that host Helm chart repositories.

  --port N --root DIR --cert FILE --key FILE [--require-basic USER:PASS] [--no-length]

With --require-basic, a request without those credentials gets 401 and a Basic challenge. With
--no-length, .tgz files are sent without Content-Length (the end of the body is the connection's). Every
request is logged as one line: "METHOD PATH STATUS auth=yes|no".
"""
import argparse
import base64
import functools
import ssl
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from serverlog import log_line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--require-basic")
    parser.add_argument("--no-length", action="store_true")
    args = parser.parse_args()
    expected = ("Basic " + base64.b64encode(args.require_basic.encode()).decode()) if args.require_basic else None

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            auth = self.headers.get("Authorization")
            if expected and auth != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if args.no_length and self.path.endswith(".tgz"):
                path = self.translate_path(self.path)
                try:
                    with open(path, "rb") as f:
                        body = f.read()
                except OSError:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                # The body ends with the connection: close TLS cleanly (close_notify), as web servers do.
                try:
                    self.request.unwrap()
                except OSError:
                    pass
                self.close_connection = True
                return
            super().do_GET()

        def log_request(self, code="-", size="-"):
            auth = "yes" if self.headers.get("Authorization") else "no"
            log_line(f"{self.command} {self.path} {code} auth={auth}")

        def log_message(self, format, *arguments):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), functools.partial(Handler, directory=args.root))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
