#!/usr/bin/env python3
"""HEAD load generator for Benchmarks/serve.sh: wrk 4.1 (Debian) cannot measure HEAD (it waits for
the body a Content-Length announces), and ab does the same with keep-alive.

  headload.py URL --ca FILE [--header H]... [--connections 50] [--duration 10] [--processes 2]

Keeps CONNECTIONS keep-alive TLS connections (split over PROCESSES processes), each sending HEAD
requests back to back for DURATION seconds; prints requests/s and the count of non-2xx answers.
"""
import argparse
import asyncio
import multiprocessing
import ssl
import time
import urllib.parse


async def worker(url, context, headers, deadline, counts):
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    path = parts.path + (("?" + parts.query) if parts.query else "")
    request = f"HEAD {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    request = request.encode()
    while time.monotonic() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        counts[0 if 200 <= status < 300 else 1] += 1
    writer.close()


def run(url, ca, headers, connections, duration, queue):
    context = ssl.create_default_context(cafile=ca)
    counts = [0, 0]

    async def main():
        deadline = time.monotonic() + duration
        await asyncio.gather(*(worker(url, context, headers, deadline, counts) for _ in range(connections)))

    asyncio.run(main())
    queue.put(counts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    queue = multiprocessing.Queue()
    share = [args.connections // args.processes + (1 if i < args.connections % args.processes else 0)
             for i in range(args.processes)]
    processes = [multiprocessing.Process(target=run, args=(args.url, args.ca, args.header, n, args.duration, queue))
                 for n in share]
    for p in processes:
        p.start()
    totals = [0, 0]
    for _ in processes:
        ok, bad = queue.get()
        totals[0] += ok
        totals[1] += bad
    for p in processes:
        p.join()
    print(f"{(totals[0] + totals[1]) / args.duration:.0f} {totals[1]}")


if __name__ == "__main__":
    main()
