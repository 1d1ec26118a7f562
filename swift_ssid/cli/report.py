"""``swift-ssid report RUN.jsonl --index DIR --out report.html``: one self-contained HTML report of a run."""

from __future__ import annotations

import argparse
import sys

from swift_ssid.core.errors import check_output_file
from swift_ssid.core.runs import load_run_with_index
from swift_ssid.reporting.report import write_report
from swift_ssid.reporting.tables import format_percent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN.jsonl", help="run file written by `swift-ssid retrieve`")
    parser.add_argument("--index", metavar="DIR", required=True, help="identifier index folder the run was made with")
    parser.add_argument("--out", metavar="report.html", required=True, help="where to write the HTML page")
    parser.add_argument("--k", type=int, default=10, help="top-K shown per query and the plot's largest K (default 10)")
    parser.add_argument(
        "--max-cases", type=int, default=200, help="at most this many query cases, half successes, half failures"
    )
    parser.add_argument(
        "--image-root", metavar="DIR", help="folder that relative image paths resolve against (default: cwd)"
    )
    parser.add_argument("--thumb-size", type=int, default=128, help="thumbnail size in pixels (default 128)")
    parser.add_argument("--title", default="SSID retrieval report", help="page title")


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.index import IdentifierIndex

    try:
        check_output_file(args.out, "--out")
        index = IdentifierIndex.load(args.index)
        rows = load_run_with_index(args.run, index)
        stats = write_report(
            args.out,
            rows,
            index,
            k=args.k,
            max_cases=args.max_cases,
            image_root=args.image_root,
            thumb_size=args.thumb_size,
            title=args.title,
            run_name=args.run,
            index_name=args.index,
        )
    except (OSError, ValueError) as e:
        print(f"swift-ssid report: error: {e}", file=sys.stderr)
        return 2
    r_at = {key: value for key, value in stats.metrics.items() if key.startswith("R@")}
    metrics = ", ".join(f"{key} {format_percent(value)}" for key, value in r_at.items())
    print(f"wrote {args.out} ({stats.size_bytes / 1e6:.1f} MB): {stats.n_queries} queries, {metrics} (image-level)")
    print(
        f"cases: {stats.shown_successes}/{stats.n_successes} successes, {stats.shown_failures}/{stats.n_failures} "
        f"failures shown, {stats.omitted} omitted; missing images: {len(stats.missing_images)}"
    )
    return 0
