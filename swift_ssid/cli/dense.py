"""``swift-ssid dense``: text -> image retrieval with a dual encoder (CLIP, SigLIP), written as a run file.

The candidates are the collection's images (``--split``, default all); their embeddings are computed once
(resumable, progress bar) and stored under ``--cache`` in ``--storage`` dtype; each query caption is embedded
and scored against every image exactly (faiss' exact inner-product search or torch matmul + topk, streamed
over image blocks). Each run row lists the top-K images, each image as its own identifier, with
``setting.kind = "dense"``.

Example:
    swift-ssid dense --encoder models/clip-vit-large-patch14 --collection data/dataset_flickr30k.json \\
        --queries runs/flickr30k/datasets/ssid-query.jsonl --k 10 --out runs/flickr30k/dense.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swift_ssid.core.collection import SPLITS
from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.reporting.tables import format_metrics
from swift_ssid.workflows.pipeline import add_skip_invalid_argument, checked_items
from swift_ssid.workflows.run import DTYPES

OPTIONAL_EXTRA = "embed"  # a missing library is reported with this extra (swift_ssid.cli.main)
SPLIT_CHOICES = ("all", "train", *[s for s in SPLITS if s != "train"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", required=True, metavar="DIR", help="transformers dual encoder folder (CLIP...)")
    parser.add_argument("--collection", required=True, metavar="FILE", help="Karpathy JSON or collection .jsonl")
    parser.add_argument("--image-root", metavar="DIR", help="folder the collection's image paths are relative to")
    add_skip_invalid_argument(parser, "<out>.skipped.jsonl")
    parser.add_argument("--queries", required=True, metavar="Q.jsonl", help="queries (the ssid-query rows)")
    parser.add_argument("--k", type=int, default=10, help="images per query (default 10)")
    parser.add_argument("--out", required=True, metavar="RUN.jsonl", help="run file to write")
    parser.add_argument(
        "--split", choices=SPLIT_CHOICES, default="all", help="candidate images: all (default) or one split"
    )
    parser.add_argument(
        "--cache", metavar="DIR", help="where image embeddings are kept (default: <out folder>/.dense_cache)"
    )
    parser.add_argument(
        "--storage", choices=("float32", "float16"), default="float32", help="dtype of the stored image embeddings"
    )
    parser.add_argument("--search", choices=("auto", "faiss", "torch"), default="auto", help="exact top-K backend")
    parser.add_argument("--device", default="cpu", help="torch device for the encoder (default cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype")
    parser.add_argument("--batch-size", type=int, default=32, help="images or texts per forward pass")
    parser.add_argument(
        "--setting", nargs="+", default=[], metavar="KEY=VALUE", help="extra labels for every row's setting"
    )
    parser.add_argument("--clip-benchmark", metavar="RESULT.json", help="also write the R@K as a LAION clip_benchmark "
                        "zeroshot_retrieval result (`clip_benchmark build` merges it with CLIP rows)")  # fmt: skip
    parser.add_argument("--dataset", help="the clip_benchmark dataset name (default: the queries file's name)")


def candidate_images(items, split: str) -> list[str]:
    """The candidate image paths of a collection for ``--split``."""
    if split == "all":
        return [item.image for item in items]
    wanted = {"train", "restval"} if split == "train" else {split}
    return [item.image for item in items if item.split in wanted]


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.metrics import evaluate_run
    from swift_ssid.core.queries import load_queries
    from swift_ssid.core.runs import parse_labels, write_run

    check_output_file(args.out, "--out")
    if args.clip_benchmark:
        check_output_file(args.clip_benchmark, "--clip-benchmark")
    if args.k < 1:
        raise UserError(f"--k {args.k} must be at least 1")
    labels = parse_labels(args.setting)
    skipped = Path(args.out).with_suffix(".skipped.jsonl")
    items = checked_items(args.collection, args.image_root, args.skip_invalid, skipped)
    images = candidate_images(items, args.split)
    if not images:
        raise UserError(f"{args.collection}: no image in split {args.split!r}; pick another --split")
    queries = load_queries(args.queries)
    known = set(images)
    outside = [q for q in queries if not known.intersection(q.gold_images)]
    if len(outside) == len(queries):
        raise UserError(
            f"no query's gold image is among the {len(images)} candidates of {args.collection} "
            f"(split {args.split}); e.g. query {outside[0].query_id!r} wants {outside[0].gold_images[0]!r}, "
            f"a candidate is {images[0]!r}: pass the collection the queries were made from"
        )
    from swift_ssid.encoders.dense_retrieval import dense_run_rows, exact_top_k, image_embeddings
    from swift_ssid.encoders.dual_encoder import DualEncoder

    encoder = DualEncoder(args.encoder, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    cache = Path(args.cache) if args.cache else Path(args.out).resolve().parent / ".dense_cache"
    image_emb = image_embeddings(encoder, images, cache, storage=args.storage)
    text_emb = encoder.embed_texts([q.query for q in queries])
    scores, ids = exact_top_k(text_emb, image_emb, args.k, backend=args.search)
    setting = {
        "kind": "dense",
        "encoder": Path(args.encoder).name,
        "fingerprint": encoder.fingerprint,
        "k": args.k,
        **labels,
    }
    rows = dense_run_rows(queries, images, scores, ids, setting)
    write_run(args.out, rows)
    if outside:
        print(f"warning: {len(outside)} of {len(queries)} queries have no gold image among the candidates")
    print(f"dense: {len(queries)} queries over {len(images)} images ({args.storage} embeddings in {cache})")
    metrics = evaluate_run(rows)
    print(format_metrics(metrics, args.out))
    if args.clip_benchmark:
        from swift_ssid.reporting.clip_benchmark import write_run_result

        print(write_run_result(args.clip_benchmark, rows, metrics, args.dataset or Path(args.queries).stem))
    return 0
