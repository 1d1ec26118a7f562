"""R@K of a finished ``swift-ssid demo --family real_lm_llava`` folder, split by which captions are queried.

The demo queries all five captions of each test image, and caption 1 (``#0``) is the one its identifier is derived
from (stage 1's caption prompt, or the caption-derived fallback). So the held-out result is shown three ways: every
test caption (what the demo prints), caption 1 only, and captions 2-5 only (captions the pipeline never read for
that image). Beside each R@K: the one-sided exact binomial p-value of reaching that many hits by chance (a random
ranking hits a query with probability K / images, independently per query). Also: the share of queries whose first
answer is a training image (unbiased: 8/12 = 0.667 here).

Usage:
    python benchmarks/bench_real_lm_llava.py /tmp/demo_rl   # prints the markdown table rows
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from swift_ssid.core.metrics import chance_hit_rate, hit_rate_at_k

KS = (1, 5, 10)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p): the chance of at least ``hits`` of ``n`` queries hit by a random ranking."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(hits, n + 1))


def table(work: Path) -> str:
    """Markdown rows: query set, queries, R@1/5/10 with chance, share of first answers that are training images."""
    index = {r["identifier"]: r["image"] for r in _rows(work / "index" / "index.jsonl") if r["status"] == "ok"}
    train = {r["image"] for r in _rows(work / "collection.jsonl") if r["split"] != "test"}
    n = len(set(index.values()))
    runs = {"test": _rows(work / "run.jsonl")}
    if (work / "run_memorised.jsonl").is_file():
        runs["memorised"] = _rows(work / "run_memorised.jsonl")
    lines = [
        "| queries | n | R@1 (p) | R@5 (p) | R@10 (p) | chance R@1/5/10 | first answer a training image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    chance = "/".join(f"{chance_hit_rate(k, n):.3f}" for k in KS)
    for name, run in runs.items():
        subsets = {name: run}
        if name == "test":
            subsets = {
                "test, all 5 captions": run,
                "test, caption 1 (identifier source)": [r for r in run if r["query_id"].endswith("#0")],
                "test, captions 2-5 (never read)": [r for r in run if not r["query_id"].endswith("#0")],
            }
        for label, rows in subsets.items():
            ranked = {r["query_id"]: [index[i] for i in r["identifiers"]] for r in rows}
            gold = {r["query_id"]: r["gold_images"] for r in rows}
            scores = {k: hit_rate_at_k(ranked, gold, k).mean for k in KS}
            to_train = sum(ranked[q][0] in train for q in ranked if ranked[q]) / max(len(ranked), 1)
            tails = {k: binomial_tail(round(scores[k] * len(rows)), len(rows), chance_hit_rate(k, n)) for k in KS}
            cells = " | ".join(f"{scores[k]:.3f} ({tails[k]:.2g})" for k in KS)
            lines.append(f"| {label} | {len(rows)} | {cells} | {chance} | {to_train:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
