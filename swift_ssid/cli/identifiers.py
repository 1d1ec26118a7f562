"""``swift-ssid identifiers KIND``: GRACE's identifier strategies as identifier indexes (``build-index``'s format).

Examples:
    swift-ssid identifiers numeric --collection swift_ssid/data/demo/collection.jsonl --out runs/demo/index_numeric
    swift-ssid identifiers structured --collection data/flickr30k/dataset_flickr30k.json \\
        --image-root data/flickr30k/flickr30k-images --encoder models/clip-vit-large-patch14 \\
        --out runs/flickr30k/index_structured --tokenizer Qwen/Qwen2.5-VL-7B-Instruct
    swift-ssid identifiers atomic --collection ... --out runs/flickr30k/index_atomic   # + new_tokens.txt

``ssid`` indexes come from ``swift-ssid build-index`` (stage-1 answers of an MLLM); see docs/identifier-kinds.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from swift_ssid.core.errors import check_output_dir
from swift_ssid.core.index import POLICIES
from swift_ssid.core.kinds import BUILDABLE
from swift_ssid.workflows.kinds import KindOptions

DTYPES = ("float32", "float16", "bfloat16")


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
    add_kind_arguments(parser, aliases=True)


def add_kind_arguments(parser: argparse.ArgumentParser, aliases: bool = False) -> None:
    """Add the flags of :class:`swift_ssid.workflows.kinds.KindOptions` (read back by :func:`kind_options`).

    Args:
        parser: The command's parser (``swift-ssid identifiers``, ``swift-ssid protocol identifiers``).
        aliases: Also accept the first spellings of ``swift-ssid identifiers`` (``--k``, ``--c``, ``--seed``,
            ``--device``, ``--dtype``, ``--batch-size``), hidden from the help.
    """
    default = KindOptions()

    def add(group: Any, flags: tuple[str, ...], hidden: tuple[str, ...] = (), **kwargs: Any) -> None:
        action = group.add_argument(*flags, **kwargs)
        if aliases and hidden:
            extra = {key: kwargs[key] for key in ("type", "choices", "metavar") if key in kwargs}
            group.add_argument(*hidden, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **extra)

    parser.add_argument(
        "--collisions", choices=POLICIES, default=default.collisions, help="semantic / caption-derived collisions"
    )
    g = parser.add_argument_group("structured")
    g.add_argument("--encoder", metavar="DIR", help="transformers dual encoder (CLIP, SigLIP) for image embeddings")
    add(g, ("--cluster-k",), ("--k",), type=int, default=default.k, help="clusters per level (GRACE: %(default)s)")
    add(g, ("--cluster-c",), ("--c",), type=int, default=default.c, help="largest leaf cluster (GRACE: %(default)s)")
    add(
        g,
        ("--cluster-seed",),
        ("--seed",),
        type=int,
        default=default.seed,
        help="k-means random_state (GRACE: %(default)s)",
    )
    g.add_argument(
        "--n-init", "--n_init", type=int, default=default.n_init, help="k-means restarts (GRACE: %(default)s)"
    )
    g.add_argument("--embeddings-cache", metavar="FILE.npz", help="default: <out>/image_embeddings.npz")
    add(g, ("--encoder-device",), ("--device",), default=default.device, help="encoder device (cpu, cuda)")
    add(g, ("--encoder-dtype",), ("--dtype",), choices=DTYPES, default=default.dtype, help="encoder dtype")
    add(
        g,
        ("--encoder-batch-size",),
        ("--batch-size", "--batch_size"),
        type=int,
        default=default.batch_size,
        help="images per encoder batch (default %(default)s)",
    )
    g = parser.add_argument_group("semantic")
    g.add_argument(
        "--caption-index", type=int, default=default.caption_index, help="which caption names the image (0: first)"
    )
    g.add_argument(
        "--pseudo-captions",
        metavar="FILE.jsonl",
        help='rows {"image": path, "caption": text} used instead (GRACE: pseudo-queries for test images)',
    )
    g = parser.add_argument_group("atomic")
    g.add_argument("--token-width", type=int, default=None, help="digits of img_NNNNNN (default: max(6, needed))")


def kind_options(args: argparse.Namespace) -> KindOptions:
    """The :class:`swift_ssid.workflows.kinds.KindOptions` of flags added by :func:`add_kind_arguments`."""
    return KindOptions(
        kind=getattr(args, "kind", None),
        collisions=args.collisions,
        encoder=args.encoder,
        k=args.cluster_k,
        c=args.cluster_c,
        seed=args.cluster_seed,
        n_init=args.n_init,
        embeddings_cache=args.embeddings_cache,
        device=args.encoder_device,
        dtype=args.encoder_dtype,
        batch_size=args.encoder_batch_size,
        caption_index=args.caption_index,
        pseudo_captions=args.pseudo_captions,
        token_width=args.token_width,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from swift_ssid.workflows.kinds import build_identifiers

    spec = kind_options(args)
    try:
        check_output_dir(args.out, "--out")
        stats = build_identifiers(spec, args.collection, args.out, args.image_root, args.tokenizer)
    except (OSError, ValueError) as e:
        print(f"swift-ssid identifiers: error: {e}", file=sys.stderr)
        return 2
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
