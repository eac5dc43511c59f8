"""The log of the test servers (upstream_proxy.py, static_server.py, token_server.py): one line per
request on standard output, read by the tests."""
import sys
import threading

_LOCK = threading.Lock()


def log_line(line):
    """One write per line, under a lock: print() from a ThreadingHTTPServer's threads writes the
    line and its newline separately, and two requests' lines could run together."""
    with _LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
