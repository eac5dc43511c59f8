#!/usr/bin/env python3
"""Checks that target dependencies point down the layers only (from `swift package dump-package`).

Every non-test target must be assigned a layer here; a target may depend only on targets in lower
layers, and a few pairs that share a layer or sit on different branches must never meet.
"""
import json
import subprocess
import sys

LAYERS = {
    "CLibCrypto": 0, "CLinux": 0, "CArchive": 0, "CCrypt": 0, "CSQLite": 0,
    "OCICore": 1, "OCITar": 1,
    "OCIStore": 2,
    "OCIRegistryClient": 3, "OCIBundle": 3, "OCIRegistryServer": 3, "HelmCharts": 3,
    "ApplianceConsole": 4, "RegistryProxy": 4,
    "FerryCommands": 5, "ApplianceCommands": 5,
    "ferry": 6, "ferry-appliance": 6,
}
# The store knows nothing of HTTP or tar; the bundle knows nothing of HTTP or the store; the
# registry client knows nothing of the store, tar or bundles; the registry server serves the store
# and knows nothing of bundles, tar or the client; chart formats do no I/O but reading an archive;
# OCICore does no tar.
FORBIDDEN = {
    "OCIStore": {"OCITar", "OCIRegistryClient", "OCIBundle"},
    "OCIBundle": {"OCIStore", "OCIRegistryClient"},
    "OCIRegistryClient": {"OCIStore", "OCITar", "OCIBundle"},
    "OCICore": {"OCITar", "CArchive"},
    "OCIRegistryServer": {"OCIRegistryClient", "OCIBundle", "OCITar"},
    "HelmCharts": {"OCIStore", "OCIRegistryClient", "OCIBundle", "OCIRegistryServer"},
    "ApplianceConsole": {"OCIRegistryClient", "OCIBundle", "OCITar"},
}


def main() -> int:
    package = json.loads(subprocess.run(["swift", "package", "dump-package"], check=True,
                                        capture_output=True, text=True).stdout)
    problems = []
    for target in package["targets"]:
        name = target["name"]
        if target["type"] == "test":
            continue
        if name not in LAYERS:
            problems.append(f"target {name} has no layer in .ci/check-layers.py")
            continue
        for dependency in target.get("dependencies", []):
            kind, value = next(iter(dependency.items()))
            if kind not in ("byName", "target"):
                continue  # products of other packages
            other = value[0]
            if other not in LAYERS:
                continue
            if LAYERS[other] >= LAYERS[name]:
                problems.append(f"{name} (layer {LAYERS[name]}) depends on {other} (layer {LAYERS[other]})")
            if other in FORBIDDEN.get(name, set()):
                problems.append(f"{name} must not depend on {other}")
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    if not problems:
        print(f"check-layers: {len(LAYERS)} targets, every dependency points down")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
