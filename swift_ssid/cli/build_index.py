"""``swift-ssid build-index``: parse ``swift infer`` results into the identifier index.

The index is always written (so ``regenerate.jsonl`` can be used), but the command exits 2 when fewer than
``--min-usable`` of the images got a usable identifier, and says what to do: ask the model again for those
images, or take identifiers from another source (``swift-ssid identifiers caption-derived ...``, or any other
identifier kind), or go on with ``--min-usable 0``.

Example:
    swift-ssid build-index output/generate/results.jsonl --out output/index --collisions shared
"""

from __future__ import annotations

import argparse
import logging
import sys

from swift_ssid.core.errors import UserError, check_output_dir
from swift_ssid.core.index import POLICIES, IndexBuildStats, build_index


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
        "--collection",
        default=None,
        help="the collection the results answer: needed for text rows (their results carry no image; each is "
        "matched to its row's id by its prompt)",
    )
    parser.add_argument(
        "--no-check-images", dest="check_images", action="store_false", help="do not require image files to exist"
    )
    parser.add_argument(
        "--min-usable",
        type=float,
        default=DEFAULT_MIN_USABLE,
        metavar="SHARE",
        help=f"exit 2 when fewer than this share of the images get a usable identifier (default {DEFAULT_MIN_USABLE}; "
        "0 never fails)",
    )


DEFAULT_MIN_USABLE = 0.5


def too_few_usable(stats: IndexBuildStats, min_usable: float, results: str) -> tuple[str, str]:
    """For an index with too few usable identifiers: the verdict (one line, the numbers) and the three ways on."""
    share = stats.valid / max(stats.images, 1)
    reasons = ", ".join(f"{code} {n}" for code, n in list(stats.invalid_by_reason.items())[:4]) or "none recorded"
    verdict = (
        f"only {stats.valid} of {stats.images} images ({share:.0%}) got a usable identifier from {results}, "
        f"below --min-usable {min_usable:g} (rejections: {reasons}); take one of the three ways above"
    )
    return verdict, (
        "too few usable identifiers; either\n"
        f"  1. ask the model again for those images: swift infer ... --val_dataset {stats.files['regenerate']} "
        f"--result_path MORE.jsonl, append MORE.jsonl to {results} and rebuild (a capable model answers in the "
        "three-line format; a weak one will not), or\n"
        "  2. use identifiers from another source, e.g. derived from the captions (labelled as such): "
        "swift-ssid identifiers caption-derived --collection COLLECTION --out INDEX_DIR, "
        "then `swift-ssid run ... --index INDEX_DIR`, or\n"
        "  3. go on with the usable ones: --min-usable 0"
    )


def _summary(stats: IndexBuildStats) -> str:
    """Return a short human summary of the build stats."""
    invalid = ", ".join(f"{code} {n}" for code, n in stats.invalid_by_reason.items())
    lines = [
        f"indexed {stats.images} images from {stats.rows} rows of {stats.results_path}",
        f"  valid {stats.valid} (ok {stats.ok}, repaired {stats.repaired}), invalid {stats.invalid}"
        + (f" ({invalid})" if invalid else ""),
        f"  unique identifiers {stats.unique_identifiers}; collision groups {stats.collision_groups} "
        f"({stats.collision_images} images, policy {stats.policy})",
    ]
    if stats.input_error_count:
        lines.append(f"  input errors {stats.input_error_count} (skipped; listed in {stats.files['stats']}):")
        lines += [f"    {e['error']}" for e in stats.input_errors[:5]]
    if stats.duplicate_rows:
        lines.append(
            f"  duplicate rows {stats.duplicate_rows} (per image the first usable answer, else the latest, is kept)"
        )
    lines.append(f"  index: {stats.files['index']}")
    lines.append(f"  stats: {stats.files['stats']}")
    if stats.regenerate:
        lines.append(f"  regenerate: {stats.files['regenerate']} ({stats.regenerate} rows to run swift infer on)")
    return "\n".join(lines)


def _text_keys(collection: str | None, image_root: str | None) -> dict[str, str] | None:
    """Stage-1 prompt -> id of the collection's text rows (None without a collection)."""
    if collection is None:
        return None
    from swift_ssid.core.collection import read_rows
    from swift_ssid.core.rows import generate_keys

    try:
        return generate_keys(read_rows(collection, image_root))
    except (OSError, ValueError) as e:
        raise UserError(f"--collection {collection}: {e}") from None


def run(args: argparse.Namespace) -> int:
    """Build the index; print a summary. Returns 0; raises UserError when the input or ``--out`` cannot be used or
    fewer than ``--min-usable`` of the images have a usable answer (after printing the ways on to stderr)."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not 0.0 <= args.min_usable <= 1.0:
        raise UserError(f"--min-usable {args.min_usable} must be between 0 and 1")
    check_output_dir(args.out, "--out")
    stats = build_index(
        args.results,
        args.out,
        collisions=args.collisions,
        check_images=args.check_images,
        image_root=args.image_root,
        text_keys=_text_keys(args.collection, args.image_root),
    )
    print(_summary(stats))
    if stats.valid < args.min_usable * stats.images:
        verdict, ways = too_few_usable(stats, args.min_usable, args.results)
        print(ways, file=sys.stderr)
        raise UserError(verdict)
    return 0
