"""``swift-ssid report RUN.jsonl --index DIR --out report.html``: one self-contained HTML report of a run."""

from __future__ import annotations

import argparse

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.core.runs import check_run_index, check_run_version, read_run
from swift_ssid.reporting.report import write_report
from swift_ssid.reporting.tables import format_percent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN.jsonl", help="run file written by `swift-ssid retrieve`")
    parser.add_argument(
        "--index", metavar="DIR", help="identifier index folder the run was made with (not needed for dense/fused runs)"
    )
    parser.add_argument("--out", metavar="report.html", required=True, help="where to write the HTML page")
    parser.add_argument("--k", type=int, default=10, help="top-K shown per query and the plot's largest K (default 10)")
    parser.add_argument(
        "--max-cases", type=int, default=200, help="at most this many query cases, half successes, half failures"
    )
    parser.add_argument(
        "--image-root", metavar="DIR", help="folder that relative image paths resolve against (default: cwd)"
    )
    parser.add_argument(
        "--collection", metavar="FILE", help="the collection: its text rows show their text in place of a thumbnail"
    )
    parser.add_argument("--thumb-size", type=int, default=128, help="thumbnail size in pixels (default 128)")
    parser.add_argument("--title", default="SSID retrieval report", help="page title")
    parser.add_argument("--quality", metavar="quality.json", help="add the index's quality (swift-ssid quality)")
    parser.add_argument(
        "--compare", nargs="+", default=[], metavar="RUN.jsonl", help="other runs of the same queries (dense, fused)"
    )
    parser.add_argument("--compare-names", nargs="+", help="one label per --compare run (default: file stems)")
    parser.add_argument(
        "--alpha-background",
        default=None,
        help="colour transparent image areas are composited onto (default: the alpha_background setting, white)",
    )


def _background_from_env() -> str:
    """``SSID_ALPHA_BACKGROUND`` (read by the settings module, its one owner), else the default."""
    from swift_ssid.integration.settings import SSIDSettings

    return SSIDSettings.from_env(ignore=("index_dir",)).alpha_background


def _texts(collection: str | None, image_root: str | None) -> dict[str, str]:
    """Item id -> text of the collection's text rows (none without a collection)."""
    from swift_ssid.core.collection import read_rows

    items = read_rows(collection, image_root) if collection else []
    return {item.image: item.text for item in items if item.text is not None}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from swift_ssid.core.fusion import ImageLevelIndex, is_image_level
    from swift_ssid.core.index import IdentifierIndex, index_version
    from swift_ssid.core.quality import QualityReport

    check_output_file(args.out, "--out")
    rows = read_run(args.run)
    image_level = all(is_image_level(row) for row in rows)
    if args.index:
        index = IdentifierIndex.load(args.index)
        check_run_version(rows, index_version(args.index), args.index, args.run)  # another version: refused
        if not image_level:
            check_run_index(rows, index, args.run)  # refuses a run made with another index
    elif image_level:
        index = ImageLevelIndex()
    else:
        raise UserError(f"{args.run} is a generative run (identifiers are not images): pass --index DIR")
    names = args.compare_names or [Path(p).stem for p in args.compare]
    if len(names) != len(args.compare):
        raise UserError(f"got {len(names)} --compare-names for {len(args.compare)} --compare runs")
    comparison = [(name, read_run(path)) for name, path in zip(names, args.compare, strict=True)]
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
        index_name=args.index or "",
        quality=QualityReport.load(args.quality) if args.quality else None,
        comparison=comparison,
        alpha_background=args.alpha_background or _background_from_env(),
        texts=_texts(args.collection, args.image_root),
    )
    metrics = ", ".join(f"R@{k} {format_percent(stats.metrics.r_at(k))}%" for k in stats.metrics.ks)
    print(f"wrote {args.out} ({stats.size_bytes / 1e6:.1f} MB): {stats.n_queries} queries, {metrics} (image-level)")
    print(
        f"cases: {stats.shown_successes}/{stats.n_successes} successes, {stats.shown_failures}/{stats.n_failures} "
        f"failures shown, {stats.omitted} omitted; missing images: {len(stats.missing_images)}"
    )
    return 0
