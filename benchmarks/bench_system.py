"""Machine description, process memory (RSS, peak RSS) and timing helpers for the benchmark (Linux)."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """Peak resident set size (VmHWM) since the process started or :func:`reset_peak_rss`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM line in /proc/self/status: peak RSS needs Linux")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS deltas count live data only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_description() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions and thread count, for the results header."""
    import numpy
    import tokenizers
    import torch
    import transformers

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(unset)"),
        "transparent_hugepage": thp.read_text().strip() if thp.is_file() else "n/a",
        "cuda": torch.cuda.is_available(),
    }


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call of ``fn`` and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def summary(samples: list[float]) -> dict[str, float]:
    """Median, quartiles, min and count of ``samples`` (seconds)."""
    if not samples:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "min": float("nan"), "n": 0}
    qs = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "q1": qs[0], "q3": qs[2], "min": min(samples), "n": len(samples)}


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, rotating the order every round so drift hits all alike."""
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            seconds, out = timed(variants[name])
            del out
            samples[name].append(seconds)
    return samples
