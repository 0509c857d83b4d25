#!/usr/bin/env python3
"""Builds the pure-Python `inferenceutils` wheel (PEP 427) from assets/python/inferenceutils.

    make-wheel.py --source DIR --version X.Y.Z --prefix PREFIX --out DIR

PREFIX is the install prefix of the launcher the wheel belongs to: the wheel's
`inferenceutils/_build.py` records it (PREFIX/bin/inferenceutils is where the package looks for
the launcher after $INFERENCEUTILS_BIN and PATH). Reproducible: fixed timestamps, sorted members.
"""
import argparse
import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--version", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    files = {}
    for path in sorted(args.source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        files["inferenceutils/" + path.relative_to(args.source).as_posix()] = path.read_bytes()
    files["inferenceutils/_build.py"] = (
        '"""Written by scripts/make-wheel.py: the launcher this wheel belongs to."""\n'
        f"VERSION = {args.version!r}\n"
        f"PREFIX = {os.path.abspath(args.prefix)!r}\n"
        f"LAUNCHER = {os.path.join(os.path.abspath(args.prefix), 'bin', 'inferenceutils')!r}\n").encode()

    info = f"inferenceutils-{args.version}.dist-info"
    files[f"{info}/METADATA"] = "\n".join([
        "Metadata-Version: 2.1",
        "Name: inferenceutils",
        f"Version: {args.version}",
        "Summary: Use the inferenceutils launcher's hardware-matched runtime from any Python process",
        "Requires-Python: >=3.11",
        "",
        "`import inferenceutils` asks the inferenceutils launcher for the runtime matched to this",
        "machine and adds it to sys.path. See share/doc or docs/python.md of inferenceutils.",
        "",
    ]).encode()
    files[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: inferenceutils make-wheel.py\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    files[f"{info}/top_level.txt"] = b"inferenceutils\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    args.out.mkdir(parents=True, exist_ok=True)
    wheel = args.out / f"inferenceutils-{args.version}-py3-none-any.whl"
    tmp = wheel.with_name(wheel.name + f".tmp{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zinfo = zipfile.ZipInfo(name, ZIP_TIME)
            zinfo.external_attr = 0o644 << 16
            zf.writestr(zinfo, data, zipfile.ZIP_DEFLATED)
    os.replace(tmp, wheel)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
