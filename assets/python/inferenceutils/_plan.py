"""load()'s defaults, computed from the launcher's facts: GPU offload, threads, mmap, each with
the reason it was chosen. A pure function of the facts (plain dicts) and the model file."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import _gguf
from ._errors import ModelNotFoundError, ModelTooLargeError, NotGGUFError

GPU_BACKENDS = ("cuda", "rocm", "metal", "vulkan")
# Share of a GPU's total memory counted for weights: the rest is left for the context (KV cache)
# and llama.cpp's compute buffers. Free memory is not in the facts (it changes all the time).
GPU_MEMORY_SHARE = 0.9


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@dataclass
class LoadPlan:
    """What load() passes to llama_cpp.Llama and why."""
    model_path: str
    model_bytes: int
    backend: str
    kwargs: dict                      # n_gpu_layers, n_threads, use_mmap + every keyword you passed
    reasons: dict                     # keyword -> one line saying why
    gguf: dict = field(default_factory=dict)
    gpu_memory_bytes: int | None = None      # total memory of the visible GPUs (None: not known)
    memory_available_bytes: int | None = None
    overrides: tuple = ()             # the keywords you passed

    @property
    def n_gpu_layers(self):
        return self.kwargs.get("n_gpu_layers")

    @property
    def n_threads(self):
        return self.kwargs.get("n_threads")

    @property
    def use_mmap(self):
        return self.kwargs.get("use_mmap")

    def to_dict(self) -> dict:
        return {"model_path": self.model_path, "model_bytes": self.model_bytes, "backend": self.backend,
                "kwargs": dict(self.kwargs), "reasons": dict(self.reasons), "gguf": dict(self.gguf),
                "gpu_memory_bytes": self.gpu_memory_bytes, "memory_available_bytes": self.memory_available_bytes,
                "overrides": list(self.overrides)}

    def __str__(self) -> str:
        lines = [f"load plan for {self.model_path} ({gib(self.model_bytes)}, backend {self.backend}):"]
        lines += [f"  {key} = {value!r}: {self.reasons.get(key, 'given by you')}" for key, value in self.kwargs.items()]
        return "\n".join(lines)


def _gpu_devices(facts: dict, backend: str):
    if backend == "cuda":
        return facts.get("nvidia", {}).get("devices", []) or []
    if backend == "rocm":
        return facts.get("rocm", {}).get("devices", []) or []
    return []


def _ram_available(facts: dict) -> int:
    memory = facts.get("memory", {}) or {}
    available = int(memory.get("available_bytes") or memory.get("total_bytes") or 0)
    limit = int(memory.get("cgroup_limit_bytes") or 0)
    return min(available, limit) if limit and available else (available or limit)


def _threads(facts: dict):
    cpu = facts.get("cpu", {}) or {}
    logical = int(cpu.get("logical_cores") or 0) or (os.cpu_count() or 1)
    physical = int(cpu.get("physical_cores") or 0) or logical
    usable = int(cpu.get("usable_cores") or 0) or logical
    quota = float(cpu.get("cgroup_cpu_quota") or 0)
    n = min(physical, usable)
    why = [f"{physical} physical core{'s' if physical != 1 else ''}"]
    if usable < physical:
        why.append(f"{usable} usable (CPU affinity / cgroup)")
    if quota > 0:
        n = min(n, max(1, math.floor(quota)))
        why.append(f"cgroup quota {quota:.2f} CPUs")
    n = max(1, n)
    return n, (f"{n} thread{'s' if n != 1 else ''}: {', '.join(why)}; llama.cpp runs best with one thread "
               "per physical core the process may use")


def _offload(facts: dict, backend: str, model_bytes: int, header: _gguf.GGUFHeader):
    """(n_gpu_layers, reason, total GPU memory or None)."""
    if backend not in GPU_BACKENDS:
        return 0, f"0 (no offload): the runtime's backend is {backend or 'cpu'}, llama.cpp runs on the CPU", None
    if backend == "metal":
        total = int((facts.get("memory", {}) or {}).get("total_bytes") or 0)
        return -1, ("-1 (all layers): Metal shares the machine's unified memory "
                    f"({gib(total)}) with the CPU"), total or None
    if backend == "vulkan":
        return -1, ("-1 (all layers): Vulkan device memory is not in the launcher's facts; "
                    "pass n_gpu_layers=N to offload fewer"), None
    devices = _gpu_devices(facts, backend)
    total = sum(int(d.get("memory_bytes") or 0) for d in devices)
    if not devices or total <= 0:
        return 0, f"0 (no offload): the {backend} backend sees no GPU with known memory", None
    usable = int(total * GPU_MEMORY_SHARE)
    where = (f"{len(devices)} visible GPU{'s' if len(devices) != 1 else ''} with {gib(total)} in total "
             f"(free memory is not known, so total memory is used; {round(GPU_MEMORY_SHARE * 100)}% of it, "
             f"{gib(usable)}, counted for weights, the rest left for the context and buffers)")
    if model_bytes <= usable:
        return -1, f"-1 (all layers): the model ({gib(model_bytes)}) fits in the {where}", total
    layers = header.block_count
    if not layers:
        return 0, (f"0 (no offload): the model ({gib(model_bytes)}) is larger than the {where} and its layer "
                   "count is not in its metadata; pass n_gpu_layers=N"), total
    share = max(0, min(layers, math.floor(layers * usable / model_bytes)))
    return share, (f"{share} of {layers} layers: the model ({gib(model_bytes)}) is larger than the {where}; "
                   f"that memory holds about {share} layers, the rest run on the CPU"), total


def compute(model_path, facts: dict, backend: str, overrides: dict, check_memory: bool = True) -> LoadPlan:
    path = Path(os.fspath(model_path)).expanduser()
    if not path.exists():
        where = f" (relative to {os.getcwd()})" if not path.is_absolute() else ""
        raise ModelNotFoundError(f"model file not found: {path}{where}; check the path, or download the .gguf "
                                 "file first", str(path))
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a directory, not a model file; pass the .gguf file inside it",
                                 str(path))
    try:
        header = _gguf.read_header(path)
    except PermissionError as e:
        raise ModelNotFoundError(f"cannot read the model file {path}: {e.strerror}; check its permissions",
                                 str(path)) from None
    except NotGGUFError:
        raise
    model_bytes = path.stat().st_size
    ram = _ram_available(facts)
    n_gpu_layers, gpu_reason, gpu_total = _offload(facts, backend, model_bytes, header)

    if check_memory and ram:
        room = ram + ((gpu_total or 0) if backend in ("cuda", "rocm") else 0)
        if model_bytes > room:
            parts = [f"{gib(ram)} of RAM available"]
            if backend in ("cuda", "rocm") and gpu_total:
                parts.append(f"{gib(gpu_total)} of GPU memory")
            raise ModelTooLargeError(
                f"the model {path} ({gib(model_bytes)}) is larger than the memory this machine has for it "
                f"({' + '.join(parts)}); use a smaller model or a stronger quantization (e.g. a Q4_K_M .gguf), "
                "free some memory, or pass check_memory=False to try anyway", str(path))

    n_threads, thread_reason = _threads(facts)
    kwargs = {"n_gpu_layers": n_gpu_layers, "n_threads": n_threads, "use_mmap": True}
    reasons = {"n_gpu_layers": gpu_reason, "n_threads": thread_reason,
               "use_mmap": "True: the file is memory-mapped, read on demand and shared between processes"}
    for key, value in overrides.items():
        kwargs[key] = value
        reasons[key] = "given by you" + (f" (the default would be {reasons[key].split(':')[0]})"
                                         if key in reasons else "")
    return LoadPlan(model_path=str(path), model_bytes=model_bytes, backend=backend or "cpu", kwargs=kwargs,
                    reasons=reasons, gguf=header.to_dict(), gpu_memory_bytes=gpu_total,
                    memory_available_bytes=ram or None, overrides=tuple(overrides))
