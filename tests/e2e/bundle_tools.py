"""Helpers to read, rewrite and forge runtime bundles (.tar.zst) for the bundle tests.

A bundle is zstd(tar(bundle.json, entries...)). These helpers decompress with the `zstd` tool,
edit the tar with Python's tarfile, and compress again, so tests can craft hostile bundles: a
member with a `..` path, an escaping symlink, a manifest for another Python, and so on.
"""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

MANIFEST = "bundle.json"


def decompress(path: Path) -> bytes:
    return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout


def compress(data: bytes, path: Path, level: int = 3) -> Path:
    subprocess.run(["zstd", "-q", "-f", f"-{level}", "-o", str(path)], input=data, check=True)
    return path


def read(path: Path):
    """(manifest dict, [(TarInfo, bytes|None)]) of a bundle, the manifest member left out."""
    members = []
    manifest = None
    with tarfile.open(fileobj=io.BytesIO(decompress(path)), mode="r:") as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isreg() else None
            if info.name == MANIFEST:
                manifest = json.loads(data)
            else:
                members.append((info, data))
    return manifest, members


def tar_of(members) -> bytes:
    """An uncompressed pax tar of members (TarInfo, bytes|None); sizes of regular members follow data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def write(path: Path, manifest: dict, members, raw_tail: bytes = b"") -> Path:
    """A bundle from a manifest and members (TarInfo, data); sizes of regular members follow data."""
    head = (tarfile.TarInfo(MANIFEST), json.dumps(manifest).encode())
    return compress(tar_of([head, *members]) + raw_tail, path)


def file_entry(manifest: dict, path: str) -> dict:
    return next(f for f in manifest["files"] if f["path"] == path)


def add_listed_file(manifest: dict, members, name: str, data: bytes, **info_attrs):
    """A regular member listed in the manifest with its true hash (so only the path is wrong)."""
    import hashlib
    info = tarfile.TarInfo(name)
    for k, v in info_attrs.items():
        setattr(info, k, v)
    manifest["files"].append({"path": name, "type": "f", "mode": 0o644, "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
    manifest["total_size"] += len(data)
    members.append((info, data))


def add_link(manifest: dict, members, name: str, target: str, hard: bool = False):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    manifest["files"].append({"path": name, "type": "l", "mode": 0o777, "target": target})
    members.append((info, None))
