"""``swift-ssid quality INDEX --out quality.json``: identifier quality without training a model.

Conformity, length, uniqueness and BM25 discriminability always; token lengths and the trie's shape with
``--tokenizer DIR``; embedding discriminability and consistency with ``--embedder NAME_OR_DIR``. Every
definition is in :mod:`swift_ssid.core.quality` and ``docs/quality-dense-hybrid.md``.

Example:
    swift-ssid quality demo_out/index --collection swift_ssid/data/demo/collection.jsonl \\
        --embedder all-MiniLM-L6-v2 --out demo_out/quality.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.core.metrics import DEFAULT_KS
from swift_ssid.workflows.pipeline import add_skip_invalid_argument, checked_items

OPTIONAL_EXTRA = "embed"  # a missing library is reported with this extra (swift_ssid.cli.main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX", help="identifier index folder (build-index or identifiers)")
    parser.add_argument("--out", required=True, metavar="quality.json", help="where to write the figures")
    parser.add_argument(
        "--collection", metavar="FILE", help="captions per image (Karpathy JSON or .jsonl); default: the index's"
    )
    parser.add_argument("--image-root", metavar="DIR", help="folder the collection's image paths are relative to")
    add_skip_invalid_argument(parser, "<out>.skipped.jsonl")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder: token lengths and the trie's shape")
    parser.add_argument(
        "--end",
        choices=("newline", "eos"),
        default="newline",
        help="how identifiers end in the trie: newline (a reason line follows, default) or eos (noreason)",
    )
    parser.add_argument(
        "--embedder", metavar="NAME_OR_DIR", help="sentence-transformers folder or all-MiniLM-L6-v2 (packaged)"
    )
    parser.add_argument("--device", default="cpu", help="device for the embedder (default cpu)")


def _token_measures(index, tokenizer_dir: str, end: str):
    """Token length per final identifier and the trie's shape, with the tokenizer at ``tokenizer_dir``."""
    from transformers import AutoTokenizer

    from swift_ssid.core.quality import trie_stats
    from swift_ssid.decoding.tokenisation import identifier_token_sequences
    from swift_ssid.decoding.trie import TokenTrie

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    identifiers = index.identifiers()
    _, sequences = identifier_token_sequences(tokenizer, identifiers, end=end)
    trie = TokenTrie.from_sequences(sequences, vocab_size=len(tokenizer))
    name = str(getattr(tokenizer, "name_or_path", "") or tokenizer_dir)
    lengths = {identifier: len(seq) for identifier, seq in zip(identifiers, sequences, strict=True)}
    return lengths, trie_stats(trie.keys, trie.vocab_size, [len(s) for s in sequences], name), name


def summary(report) -> str:
    """A few lines that say what the figures are."""
    from swift_ssid.reporting.tables import format_percent

    c, u, w = report.conformity, report.uniqueness, report.length.words
    reasons = ", ".join(f"{code} {n}" for code, n in c.invalid_by_reason.items())
    lines = [
        f"conformity: ok {format_percent(c.ok_share)}%, repaired {format_percent(c.repaired_share)}%, "
        f"invalid {format_percent(c.invalid_share)}%{f' ({reasons})' if reasons else ''}; "
        f"sentence-like {format_percent(c.sentence_like_share)}%",
        f"length: {w.mean} words mean, median {w.median}, p95 {w.p95}" if w.count else "length: no valid identifier",
        f"uniqueness: {format_percent(u.distinct_share)}% distinct, {u.collision_groups} collision groups, "
        f"largest {u.largest_group}, normalised entropy {u.normalized_entropy:.3f}",
    ]
    if report.length.tokens is not None:
        t = report.length.tokens
        lines.append(f"tokens: {t.mean} mean, median {t.median}, p95 {t.p95} ({report.length.tokenizer})")
    d = report.discriminability
    if d is not None:
        for label, values in (("BM25", d.bm25), (d.embedder_name, d.embedder)):
            if values:
                recall = ", ".join(f"R@{k} {format_percent(values[f'R@{k}'])}%" for k in DEFAULT_KS)
                lines.append(f"discriminability ({label}): {recall} (identifier -> own image's captions)")
    if report.consistency is not None:
        s = report.consistency
        lines.append(
            f"consistency ({s.embedder}): mean margin {s.mean_margin:.3f}, "
            f"positive {format_percent(s.positive_margin_share)}%"
        )
    if report.trie is not None:
        t = report.trie
        lines.append(
            f"trie: {t.nodes} nodes, depth max {t.depth_max} mean {t.depth_mean}, fan-out root {t.fanout_root} "
            f"mean {t.fanout_mean} max {t.fanout_max}, forced steps {format_percent(t.forced_share)}%"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.index import IdentifierIndex
    from swift_ssid.core.quality import measure_quality

    check_output_file(args.out, "--out")
    index = IdentifierIndex.load(args.index)
    collection = None
    if args.collection:
        skipped = Path(args.out).with_suffix(".skipped.jsonl")
        items = checked_items(args.collection, args.image_root, args.skip_invalid, skipped)
        collection = {item.image: list(item.captions) for item in items}
    token_lengths = trie = tokenizer = None
    if args.tokenizer:
        if not Path(args.tokenizer).is_dir():
            raise UserError(f"--tokenizer {args.tokenizer!r} is not a folder; pass the model's tokenizer folder")
        token_lengths, trie, tokenizer = _token_measures(index, args.tokenizer, args.end)
    embedder = None
    if args.embedder:
        from swift_ssid.encoders.text_embedder import SentenceEmbedder

        embedder = SentenceEmbedder(args.embedder, device=args.device, progress=True)
    report = measure_quality(
        index,
        collection=collection,
        embedder=embedder,
        token_lengths=token_lengths,
        trie=trie,
        tokenizer=tokenizer,
        meta={"index": str(args.index), "collection": args.collection},
        index_dir=args.index,
        progress=True,
    )
    report.save(args.out)
    print(summary(report))
    print(f"wrote {args.out}")
    return 0
