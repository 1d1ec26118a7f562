"""Building identifier indexes of GRACE's kinds: collection -> identifiers (core.kinds) -> index + statistics.

Shared by ``swift-ssid identifiers`` and ``swift-ssid protocol identifiers``. The token statistics load the model's
tokenizer (transformers) and build the trie (``swift_ssid.decoding``); ``structured`` embeds the images with
:class:`swift_ssid.encoders.DualEncoder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class KindSpec:
    """One kind and its options (the flags of ``swift-ssid identifiers``).

    Attributes:
        kind: One of :data:`swift_ssid.core.kinds.BUILDABLE`.
        collisions: ``shared`` or ``disambiguate`` (semantic, caption-derived).
        encoder: Dual-encoder folder (structured).
        k: Clusters per level (structured; GRACE 30).
        c: Largest leaf cluster (structured; GRACE 30).
        seed: k-means seed (structured; GRACE 7).
        n_init: k-means restarts (structured; GRACE 100).
        embeddings_cache: ``.npz`` cache of the image embeddings (default ``<out>/image_embeddings.npz``).
        device: Encoder device.
        dtype: Encoder dtype.
        batch_size: Images per encoder batch.
        caption_index: Which caption names the image (semantic).
        pseudo_captions: JSONL of ``{"image", "caption"}`` replacing captions (semantic).
        token_width: Digits of the atomic tokens (None: ``max(6, needed)``).
    """

    kind: str
    collisions: str = "shared"
    encoder: str | None = None
    k: int = 30
    c: int = 30
    seed: int = 7
    n_init: int = 100
    embeddings_cache: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    caption_index: int = 0
    pseudo_captions: str | None = None
    token_width: int | None = None


def build_identifiers(
    spec: KindSpec,
    collection: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Build one kind's identifier index (``swift-ssid identifiers``); return its ``stats.json``.

    Args:
        spec: The kind and its options.
        collection: Karpathy-split JSON or collection ``.jsonl``.
        out_dir: Index directory to write.
        image_root: Folder the image paths are relative to.
        tokenizer: Model or tokenizer folder for the token statistics (None: left out).

    Returns:
        The stats.
    """
    from swift_ssid.core import kinds
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.jsonl import write_json_atomic

    if spec.kind == "structured" and not spec.encoder:
        raise ValueError("structured identifiers cluster image embeddings: pass --encoder <CLIP or SigLIP folder>")
    items = kinds.indexed_items(load_collection(collection, image_root))
    out = Path(out_dir)
    params: dict[str, Any] = {"collection": str(collection), "images": len(items)}
    new_tokens: list[str] = []
    if spec.kind == "numeric":
        identifiers = kinds.numeric_identifiers(len(items))
    elif spec.kind == "string":
        identifiers = kinds.string_identifiers(len(items))
    elif spec.kind == "atomic":
        identifiers = new_tokens = kinds.atomic_tokens(len(items), spec.token_width)
        params["token_width"] = len(new_tokens[0]) - len(kinds.ATOMIC_PREFIX)
    elif spec.kind == "semantic":
        pseudo = _read_pseudo(spec.pseudo_captions, image_root, items) if spec.pseudo_captions else None
        identifiers = kinds.semantic_identifiers(items, spec.caption_index, pseudo)
        params.update({"caption_index": spec.caption_index, "pseudo_captions": spec.pseudo_captions})
    elif spec.kind == "caption-derived":
        identifiers = kinds.caption_derived_identifiers(items)
    else:
        from swift_ssid.encoders.dual_encoder import DualEncoder

        encoder = DualEncoder(spec.encoder, device=spec.device, dtype=spec.dtype, batch_size=spec.batch_size)
        out.mkdir(parents=True, exist_ok=True)
        cache = Path(spec.embeddings_cache) if spec.embeddings_cache else out / "image_embeddings.npz"
        emb = encoder.embed_images([item.image for item in items], cache=cache)
        paths = kinds.hierarchical_kmeans(emb, k=spec.k, c=spec.c, seed=spec.seed, n_init=spec.n_init, progress=True)
        identifiers = [kinds.structured_identifier(p) for p in paths]
        params.update(
            {
                "k": spec.k,
                "c": spec.c,
                "seed": spec.seed,
                "n_init": spec.n_init,
                "encoder": str(spec.encoder),
                "encoder_fingerprint": encoder.fingerprint,
                "embedding_dim": int(emb.shape[1]),
                "embeddings_cache": str(cache),
                "depth": kinds.summary([len(p) for p in paths]),
            }
        )
    params["collisions"] = spec.collisions
    stats = kinds.write_kind_index(spec.kind, items, identifiers, out, params, spec.collisions, new_tokens)
    if tokenizer:
        stats["tokens"] = token_stats(out, tokenizer, new_tokens)
        write_json_atomic(out / "stats.json", stats)
    return stats


def _read_pseudo(path: str, image_root: str | os.PathLike | None, items: list[Any]) -> dict[str, str]:
    """Read ``{"image", "caption"}`` rows into indexed image path -> caption.

    An image is matched by its path (relative to ``--image-root``, else the collection's folder, or absolute) or,
    failing that, by a file name that only one indexed image has; a row matching no indexed image is an error.
    """
    from collections import Counter

    from swift_ssid.core.jsonl import iter_jsonl

    known = {item.image for item in items}
    names = Counter(Path(item.image).name for item in items)
    by_name = {Path(item.image).name: item.image for item in items}
    roots = [Path(image_root)] if image_root else []
    roots += sorted({Path(item.image).parent for item in items})
    out: dict[str, str] = {}
    for lineno, row, error in iter_jsonl(path):
        if error is not None:
            raise ValueError(error)
        image, caption = row.get("image"), row.get("caption")
        if not isinstance(image, str) or not image or not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{path}:{lineno}: need 'image' and a non-empty 'caption' string, got {row!r}")
        candidates = [os.path.normpath(os.path.abspath(Path(root) / image)) for root in roots]
        match = next((c for c in candidates if c in known), None)
        if match is None and names.get(Path(image).name) == 1:
            match = by_name[Path(image).name]
        if match is None:
            raise ValueError(
                f"{path}:{lineno}: image {image!r} is none of the indexed images; give its path as the collection "
                "does (relative to --image-root) or an absolute path"
            )
        out[match] = caption
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
    from swift_ssid.decoding.tokenisation import identifier_token_sequences
    from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie

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
