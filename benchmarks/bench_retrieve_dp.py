"""Queries per second of ``swift-ssid retrieve`` with 1 and with N data-parallel processes, measured in one run.

The model is the tiny random Qwen2 text model (``swift_ssid.testing.tiny_models.build_tiny_qwen2_text``); the index
holds caption-derived identifiers of real Flickr30K captions (``../shared/data``), the queries are other captions
of the same images. Each setting runs the real CLI (``NPROC_PER_NODE=N python -m swift_ssid.cli retrieve ...``,
one OpenMP thread per process) into a fresh run file; the CLI reports the retrieval phase's own time (from the
moment every rank has its model to the merged run file), which is what this benchmark compares. Wall time (with
interpreter start, model loading and, for N > 1, torchrun) is reported beside it. The run files of all settings
must be identical (the benchmark fails otherwise).

Usage:
    python benchmarks/bench_retrieve_dp.py [--queries 64] [--procs 1 2] [--batch-size 8] [--k 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_system import load_average, machine_description  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = REPO_ROOT.parent / "shared" / "data" / "flickr30k_karpathy_test_captions.txt"
RATE = re.compile(r"retrieved (\d+) queries .* in ([\d.]+) s, ([\d.]+) queries/s, (\d+) process")


def build_world(root: Path, n_queries: int) -> tuple[Path, Path, Path]:
    """Tiny model, an index over ``n_queries`` images (first caption each), queries (their second captions)."""
    from swift_ssid.core.caption_identifiers import write_caption_results
    from swift_ssid.core.index import build_index
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    lines = [line.strip() for line in CAPTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    images = [(f"img{i}.jpg", lines[5 * i], lines[5 * i + 1]) for i in range(n_queries)]
    write_caption_results([(image, first) for image, first, _ in images], root / "results.jsonl")
    build_index(root / "results.jsonl", root / "index", check_images=False)
    queries = root / "queries.jsonl"
    queries.write_text(
        "".join(
            json.dumps({"query_id": f"q{i}", "query": second, "gold_images": [image]}) + "\n"
            for i, (image, _, second) in enumerate(images)
        ),
        encoding="utf-8",
    )
    return build_tiny_qwen2_text(root / "model"), root / "index", queries


def retrieve(model: Path, index: Path, queries: Path, out: Path, nproc: int, batch_size: int, k: int) -> dict:
    """Run the CLI once; return its reported retrieval time and rate, and the wall time."""
    env = {key: v for key, v in os.environ.items() if not key.startswith("SSID_")}
    env.update(HF_HUB_OFFLINE="1", MODELSCOPE_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("NPROC_PER_NODE", None)
    if nproc > 1:
        env["NPROC_PER_NODE"] = str(nproc)
    cmd = [sys.executable, "-m", "swift_ssid.cli", "retrieve", "--model", str(model), "--model_type", "qwen2"]
    cmd += ["--template", "ssid_qwen2_5", "--index", str(index), "--queries", str(queries), "--out", str(out)]
    cmd += ["--k", str(k), "--batch-size", str(batch_size), "--max-new-tokens", "24", "--torch-dtype", "float32"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"retrieve with {nproc} process(es) failed:\n{proc.stderr[-3000:]}")
    match = RATE.search(proc.stdout)
    if match is None:
        raise RuntimeError(f"no rate line in the output:\n{proc.stdout[-2000:]}")
    n, seconds, rate, procs = match.groups()
    return {"processes": int(procs), "queries": int(n), "retrieve_s": float(seconds), "queries_per_s": float(rate),
            "wall_s": round(wall, 2), "load_before": None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        root = Path(tmp)
        model, index, queries = build_world(root, args.queries)
        rows, texts = [], {}
        for nproc in args.procs:
            load = load_average()
            row = retrieve(model, index, queries, root / f"run{nproc}.jsonl", nproc, args.batch_size, args.k)
            row["load_before"] = load
            rows.append(row)
            texts[nproc] = (root / f"run{nproc}.jsonl").read_text(encoding="utf-8")
            print(json.dumps(row), flush=True)
        identical = len(set(texts.values())) == 1
    base = rows[0]["queries_per_s"]
    for row in rows:
        row["speedup"] = round(row["queries_per_s"] / base, 2)
    result = {
        "machine": machine_description(),
        "settings": {"queries": args.queries, "batch_size": args.batch_size, "k": args.k, "max_new_tokens": 24},
        "rows": rows,
        "run_files_identical": identical,
    }
    print("\n| processes | queries/s (retrieval) | speedup | retrieval s | wall s (with start-up) | load before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['processes']} | {row['queries_per_s']:.2f} | {row['speedup']:.2f}x | {row['retrieve_s']:.1f} "
              f"| {row['wall_s']:.1f} | {row['load_before']} |")  # fmt: skip
    print(f"\nrun files identical across settings: {identical}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
