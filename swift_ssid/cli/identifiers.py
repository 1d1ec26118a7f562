"""``swift-ssid identifiers KIND``: GRACE's identifier strategies as identifier indexes (``build-index``'s format).

Examples:
    swift-ssid identifiers numeric --collection swift_ssid/data/demo/collection.jsonl --out runs/demo/index_numeric
    swift-ssid identifiers structured --collection data/flickr30k/dataset_flickr30k.json \\
        --image-root data/flickr30k/flickr30k-images --encoder models/clip-vit-large-patch14 \\
        --out runs/flickr30k/index_structured --tokenizer Qwen/Qwen2.5-VL-7B-Instruct
    swift-ssid identifiers atomic --collection ... --out runs/flickr30k/index_atomic   # + new_tokens.txt

``ssid`` indexes come from ``swift-ssid build-index`` (stage-1 answers of an MLLM); see docs/identifier-kinds.md.

The collection is checked first, as by ``swift-ssid check`` and ``swift-ssid run``: a problem row stops the command
with one line per problem, or, with ``--skip-invalid``, is listed in ``OUT/skipped.jsonl`` and left out (the usable
rows are indexed from ``OUT/collection.jsonl``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from swift_ssid.core.errors import check_output_dir
from swift_ssid.core.kinds import BUILDABLE
from swift_ssid.workflows.kinds import add_kind_arguments, kind_options
from swift_ssid.workflows.pipeline import add_skip_invalid_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=BUILDABLE, help="identifier strategy (ssid: use swift-ssid build-index)")
    parser.add_argument("--collection", required=True, help="Karpathy-split JSON or collection .jsonl")
    parser.add_argument("--image-root", "--image_root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, metavar="DIR", help="index directory to write")
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        default=None,
        help="model or tokenizer folder: adds tokens per identifier, trie nodes and fan-out to stats.json",
    )
    add_skip_invalid_argument(parser, "OUT/skipped.jsonl")
    add_kind_arguments(parser, aliases=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from swift_ssid.workflows.kinds import build_identifiers
    from swift_ssid.workflows.pipeline import check_rows, write_checked

    spec = kind_options(args)
    out = check_output_dir(args.out, "--out")
    report = check_rows(
        args.collection, args.image_root, skip_invalid=args.skip_invalid, skipped=Path(out) / "skipped.jsonl"
    )
    collection, image_root = args.collection, args.image_root
    if report.problems:  # index the usable rows only
        collection, image_root = write_checked(report.items, Path(out) / "collection.jsonl"), None
        print(f"{report.summary()}; skipped rows: {Path(out) / 'skipped.jsonl'}")
    stats = build_identifiers(spec, collection, args.out, image_root, args.tokenizer)
    print(summary_text(stats))
    return 0


def summary_text(stats: dict[str, Any]) -> str:
    """A few human lines about a built kind index."""
    lines = [
        f"{stats['kind']} identifiers for {stats['images']} images -> {stats['files']['index']}",
        f"  distinct {stats['unique_raw_identifiers']} (ratio {stats['distinct_ratio']}), collision groups "
        f"{stats['collision_groups']} ({stats['collision_images']} images, policy {stats['policy']})",
        f"  identifier length: chars {stats['identifier_chars']['mean']} mean, new tokens {stats['new_tokens_added']}",
    ]
    tokens = stats.get("tokens")
    if tokens:
        lines.append(
            f"  tokens per identifier {tokens['tokens_per_identifier']['mean']} mean (max "
            f"{tokens['tokens_per_identifier']['max']}); trie {tokens['trie_nodes']} nodes, fan-out max "
            f"{tokens['trie_max_fanout']} / mean {tokens['trie_mean_fanout']}; vocabulary +{tokens['new_tokens_added']}"
        )
    lines.append(f"  stats: {stats['files']['stats']}")
    return "\n".join(lines)
