"""Benchmark: ``swift-ssid serve`` latency (p50/p95) and throughput against the number of concurrent clients.

The server runs as users run it (a process, HTTP on 127.0.0.1) on the tiny random Qwen2 text model with a
caption-derived index over the bundled demo collection (12 images), K=3. Each level sends ``--requests`` searches
from C concurrent clients (threads, each a keep-alive-free HTTP request at a time), after a warm-up; it is run
once with batching (``--max-batch-size 8``) and once without (``--max-batch-size 1``), so the table shows what
batching buys. The tiny model measures the service's overhead and the batching, not a real model's speed.

Usage (from the repository root)::

    python benchmarks/bench_serve.py --out benchmarks/SERVE.md --json benchmarks/results_serve.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_system import load_average, machine_description, now_utc  # noqa: E402

from swift_ssid.testing.tiny_models import OFFLINE_ENV  # noqa: E402

K = 3


def build(root: Path) -> tuple[Path, Path, list[str], Path]:
    """The tiny model, the index, the queries (every demo caption) and the demo folder."""
    import swift_ssid
    from swift_ssid.core.caption_identifiers import write_caption_results
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.index import build_index
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    demo = Path(swift_ssid.__file__).parent / "data" / "demo"
    items = load_collection(demo / "collection.jsonl")
    write_caption_results([(item.image, item.captions[0]) for item in items], root / "results.jsonl")
    build_index(root / "results.jsonl", root / "index", image_root=demo)
    queries = [caption for item in items for caption in item.captions[1:]]
    return build_tiny_qwen2_text(root / "model"), root / "index", queries, demo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, index: Path, demo: Path, max_batch_size: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "swift_ssid.cli", "serve", "--model", str(model), "--model_type", "qwen2"]
    command += ["--template", "ssid_qwen2_5", "--index", str(index), "--image-root", str(demo), "--k", str(K)]
    command += ["--max-new-tokens", "40", "--torch-dtype", "float32", "--port", str(port)]
    command += ["--max-batch-size", str(max_batch_size), "--batch-wait-ms", "10"]
    server = subprocess.Popen(
        command, env={**os.environ, **OFFLINE_ENV}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server, port
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not start within 300 s")


def search(port: int, query: str) -> float:
    """One POST /search; its latency in seconds."""
    start_time = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(
        "POST", "/search", body=json.dumps({"query": query, "k": K}), headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {body[:200]!r}")
    return time.perf_counter() - start_time


def level(port: int, queries: list[str], clients: int, requests: int) -> dict[str, Any]:
    """``requests`` searches from ``clients`` concurrent clients: latency percentiles and throughput."""
    batches_before = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())["batches"]
    texts = [queries[i % len(queries)] for i in range(requests)]
    start_time = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(lambda t: search(port, t), texts))
    wall = time.perf_counter() - start_time
    batches = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())["batches"]
    calls = batches["count"] - batches_before["count"]
    return {
        "clients": clients,
        "requests": requests,
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        "throughput_qps": round(requests / wall, 2),
        "engine_calls": calls,
        "mean_batch": round(requests / calls, 2) if calls else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="searches per level")
    parser.add_argument("--out", default="benchmarks/SERVE.md")
    parser.add_argument("--json", default="benchmarks/results_serve.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "started": now_utc(),
                               "machine": machine_description(), "load_before": load_average(), "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, index, queries, demo = build(root)
        for max_batch_size in (8, 1):
            server, port = start(model, index, demo, max_batch_size, root / f"serve-{max_batch_size}.log")
            try:
                for query in queries[:4]:  # warm-up
                    search(port, query)
                rows = [level(port, queries, c, args.requests) for c in args.clients]
            finally:
                server.terminate()  # SIGTERM: a graceful stop, exit status 0
                if server.wait(60) != 0:
                    raise RuntimeError(f"the server exited with {server.returncode} on SIGTERM")
            results["runs"][f"max_batch_size={max_batch_size}"] = rows
            for row in rows:
                print(f"max_batch_size={max_batch_size} {row}", flush=True)
    results["load_after"] = load_average()
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# `swift-ssid serve`: latency and throughput against concurrent clients",
        "",
        f"Command: `{results['command']}` ({results['started']})",
        "",
        f"Machine: {results['machine'].get('cpu')}, {results['machine'].get('cores')} cores; load average "
        f"{results['load_before']} before, {results['load_after']} after (the machine is shared: other jobs ran).",
        "",
        f"Load: the tiny random Qwen2 text model (CPU, float32), a 12-image caption-derived index, K={K}, "
        f"{args.requests} searches per level over the demo captions; 10 ms batch wait. The tiny model shows the "
        "service's overhead and what batching buys, not a real model's speed.",
        "",
        "| engine batching | clients | p50 ms | p95 ms | searches/s | engine calls | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results["runs"].items():
        for r in rows:
            lines.append(f"| {name} | {r['clients']} | {r['p50_ms']} | {r['p95_ms']} | {r['throughput_qps']} | "
                         f"{r['engine_calls']} | {r['mean_batch']} |")  # fmt: skip
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
