#!/usr/bin/env python3
"""Runs a command and prints "SECONDS PEAK_RSS_KIB WRITE_BYTES" for it on one line (to stderr the
command's own output goes as usual; the line goes to the file named by --out).

  measure.py --out FILE -- COMMAND...

WRITE_BYTES is the process's write_bytes from /proc/PID/io (bytes it caused to be written to
storage, copies in the kernel included), read after it exited and before it is reaped.
"""
import os
import resource
import subprocess
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    command = args[args.index("--") + 1:]
    start = time.monotonic()
    process = subprocess.Popen(command)
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    elapsed = time.monotonic() - start
    written = 0
    with open(f"/proc/{process.pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                written = int(line.split()[1])
    status = process.wait()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        f.write(f"{elapsed:.2f} {rss} {written}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
