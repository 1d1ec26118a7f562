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
from pathlib import Path
from typing import Any

from swift_ssid.core.index import POLICIES
from swift_ssid.core.kinds import BUILDABLE

DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=BUILDABLE, help="identifier strategy (ssid: use swift-ssid build-index)")
    parser.add_argument("--collection", required=True, help="Karpathy-split JSON or collection .jsonl")
    parser.add_argument("--image-root", "--image_root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, metavar="DIR", help="index directory to write")
    parser.add_argument(
        "--collisions", choices=POLICIES, default="shared", help="semantic / caption-derived: shared or disambiguate"
    )
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        default=None,
        help="model or tokenizer folder: adds tokens per identifier, trie nodes and fan-out to stats.json",
    )
    g = parser.add_argument_group("structured")
    g.add_argument("--encoder", metavar="DIR", help="transformers dual encoder (CLIP, SigLIP) for image embeddings")
    g.add_argument("--k", type=int, default=30, help="clusters per level (GRACE: 30)")
    g.add_argument("--c", type=int, default=30, help="largest leaf cluster (GRACE: 30)")
    g.add_argument("--seed", type=int, default=7, help="k-means random_state (GRACE: 7)")
    g.add_argument("--n-init", "--n_init", type=int, default=100, help="k-means restarts (GRACE: 100)")
    g.add_argument("--embeddings-cache", metavar="FILE.npz", help="default: <out>/image_embeddings.npz")
    g.add_argument("--device", default="cpu", help="encoder device (cpu, cuda)")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="encoder dtype")
    g.add_argument("--batch-size", "--batch_size", type=int, default=32, help="images per encoder batch")
    g = parser.add_argument_group("semantic")
    g.add_argument("--caption-index", type=int, default=0, help="which caption names the image (default: first)")
    g.add_argument(
        "--pseudo-captions",
        metavar="FILE.jsonl",
        help='rows {"image": path, "caption": text} used instead (GRACE: pseudo-queries for test images)',
    )
    g = parser.add_argument_group("atomic")
    g.add_argument("--token-width", type=int, default=None, help="digits of img_NNNNNN (default: max(6, needed))")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = build(args)
    except (OSError, ValueError) as e:
        print(f"swift-ssid identifiers: error: {e}", file=sys.stderr)
        return 2
    print(summary_text(stats))
    return 0


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Build the index that ``args`` describe; return its stats."""
    from swift_ssid.core import kinds
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.jsonl import write_json_atomic

    if args.kind == "structured" and not args.encoder:
        raise ValueError("structured identifiers cluster image embeddings: pass --encoder <CLIP or SigLIP folder>")
    items = kinds.indexed_items(load_collection(args.collection, args.image_root))
    out = Path(args.out)
    params: dict[str, Any] = {"collection": str(args.collection), "images": len(items)}
    new_tokens: list[str] = []
    if args.kind == "numeric":
        identifiers = kinds.numeric_identifiers(len(items))
    elif args.kind == "string":
        identifiers = kinds.string_identifiers(len(items))
    elif args.kind == "atomic":
        identifiers = new_tokens = kinds.atomic_tokens(len(items), args.token_width)
        params["token_width"] = len(new_tokens[0]) - len(kinds.ATOMIC_PREFIX)
    elif args.kind == "semantic":
        pseudo = _read_pseudo(args.pseudo_captions, args.image_root, args.collection) if args.pseudo_captions else None
        identifiers = kinds.semantic_identifiers(items, args.caption_index, pseudo)
        params.update({"caption_index": args.caption_index, "pseudo_captions": args.pseudo_captions})
    elif args.kind == "caption-derived":
        identifiers = kinds.caption_derived_identifiers(items)
    else:
        from swift_ssid.encoders.dual_encoder import DualEncoder

        encoder = DualEncoder(args.encoder, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
        out.mkdir(parents=True, exist_ok=True)
        cache = Path(args.embeddings_cache) if args.embeddings_cache else out / "image_embeddings.npz"
        emb = encoder.embed_images([item.image for item in items], cache=cache)
        paths = kinds.hierarchical_kmeans(emb, k=args.k, c=args.c, seed=args.seed, n_init=args.n_init, progress=True)
        identifiers = [kinds.structured_identifier(p) for p in paths]
        params.update(
            {
                "k": args.k,
                "c": args.c,
                "seed": args.seed,
                "n_init": args.n_init,
                "encoder": str(args.encoder),
                "encoder_fingerprint": encoder.fingerprint,
                "embedding_dim": int(emb.shape[1]),
                "embeddings_cache": str(cache),
                "depth": kinds.summary([len(p) for p in paths]),
            }
        )
    params["collisions"] = args.collisions
    stats = kinds.write_kind_index(args.kind, items, identifiers, out, params, args.collisions, new_tokens)
    if args.tokenizer:
        stats["tokens"] = token_stats(out, args.tokenizer, new_tokens)
        write_json_atomic(out / "stats.json", stats)
    return stats


def _read_pseudo(path: str, image_root: str | None, collection: str) -> dict[str, str]:
    """image path (absolute, as the collection resolves it) -> pseudo caption."""
    import os

    from swift_ssid.core.jsonl import iter_jsonl

    root = Path(image_root) if image_root else Path(collection).resolve().parent
    out = {}
    for lineno, row, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(error)
        image, caption = row.get("image"), row.get("caption")
        if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{path}:{lineno}: need 'image' and a non-empty 'caption' string, got {row!r}")
        resolved = image if os.path.isabs(image) else str(root / image)
        out[os.path.normpath(os.path.abspath(resolved))] = caption
    return out


def token_stats(index_dir: Path, tokenizer_dir: str, new_tokens: list[str]) -> dict[str, Any]:
    """Tokens per identifier (as generated after ``identifier:``), trie size and fan-out, vocabulary growth.

    Args:
        index_dir: The built index.
        tokenizer_dir: A model or tokenizer folder (AutoTokenizer).
        new_tokens: Tokens the kind adds (added here as ms-swift's ``--new_special_tokens`` adds them).

    Returns:
        ``tokenizer``, ``base_vocab``, ``new_tokens_added``, ``vocab_growth``, ``tokens_per_identifier``
        (min/median/mean/max, without the end token), ``trie_nodes``, ``trie_max_fanout``, ``trie_root_fanout``,
        ``trie_mean_fanout`` (children per inner node).
    """
    import numpy as np
    from transformers import AutoTokenizer

    from swift_ssid.core.index import IdentifierIndex
    from swift_ssid.core.kinds import summary
    from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie, identifier_token_sequences

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    base = len(tokenizer)
    added = tokenizer.add_special_tokens({"additional_special_tokens": new_tokens}) if new_tokens else 0
    identifiers = IdentifierIndex.load(index_dir).identifiers()
    _, seqs = identifier_token_sequences(tokenizer, identifiers, end="eos")
    trie = build_identifier_trie(tokenizer, identifiers, end="eos")
    parents = trie.keys // trie.vocab_size
    inner = int(np.unique(parents).size) if parents.size else 0
    return {
        "tokenizer": str(tokenizer_dir),
        "base_vocab": base,
        "new_tokens_added": int(added),
        "vocab_growth": round(added / base, 6),
        "tokens_per_identifier": summary([len(s) - 1 for s in seqs]),  # the last token ends the response
        "trie_nodes": trie.num_nodes,
        "trie_max_fanout": trie.max_fanout(),
        "trie_root_fanout": int(trie.children(TokenTrie.ROOT).size),
        "trie_mean_fanout": round((trie.num_nodes - 1) / inner, 3) if inner else 0.0,
    }


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
