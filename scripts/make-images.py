#!/usr/bin/env python3
"""Builds test images and pushes them to a registry with skopeo (for the quickstart and benchmarks).

  make-images.py --registry 127.0.0.1:5000 [--cert-dir DIR | --insecure] SPEC...

SPEC is NAME:TAG=SIZE[,SIZE...][@OS/ARCH[/VARIANT][+OS/ARCH...]], e.g.
  demo/web:1.0=8M,2M@linux/amd64+linux/arm64   an index of two platforms; the first layer is shared
  demo/big:1=1G                                one linux/amd64 image with a 1 GiB layer
Layers are uncompressed tars of one file of random bytes, streamed to disk (memory stays small).
A layer size given as base:SIZE is the same layer in every image that names it (shared layers).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_of(text: str) -> int:
    text = text.split("#")[0]
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


class Layout:
    def __init__(self, root: str) -> None:
        self.root = root
        self.shared = {}
        os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
        with open(f"{root}/oci-layout", "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(f"{self.root}/blobs/sha256/{digest}", "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def layer(self, spec: str) -> dict:
        if spec.startswith("base:"):
            if spec not in self.shared:
                self.shared[spec] = self.layer(spec[len("base:"):])
            return self.shared[spec]
        size = size_of(spec)
        tmp = f"{self.root}/layer.tmp"
        hasher = hashlib.sha256()
        with open(tmp, "wb") as out:
            header = tarfile.TarInfo("data.bin")
            header.size = size
            header.mtime = 0
            block = header.tobuf(format=tarfile.PAX_FORMAT)
            out.write(block)
            hasher.update(block)
            remaining = size
            while remaining:
                chunk = os.urandom(min(remaining, 4 << 20))
                out.write(chunk)
                hasher.update(chunk)
                remaining -= len(chunk)
            tail = b"\0" * ((512 - size % 512) % 512 + 1024)
            out.write(tail)
            hasher.update(tail)
            total = out.tell()
        digest = hasher.hexdigest()
        os.replace(tmp, f"{self.root}/blobs/sha256/{digest}")
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{digest}", "size": total}

    def image(self, layers: list, platform: str, name: str) -> dict:
        parts = platform.split("/")
        config = {"architecture": parts[1], "os": parts[0], "config": {"Labels": {"image": name}},
                  "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}
        if len(parts) > 2:
            config["variant"] = parts[2]
        cfg = self.blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cfg, "layers": layers}
        desc = self.blob(json.dumps(manifest).encode(), manifest["mediaType"])
        desc["platform"] = {"os": parts[0], "architecture": parts[1], **({"variant": parts[2]} if len(parts) > 2 else {})}
        return desc

    def tag(self, desc: dict, name: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs.append(entry)
        with open(f"{self.root}/index.json", "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.refs}, f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--cert-dir")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-images-")
    try:
        layout = Layout(work)
        for spec in args.specs:
            name, _, rest = spec.partition("=")
            sizes, _, platforms = rest.partition("@")
            platforms = platforms.split("+") if platforms else ["linux/amd64"]
            layer_specs = sizes.split(",")
            manifests = []
            for i, platform in enumerate(platforms):
                # The first layer is shared by every platform; the others are the platform's own.
                layers = [layout.layer(s if (j > 0 or len(platforms) == 1) else f"base:{s}#{name}")
                          if not s.startswith("base:") else layout.layer(s)
                          for j, s in enumerate(layer_specs)]
                manifests.append(layout.image(layers, platform, name))
            if len(manifests) == 1:
                top = manifests[0]
            else:
                index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": manifests}
                top = layout.blob(json.dumps(index).encode(), index["mediaType"])
            layout.tag(top, name)
            flags = ["--dest-tls-verify=false"] if args.insecure else (["--dest-cert-dir", args.cert_dir] if args.cert_dir else [])
            subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", *flags,
                            f"oci:{work}:{name}", f"docker://{args.registry}/{name}"], check=True)
            print(f"{args.registry}/{name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
