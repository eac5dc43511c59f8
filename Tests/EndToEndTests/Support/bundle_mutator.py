"""Makes broken copies of a good bundle for Ferry's verification tests.

  bundle_mutator.py IN OUT OP [ARG]

OPs: flip-layer, flip-manifest, flip-index, swap-blobs, drop-config, unlist-config, absolute,
dotdot, symlink, hardlink, device, duplicate, outside, file-for-dir, unlisted-blob, bad-layout,
gzip, garbage, cut:OFFSET, tamper-manifest, blob-before-manifest, volume-number:N (a volume's
header claims to be volume N), list-offsets (prints cut points).
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def load(path):
    with tarfile.open(path, "r:") as t:
        members = []
        for m in t.getmembers():
            data = t.extractfile(m).read() if m.isfile() else None
            members.append((m, data))
    return members


def save(path, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for m, data in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime, info.linkname = m.type, m.mode, m.mtime, m.linkname
            info.devmajor, info.devminor = m.devmajor, m.devminor
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)


def manifest_of(members):
    return json.loads(next(d for m, d in members if m.name == "ferry-bundle.json"))


def blob(members, media_types):
    listed = {b["digest"].split(":")[1]: b.get("mediaType") for b in manifest_of(members)["blobs"]}
    candidates = [(i, m) for i, (m, d) in enumerate(members)
                  if m.name.startswith("blobs/sha256/") and m.isfile() and listed.get(m.name.split("/")[-1]) in media_types]
    return max(candidates, key=lambda c: c[1].size)


LAYERS = {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip"}
MANIFESTS = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
CONFIGS = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}


def flip(members, index, at=None):
    m, d = members[index]
    d = bytearray(d)
    d[len(d) // 2 if at is None else at] ^= 0x01
    members[index] = (m, bytes(d))


def main():
    src, dst, op = sys.argv[1], sys.argv[2], sys.argv[3]
    if op == "list-offsets":
        with tarfile.open(src, "r:") as t:
            for m in t.getmembers():
                print(m.offset)
                if m.size > 1:
                    print(m.offset_data + m.size // 2)
        return
    if op.startswith("cut:"):
        with open(src, "rb") as f:
            data = f.read(int(op[4:]))
        with open(dst, "wb") as f:
            f.write(data)
        return
    if op == "garbage":
        with open(dst, "wb") as f:
            f.write(os.urandom(100_000))
        return
    if op == "gzip":
        with open(src, "rb") as f, gzip.open(dst, "wb") as g:
            g.write(f.read())
        return
    members = load(src)
    names = [m.name for m, _ in members]
    extra = tarfile.TarInfo
    if op == "flip-layer":
        flip(members, blob(members, LAYERS)[0])
    elif op == "flip-manifest":
        flip(members, blob(members, MANIFESTS)[0], at=5)
    elif op == "flip-index":
        flip(members, names.index("index.json"), at=3)
    elif op == "swap-blobs":
        a = blob(members, LAYERS)[0]
        b = blob(members, CONFIGS)[0]
        (ma, da), (mb, db) = members[a], members[b]
        members[a], members[b] = (ma, db), (mb, da)
    elif op == "drop-config":
        del members[blob(members, CONFIGS)[0]]
    elif op == "unlist-config":
        i, m = blob(members, CONFIGS)
        digest = "sha256:" + m.name.split("/")[-1]
        manifest = manifest_of(members)
        manifest["blobs"] = [b for b in manifest["blobs"] if b["digest"] != digest]
        j = names.index("ferry-bundle.json")
        members[j] = (members[j][0], json.dumps(manifest).encode())
        del members[i]
    elif op in ("absolute", "dotdot", "symlink", "hardlink", "device", "outside"):
        info = extra({"absolute": "/etc/evil", "dotdot": "blobs/../../evil", "symlink": "blobs/sha256/link",
                      "hardlink": "blobs/sha256/hard", "device": "blobs/sha256/dev", "outside": "extra.txt"}[op])
        data = None
        if op == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif op == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "index.json"
        elif op == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            data = b"x"
        members.insert(4, (info, data))
    elif op == "duplicate":
        i, _ = blob(members, CONFIGS)
        members.append(members[i])
    elif op == "file-for-dir":
        i = names.index("blobs")
        info = extra("blobs")
        members[i] = (info, b"not a directory")
    elif op == "unlisted-blob":
        data = b"stowaway"
        members.append((extra("blobs/sha256/" + hashlib.sha256(data).hexdigest()), data))
    elif op == "bad-layout":
        members[names.index("oci-layout")] = (members[names.index("oci-layout")][0], b'{"imageLayoutVersion":"9.9.9"}')
    elif op == "tamper-manifest":
        j = names.index("ferry-bundle.json")
        manifest = manifest_of(members)
        manifest["created"] = "1999-01-01T00:00:00Z"
        members[j] = (members[j][0], json.dumps(manifest).encode())
    elif op.startswith("volume-number:"):
        j = names.index("ferry-volume.json")
        header = json.loads(members[j][1])
        header["number"] = int(op.split(":", 1)[1])
        members[j] = (members[j][0], json.dumps(header).encode())
    elif op == "blob-before-manifest":
        i, _ = blob(members, CONFIGS)
        members.insert(1, members.pop(i))
    else:
        raise SystemExit(f"unknown op {op}")
    save(dst, members)


if __name__ == "__main__":
    main()
