#!/usr/bin/python3
"""Writes a bundle of many small images for Benchmarks/reader.sh (the same shape as the tests'
LargeBundle): IMAGES images, each an index of PER_IMAGE manifests sharing one config; every manifest
has a layer of its own that the bundle manifest lists but the tar does not carry.

    reader.py OUT.tar IMAGES PER_IMAGE
"""
import hashlib
import io
import json
import sys
import tarfile

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    out, images, per_image = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    listed = [{"digest": digest(config), "mediaType": CONFIG_TYPE, "size": len(config)}]
    carried = [(digest(config), config)]
    index_entries, bundle_images = [], []
    for image in range(images):
        children = []
        for number in range(per_image):
            layer = digest(f"layer {image} {number}".encode())
            listed.append({"digest": layer, "mediaType": LAYER_TYPE, "size": 1024})
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": digest(config), "size": len(config)},
                "layers": [{"mediaType": LAYER_TYPE, "digest": layer, "size": 1024}],
            }, separators=(",", ":")).encode()
            listed.append({"digest": digest(manifest), "mediaType": MANIFEST_TYPE, "size": len(manifest)})
            carried.append((digest(manifest), manifest))
            children.append({"mediaType": MANIFEST_TYPE, "digest": digest(manifest), "size": len(manifest),
                             "platform": {"architecture": "amd64", "os": "linux", "variant": f"v{number}"}})
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": children},
                           separators=(",", ":")).encode()
        listed.append({"digest": digest(index), "mediaType": INDEX_TYPE, "size": len(index)})
        carried.append((digest(index), index))
        name = f"registry.local:5000/scale/r{image}:1"
        index_entries.append({"annotations": {"io.containerd.image.name": name,
                                              "org.opencontainers.image.ref.name": name},
                              "digest": digest(index), "mediaType": INDEX_TYPE, "size": len(index)})
        bundle_images.append({"digest": digest(index), "mediaType": INDEX_TYPE, "platforms": ["linux/amd64"],
                              "reference": name, "size": 0})
    index_json = json.dumps({"manifests": index_entries, "mediaType": INDEX_TYPE, "schemaVersion": 2},
                            separators=(",", ":"), sort_keys=True).encode()
    manifest = json.dumps({
        "blobs": listed, "created": "1970-01-01T00:00:00Z", "formatVersion": 1, "images": bundle_images,
        "index": {"digest": digest(index_json), "size": len(index_json)},
        "mediaType": "application/vnd.ferry.bundle.manifest.v1+json",
        "tool": {"name": "ferry", "version": "bench"},
    }, indent=2, sort_keys=True, separators=(",", " : ")).encode() + b"\n"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=None):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("ferry-bundle.json", manifest)
        add("index.json", index_json)
        add("blobs")
        add("blobs/sha256")
        for name, data in carried:
            add("blobs/sha256/" + name.split(":", 1)[1], data)


if __name__ == "__main__":
    main()
