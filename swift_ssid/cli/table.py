"""``swift-ssid table RUN.jsonl...``: R@1/R@5/R@10 of several runs in the paper's table layout."""

from __future__ import annotations

import argparse

from swift_ssid.core.errors import check_output_file
from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.core.metrics import DEFAULT_KS
from swift_ssid.reporting.tables import (
    kind_tables,
    kind_tables_csv,
    load_quality_files,
    plot_table,
    quality_markdown,
    summarize_run_files,
    to_csv,
    to_markdown,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN.jsonl", nargs="+", help="run files written by `swift-ssid retrieve`")
    parser.add_argument("--names", nargs="+", help="one row label per run file (default: file stems)")
    parser.add_argument("--by", metavar="SETTING", help="one row per value of this `setting` key (e.g. language)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cut-offs (default: 1 5 10)")
    parser.add_argument("--title", help="a line above the Markdown table")
    parser.add_argument("--csv", metavar="OUT.csv", help="also write the table as CSV")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the Markdown table to a file")
    parser.add_argument(
        "--plot", metavar="OUT.png", help="also plot R@K per row as a PNG (numeric --by values, e.g. n_train, on x)"
    )
    parser.add_argument(
        "--quality",
        nargs="+",
        default=[],
        metavar="[NAME=]quality.json",
        help="identifier quality (swift-ssid quality) as columns next to R@K; NAME is the row (default: its kind)",
    )
    g = parser.add_argument_group("--by kind (Tables I and II)")
    g.add_argument(
        "--no-reference", dest="reference", action="store_false", help="leave out the paper's numbers (reference rows)"
    )
    g.add_argument("--model-label", default="this model", help="the model named in Table II (default: this model)")
    g.add_argument("--collection-label", default="this collection", help="the collection named in the titles")


def run(args: argparse.Namespace) -> int:
    for flag, path in (("--csv", args.csv), ("--markdown", args.markdown), ("--plot", args.plot)):
        if path:
            check_output_file(path, flag)
    table = summarize_run_files(args.runs, names=args.names, by=args.by, ks=args.ks)
    qualities = load_quality_files(args.quality)
    first_column = args.by or "Run"
    if args.by == "kind":  # the paper's Tables I and II, with its numbers as labelled reference tables
        markdown = (f"{args.title}\n\n" if args.title else "") + kind_tables(
            table, ks=args.ks, reference=args.reference, model=args.model_label, collection=args.collection_label
        )
        csv_text = kind_tables_csv(table, ks=args.ks, reference=args.reference, model=args.model_label)
    else:
        markdown = to_markdown(table, ks=args.ks, first_column=first_column, title=args.title)
        csv_text = to_csv(table, ks=args.ks, first_column=args.by or "run")
    if qualities:
        markdown += "\n" + quality_markdown(table, qualities, ks=args.ks)
    print(markdown, end="")
    if args.markdown:
        write_text_atomic(args.markdown, markdown)
    if args.csv:
        write_text_atomic(args.csv, csv_text)
    if args.plot:
        plot_table(table, args.plot, ks=args.ks, x_label=args.by or "run", title=args.title)
    return 0
