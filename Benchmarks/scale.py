#!/usr/bin/python3
"""Helpers for Benchmarks/scale.sh: seed a store with many small manifests, push manifests and time them.

  scale.py seed-appliance DATA_DIR REPOS PER_REPO     rows straight into the appliance's registry.db
  scale.py seed-registry ROOT REPOS PER_REPO          the same content in a distribution registry's storage
  scale.py push HOST CA USER PASSWORD COUNT TAG_PREFIX  COUNT manifest PUTs over 10 repositories, one
                                                      connection, Basic credentials on every request;
                                                      prints the seconds of each 100
  scale.py refs HOST REPOS PER_REPO                   the image references of the first REPOS x PER_REPO

Every image is a small OCI manifest (one shared config, one shared layer, an annotation that makes
it unique) in repository bench.local/scale/rNNNNN with tags t0..t(PER_REPO-1). Seeding writes what each server
itself would have written for those pushes, so the push cost can be measured with 100k manifests
stored without spending an hour pushing them first.
"""
import base64
import hashlib
import http.client
import json
import os
import sqlite3
import ssl
import sys
import time

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"ferry scale benchmark layer\n"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(repo, tag):
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest(LAYER), "size": len(LAYER)}],
        "annotations": {"org.example.image": f"{repo}:{tag}"},
    }, separators=(",", ":"), sort_keys=True).encode()


def repo_name(i):
    return f"bench.local/scale/r{i:05d}"


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def seed_appliance(data_dir, repos, per_repo):
    db = sqlite3.connect(os.path.join(data_dir, "registry.db"))
    db.execute("PRAGMA journal_mode=WAL")
    blobs = os.path.join(data_dir, "store", "blobs", "sha256")
    for content in (CONFIG, LAYER):
        write(os.path.join(blobs, digest(content)[7:]), content)
    with db:
        for r in range(repos):
            name = repo_name(r)
            db.execute("INSERT OR IGNORE INTO repositories(name) VALUES (?)", (name,))
            rid = db.execute("SELECT id FROM repositories WHERE name = ?", (name,)).fetchone()[0]
            for content in (CONFIG, LAYER):
                db.execute("INSERT OR IGNORE INTO blob_links(repository, digest) VALUES (?, ?)", (rid, digest(content)))
            for t in range(per_repo):
                body = manifest(name, f"t{t}")
                d = digest(body)
                write(os.path.join(blobs, d[7:]), body)
                db.execute(
                    "INSERT OR IGNORE INTO manifests(repository, digest, media_type, size, subject, artifact_type)"
                    " VALUES (?, ?, ?, ?, NULL, ?)", (rid, d, OCI_MANIFEST, len(body), OCI_CONFIG))
                for child in (CONFIG, LAYER):
                    db.execute("INSERT OR IGNORE INTO manifest_children(manifest, child) VALUES (?, ?)",
                               (d, digest(child)))
                db.execute("INSERT OR REPLACE INTO tags(repository, name, digest) VALUES (?, ?, ?)", (rid, f"t{t}", d))
    db.close()


def seed_registry(root, repos, per_repo):
    v2 = os.path.join(root, "docker", "registry", "v2")

    def blob(content):
        hexa = digest(content)[7:]
        write(os.path.join(v2, "blobs", "sha256", hexa[:2], hexa, "data"), content)

    for content in (CONFIG, LAYER):
        blob(content)
    for r in range(repos):
        name = repo_name(r)
        base = os.path.join(v2, "repositories", name)
        for content in (CONFIG, LAYER):
            d = digest(content)
            write(os.path.join(base, "_layers", "sha256", d[7:], "link"), d.encode())
        for t in range(per_repo):
            body = manifest(name, f"t{t}")
            d = digest(body)
            blob(body)
            write(os.path.join(base, "_manifests", "revisions", "sha256", d[7:], "link"), d.encode())
            tag = os.path.join(base, "_manifests", "tags", f"t{t}")
            write(os.path.join(tag, "current", "link"), d.encode())
            write(os.path.join(tag, "index", "sha256", d[7:], "link"), d.encode())


def push(host, ca, user, password, count, tag_prefix):
    context = ssl.create_default_context(cafile=ca)
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    connection = http.client.HTTPSConnection(host, context=context, timeout=120)

    def request(method, path, body=None, headers=None):
        h = {"Authorization": auth}
        h.update(headers or {})
        connection.request(method, path, body=body, headers=h)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")

    repos = [repo_name(i) for i in range(10)]
    for name in repos:  # the blobs each repository needs (not timed): POST, then PUT with the bytes
        for content in (CONFIG, LAYER):
            if request("HEAD", f"/v2/{name}/blobs/{digest(content)}")[0] != 200:
                status, location = request("POST", f"/v2/{name}/blobs/uploads/")
                assert status == 202, f"upload session in {name}: {status}"
                separator = "&" if "?" in location else "?"
                path = location.split("://", 1)[-1]
                path = path[path.index("/"):] if not location.startswith("/") else location
                status, _ = request("PUT", f"{path}{separator}digest={digest(content)}", content,
                                    {"Content-Type": "application/octet-stream"})
                assert status == 201, f"blob upload into {name}: {status}"
    batch = []
    started = time.monotonic()
    for i in range(count):
        name = repos[i % len(repos)]
        tag = f"{tag_prefix}{i}"
        status, _ = request("PUT", f"/v2/{name}/manifests/{tag}", manifest(name, tag), {"Content-Type": OCI_MANIFEST})
        assert status == 201, f"PUT {name}:{tag}: {status}"
        if (i + 1) % 100 == 0:
            now = time.monotonic()
            batch.append(now - started)
            started = now
    print(" ".join(f"{s:.3f}" for s in batch))


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "seed-appliance":
        seed_appliance(args[0], int(args[1]), int(args[2]))
    elif command == "seed-registry":
        seed_registry(args[0], int(args[1]), int(args[2]))
    elif command == "push":
        push(args[0], args[1], args[2], args[3], int(args[4]), args[5])
    elif command == "refs":
        for r in range(int(args[1])):
            for t in range(int(args[2])):
                print(f"{args[0]}/{repo_name(r)}:t{t}")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
