"""``swift-ssid check COLLECTION``: every row and image of a collection, one line per problem with the fix.

Exit status: 0 when every row is usable; 2 when a row has a problem (or the file cannot be read). With
``--skip-invalid`` the problem rows are listed in a file and the usable rows written as a new collection
(exit 0 while any row is usable).

Example:
    swift-ssid check my/collection.jsonl --image-root my/images --skip-invalid --out checked/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swift_ssid.core.checks import check_collection
from swift_ssid.core.errors import UserError, check_output_dir
from swift_ssid.workflows.pipeline import write_checked

MAX_PRINTED = 50


EPILOG = """Problems: bad-row, missing-file, svg, unreadable, duplicate-path, duplicate-image, tiny-image,
extreme-aspect, huge-image; each printed as FILE:LINE: [code] what; fix. Exit 2 on any problem
(without --skip-invalid)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the check arguments to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("collection", help="collection .jsonl or Karpathy-split .json")
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="do not fail on problem rows: list them in OUT/skipped.jsonl and write the usable rows to "
        "OUT/collection.jsonl (absolute image paths)",
    )
    parser.add_argument("--out", default="checked", help="folder for the --skip-invalid files (default: checked)")


def run(args: argparse.Namespace) -> int:
    """Check the collection; print one line per problem. Returns 0 (usable); raises UserError on problems."""
    if args.skip_invalid:
        check_output_dir(args.out, "--out")
    report = check_collection(args.collection, args.image_root)
    for problem in report.problems[:MAX_PRINTED]:
        print(problem.line())
    if len(report.problems) > MAX_PRINTED:
        print(f"... and {len(report.problems) - MAX_PRINTED} more")
    print(report.summary())
    if args.skip_invalid:
        out = Path(args.out)
        skipped = report.write_skipped(out / "skipped.jsonl")
        if not report.items:
            raise UserError(f"no usable row in {args.collection}; fix the problems above")
        checked = write_checked(report.items, out / "collection.jsonl")
        print(f"skipped rows: {skipped} ({len(report.problems)} problem(s)); usable collection: {checked}")
        return 0
    if report.problems:
        raise UserError("fix the rows above, or pass --skip-invalid to leave them out and carry on")
    return 0
