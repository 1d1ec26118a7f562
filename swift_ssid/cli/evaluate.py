"""``swift-ssid evaluate RUN.jsonl``: the paper's R@K (image-level hit rate) of a run file."""

from __future__ import annotations

import argparse
import json
import sys

from swift_ssid.core.errors import check_output_file
from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.core.metrics import DEFAULT_KS, RunMetrics, evaluate_run
from swift_ssid.core.runs import read_run
from swift_ssid.reporting.tables import format_percent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN.jsonl", help="run file written by `swift-ssid retrieve`")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cut-offs (default: 1 5 10)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")


def format_metrics(metrics: RunMetrics, run: str) -> str:
    """The metrics as aligned text lines (percent, one decimal, as in the paper's tables)."""
    lines = [f"run: {run}", f"metric: {metrics.metric}", f"queries: {metrics.n_queries}"]
    lines += [f"{f'R@{k}':<6}{format_percent(metrics.r_at(k)):>6}" for k in metrics.ks]
    lines.append(f"unknown identifiers: {format_percent(metrics.unknown_identifier_rate or 0.0)}%")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        if args.json:
            check_output_file(args.json, "--json")
        metrics = evaluate_run(read_run(args.run), ks=args.ks)
    except (OSError, ValueError) as e:
        print(f"swift-ssid evaluate: error: {e}", file=sys.stderr)
        return 2
    print(format_metrics(metrics, args.run))
    if args.json:
        write_text_atomic(
            args.json, json.dumps({"run": args.run, **metrics.to_dict()}, indent=2, ensure_ascii=False) + "\n"
        )
        print(f"wrote {args.json}")
    return 0
