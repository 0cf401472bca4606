"""The machine a benchmark ran on, for its JSON: CPU model and cores, memory, the date; with
`jax=True` also the JAX backend, device kinds and version (imports jax)."""

from __future__ import annotations

import os
import platform
import time


def describe(*, jax: bool = False) -> dict[str, object]:
    cpu = platform.processor()
    memory = 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
        with open("/proc/meminfo", encoding="utf-8") as fh:
            memory = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal"))
    except OSError:
        pass
    out: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": memory,
                              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    if jax:
        import jax as jax_module  # noqa: PLC0415

        out |= {"backend": jax_module.default_backend(), "devices": [d.device_kind for d in jax_module.devices()],
                "jax": jax_module.__version__}  # fmt: skip
    return out
