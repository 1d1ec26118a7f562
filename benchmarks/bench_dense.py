"""Dense search at COCO size: memory and time of the streamed exact top-K over a float16 embedding store.

Synthetic, seeded unit vectors stand in for the image embeddings (no CLIP weights exist offline); the search
code is the one ``swift-ssid dense`` runs (:func:`swift_ssid.encoders.dense_retrieval.exact_top_k` over a
memory-mapped ``.npy``). Each configuration runs in a fresh subprocess, so its peak RSS is its own.

Usage:
    python benchmarks/bench_dense.py --images 123287 --dim 768 --queries 2000 --out benchmarks/DENSE.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(store: str, queries: int, k: int, backend: str, block: int) -> None:
    import numpy as np

    from swift_ssid.encoders.dense_retrieval import exact_top_k

    __import__("torch" if backend == "torch" else "faiss")  # imported before the clock starts
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    images = np.load(store, mmap_mode="r")
    rng = np.random.default_rng(1)
    picked = rng.choice(len(images), queries, replace=False)
    q = np.asarray(images[np.sort(picked)], dtype=np.float32)
    q += 0.02 * rng.standard_normal(q.shape).astype(np.float32)
    start = time.perf_counter()
    _, ids = exact_top_k(q, images, k, backend=backend, block_size=block)
    seconds = time.perf_counter() - start
    hit = float((ids[:, 0] == np.sort(picked)).mean())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss, "after_import_mb": base_rss, "top1_is_source": hit}))


def _make_store(path: str, storage: str, n: int, dim: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=storage, shape=(n, dim))
    for start in range(0, n, 16_384):
        x = rng.standard_normal((min(16_384, n - start), dim)).astype(np.float32)
        arr[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    arr.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=123_287)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--make-store", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_store:
        _make_store(args.make_store[0], args.make_store[1], args.images, args.dim)
        return
    if args.child:
        store, backend, block, _ = args.child
        _child(store, args.queries, args.k, backend, int(block))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("float16", "float32"):
            store = Path(tmp) / f"images.{storage}.npy"
            # Children do all the numpy work: Linux carries a process' peak RSS across fork + exec, so this
            # parent stays small and each child's peak is its own.
            make = [sys.executable, __file__, "--images", str(args.images), "--dim", str(args.dim)]
            subprocess.run([*make, "--make-store", str(store), storage], check=True)
            for backend, block in (("faiss", 65_536), ("faiss", args.images), ("torch", 65_536)):
                argv = [sys.executable, __file__, "--queries", str(args.queries), "--k", str(args.k)]
                argv += ["--child", str(store), backend, str(block), "x"]
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                row = {"storage": storage, "backend": backend, "block": block, **json.loads(out)}
                results.append(row)
                print(row, flush=True)
    lines = [
        "# Dense search benchmark",
        "",
        f"Command: `python benchmarks/bench_dense.py --images {args.images} --dim {args.dim} "
        f"--queries {args.queries}{' --out ' + args.out if args.out else ''}` (one run; 2 shared CPU cores, "
        "OMP_NUM_THREADS=1; other jobs were running, so compare rows within this table only).",
        "",
        f"{args.images:,} synthetic unit vectors of dimension {args.dim} (COCO has 123,287 images; CLIP ViT-L/14 "
        f"embeds in 768 dimensions), {args.queries:,} queries (noisy copies of stored vectors), top-{args.k}. "
        "Peak RSS of the searching process, with the store memory-mapped; 'after import' is the RSS once numpy and "
        "the backend (faiss or torch) are imported, before the store is touched. Pages of the memory-mapped store "
        "count towards RSS once read: a float32 store is searched in place, a float16 one is converted to float32 "
        "one image block at a time (so a smaller block bounds the extra memory). For scale: holding the float32 "
        f"matrix and the full [{args.queries:,} x {args.images:,}] float32 score matrix at once would take "
        f"{(args.images * args.dim + args.queries * args.images) * 4 / 2**20:,.0f} MB.",
        "",
        "| store | backend | image block | seconds | peak RSS (MB) | after import (MB) | top-1 = source image |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['storage']} | {r['backend']} | {r['block']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['after_import_mb']:.0f} | {100 * r['top1_is_source']:.1f}% |"
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
