"""Just enough of the GGUF format (llama.cpp's model files) to validate a file and find its
architecture and layer count, in pure Python, without loading tensors.

    header: b"GGUF", u32 version, u64 tensor_count, u64 kv_count   (little-endian; v2 and v3)
    kv:     string key, u32 value_type, value                       (string = u64 length + UTF-8)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ._errors import NotGGUFError

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 24


@dataclass
class GGUFHeader:
    version: int
    tensor_count: int
    kv_count: int
    architecture: str | None = None
    block_count: int | None = None
    name: str | None = None
    file_type: int | None = None
    metadata: dict = field(default_factory=dict)  # the scalar and string values read

    def to_dict(self) -> dict:
        return {"version": self.version, "tensor_count": self.tensor_count, "kv_count": self.kv_count,
                "architecture": self.architecture, "block_count": self.block_count, "name": self.name}


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, f):
        self.f = f

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Truncated()
        return data

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _MAX_STRING:
            raise _Truncated()
        return self.read(n).decode("utf-8", "replace")

    def skip(self, n: int):
        self.f.seek(n, 1)

    def value(self, kind: int, keep: bool):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("<I"), self.scalar("<Q")
            if item_kind in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item_kind]))
            else:
                for _ in range(count):
                    self.value(item_kind, False)
            return None
        raise _Truncated()


def read_header(path, max_kv: int = 4096) -> GGUFHeader:
    """Reads and checks the header of `path`; NotGGUFError when it is not a (readable) GGUF file."""
    with open(path, "rb") as f:
        start = f.read(24)
        if len(start) < 4 or start[:4] != MAGIC:
            raise NotGGUFError(
                f"{path} is not a GGUF model file (it starts with {start[:4]!r}, a GGUF file with b'GGUF'); "
                "llama.cpp loads GGUF files only: download a .gguf build of the model or convert it with "
                "llama.cpp's convert_hf_to_gguf.py", path)
        if len(start) < 24:
            raise NotGGUFError(f"{path} is a truncated GGUF file ({len(start)} bytes); download it again", path)
        version, tensor_count, kv_count = struct.unpack("<IQQ", start[4:24])
        if version in (1,):
            raise NotGGUFError(f"{path} is GGUF version 1, which llama.cpp no longer loads; "
                               "convert the model again with a current llama.cpp", path)
        if version > 0xFFFF:
            raise NotGGUFError(f"{path} has an unreadable GGUF version ({version}; a big-endian file?); "
                               "use a little-endian .gguf build of the model", path)
        header = GGUFHeader(version, tensor_count, kv_count)
        if version > 3:
            return header  # a newer format: valid magic, metadata not read
        reader = _Reader(f)
        block_counts = {}
        try:
            for _ in range(min(kv_count, max_kv)):
                key = reader.string()
                kind = reader.scalar("<I")
                value = reader.value(kind, True)
                if value is not None:
                    header.metadata[key] = value
                if key == "general.architecture" and isinstance(value, str):
                    header.architecture = value
                elif key == "general.name" and isinstance(value, str):
                    header.name = value
                elif key == "general.file_type" and isinstance(value, int):
                    header.file_type = value
                elif key.endswith(".block_count") and isinstance(value, int):
                    block_counts[key[: -len(".block_count")]] = value
                if header.architecture and header.architecture in block_counts:
                    break
        except _Truncated:
            raise NotGGUFError(f"{path} is a truncated or corrupt GGUF file (its metadata cannot be read); "
                               "download or convert the model again", path) from None
        if header.architecture in block_counts:
            header.block_count = block_counts[header.architecture]
        elif len(block_counts) == 1:
            header.block_count = next(iter(block_counts.values()))
        return header


def write_minimal(path, architecture: str = "llama", block_count: int = 32, size: int = 0, extra=()) -> None:
    """Writes a tiny GGUF file (header + metadata, no tensors), padded to `size` bytes: for tests
    and examples. `extra` is a list of (key, string value)."""
    def string(s: str) -> bytes:
        data = s.encode()
        return struct.pack("<Q", len(data)) + data

    kvs = [string("general.architecture") + struct.pack("<I", _STRING) + string(architecture),
           string(f"{architecture}.block_count") + struct.pack("<I", 4) + struct.pack("<I", block_count)]
    kvs += [string(k) + struct.pack("<I", _STRING) + string(v) for k, v in extra]
    data = MAGIC + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    with open(path, "wb") as f:
        f.write(data)
        if size > len(data):
            f.truncate(size)
