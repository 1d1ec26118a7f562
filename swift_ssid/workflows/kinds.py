"""Building identifier indexes of GRACE's kinds: collection -> identifiers (core.kinds) -> index + statistics.

Shared by ``swift-ssid identifiers`` and ``swift-ssid protocol identifiers``. The token statistics load the model's
tokenizer (transformers) and build the trie (``swift_ssid.decoding``); ``structured`` embeds the images with
:class:`swift_ssid.encoders.DualEncoder`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift_ssid.core.index import POLICIES
from swift_ssid.workflows.run import DTYPES

if TYPE_CHECKING:
    from swift_ssid.core.index import IdentifierIndex


@dataclass
class KindOptions:
    """How a kind's index is built: the options of ``swift-ssid identifiers`` and ``swift-ssid protocol identifiers``.

    The defaults are GRACE's and written only here; the flags come from
    :func:`swift_ssid.cli.identifiers.add_kind_arguments`.

    Attributes:
        kind: One of :data:`swift_ssid.core.kinds.BUILDABLE`; None in options shared by several kinds
            (:meth:`spec` sets it).
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

    kind: str | None = None
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

    def spec(self, kind: str) -> KindOptions:
        """These options for ``kind``; fails early when ``structured`` has no encoder."""
        if kind == "structured" and not self.encoder:
            raise ValueError("structured identifiers cluster image embeddings: pass --encoder <CLIP or SigLIP folder>")
        return replace(self, kind=kind)


KindSpec = KindOptions
"""The former name of :class:`KindOptions` (one kind's options), kept for callers."""


def build_identifiers(
    spec: KindOptions,
    collection: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Build one kind's identifier index (``swift-ssid identifiers``); return its ``stats.json``.

    Args:
        spec: The kind and its options (``spec.kind`` set).
        collection: Karpathy-split JSON or collection ``.jsonl``.
        out_dir: Index directory to write.
        image_root: Folder the image paths are relative to.
        tokenizer: Model or tokenizer folder for the token statistics (None: left out).

    Returns:
        The stats.
    """
    from swift_ssid.core import kinds
    from swift_ssid.core.collection import load_collection

    if spec.kind is None:
        raise ValueError("KindOptions.kind is None: build with options.spec(KIND), KIND one of BUILDABLE")
    spec.spec(spec.kind)  # structured needs an encoder
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

    def tokens(index: IdentifierIndex) -> dict[str, Any]:
        return token_stats(index.identifiers(), str(tokenizer), new_tokens)

    return kinds.write_kind_index(
        spec.kind, items, identifiers, out, params, spec.collisions, new_tokens, tokens if tokenizer else None
    )


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


def token_stats(identifiers: list[str], tokenizer_dir: str, new_tokens: list[str]) -> dict[str, Any]:
    """Tokens per identifier (as generated after ``identifier:``), trie size and fan-out, vocabulary growth.

    Args:
        identifiers: The index's identifiers (:meth:`swift_ssid.core.index.IdentifierIndex.identifiers`).
        tokenizer_dir: A model or tokenizer folder (AutoTokenizer).
        new_tokens: Tokens the kind adds (added here as ms-swift's ``--new_special_tokens`` adds them).

    Returns:
        ``tokenizer``, ``base_vocab``, ``new_tokens_added``, ``vocab_growth``, ``tokens_per_identifier``
        (min/median/mean/max, without the end token), ``trie_nodes``, ``trie_max_fanout``, ``trie_root_fanout``,
        ``trie_mean_fanout`` (children per inner node).
    """
    import numpy as np
    from transformers import AutoTokenizer

    from swift_ssid.core.kinds import summary
    from swift_ssid.decoding.tokenisation import identifier_token_sequences
    from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    base = len(tokenizer)
    added = tokenizer.add_special_tokens({"additional_special_tokens": new_tokens}) if new_tokens else 0
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
