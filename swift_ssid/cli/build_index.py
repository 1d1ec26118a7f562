"""``swift-ssid build-index``: parse ``swift infer`` results into the identifier index.

Example:
    swift-ssid build-index output/generate/results.jsonl --out output/index --collisions shared
"""

from __future__ import annotations

import argparse
import logging
import sys

from swift_ssid.core.errors import check_output_dir
from swift_ssid.core.index import POLICIES, build_index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the build-index arguments to ``parser``."""
    parser.add_argument("results", help="the JSON Lines file written by `swift infer --result_path`")
    parser.add_argument("--out", required=True, help="index directory to write (index.jsonl, stats.json, ...)")
    parser.add_argument(
        "--collisions",
        choices=POLICIES,
        default="shared",
        help="shared: an identifier names all its images; disambiguate: later images get ' - 2', ' - 3', ...",
    )
    parser.add_argument("--image-root", default=None, help="folder that relative image paths are checked against")
    parser.add_argument(
        "--no-check-images", dest="check_images", action="store_false", help="do not require image files to exist"
    )


def _summary(stats: dict) -> str:
    """Return a short human summary of the build stats."""
    invalid = ", ".join(f"{code} {n}" for code, n in stats["invalid_by_reason"].items())
    lines = [
        f"indexed {stats['images']} images from {stats['rows']} rows of {stats['results_path']}",
        f"  valid {stats['valid']} (ok {stats['ok']}, repaired {stats['repaired']}), invalid {stats['invalid']}"
        + (f" ({invalid})" if invalid else ""),
        f"  unique identifiers {stats['unique_identifiers']}; collision groups {stats['collision_groups']} "
        f"({stats['collision_images']} images, policy {stats['policy']})",
    ]
    if stats["input_error_count"]:
        lines.append(f"  input errors {stats['input_error_count']} (skipped; listed in {stats['files']['stats']}):")
        lines += [f"    {e['error']}" for e in stats["input_errors"][:5]]
    if stats["duplicate_rows"]:
        lines.append(f"  duplicate rows {stats['duplicate_rows']} (first valid row per image kept)")
    lines.append(f"  index: {stats['files']['index']}")
    lines.append(f"  stats: {stats['files']['stats']}")
    if stats["regenerate"]:
        lines.append(f"  regenerate: {stats['files']['regenerate']} ({stats['regenerate']} rows to run swift infer on)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the index; print a summary. Returns 0 on success, 2 when the input or ``--out`` cannot be used."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_dir(args.out, "--out")
        stats = build_index(
            args.results,
            args.out,
            collisions=args.collisions,
            check_images=args.check_images,
            image_root=args.image_root,
        )
    except (OSError, ValueError) as e:
        print(f"swift-ssid build-index: error: {e}", file=sys.stderr)
        return 2
    print(_summary(stats))
    return 0
