"""``swift-ssid fuse``: hybrid runs, by fusing runs with ranx or by reranking a run's images densely.

Fusion: ``swift-ssid fuse GEN.jsonl DENSE.jsonl --method rrf --out HYBRID.jsonl`` (any ranx method that needs
no training, :data:`swift_ssid.core.fusion.METHODS`). Rerank: ``swift-ssid fuse GEN.jsonl --rerank --encoder DIR
--collection FILE --out RERANKED.jsonl`` keeps the generative run's images and orders them by the dual
encoder's query-image cosine similarity (the image embeddings come from the ``dense`` cache when present).
Both write image-level run rows (each image its own identifier) that ``evaluate``, ``report`` and ``table`` read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.core.fusion import METHODS, NORMS
from swift_ssid.reporting.tables import format_metrics
from swift_ssid.workflows.pipeline import add_skip_invalid_argument, checked_items

OPTIONAL_EXTRA = "embed"  # a missing library is reported with this extra (swift_ssid.cli.main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN.jsonl", nargs="+", help="run files (generative, dense, ...)")
    parser.add_argument("--out", required=True, metavar="RUN.jsonl", help="the hybrid run file to write")
    parser.add_argument("--names", nargs="+", help="one label per run (default: file stems)")
    parser.add_argument("--method", choices=METHODS, default="rrf", help="ranx fusion method (default rrf)")
    parser.add_argument("--norm", choices=NORMS, default="min-max", help="ranx score normalisation (default min-max)")
    parser.add_argument(
        "--param", nargs="+", default=[], metavar="KEY=VALUE", help="method parameters, e.g. k=60 (rrf), phi=0.8 (rbc)"
    )
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per run (wsum)")
    parser.add_argument("--k", type=int, help="keep the first K images per query (default: all)")
    rerank = parser.add_argument_group("rerank (one run)")
    rerank.add_argument("--rerank", action="store_true", help="order the run's images by dense similarity")
    rerank.add_argument("--encoder", metavar="DIR", help="dual encoder folder for --rerank")
    rerank.add_argument("--collection", metavar="FILE", help="the collection the run's images come from")
    add_skip_invalid_argument(rerank, "<out>.skipped.jsonl")
    rerank.add_argument("--image-root", metavar="DIR", help="folder the collection's image paths are relative to")
    rerank.add_argument("--cache", metavar="DIR", help="image embedding cache (default: <out folder>/.dense_cache)")
    rerank.add_argument("--storage", choices=("float32", "float16"), default="float32", help="stored embedding dtype")
    rerank.add_argument("--device", default="cpu", help="torch device for the encoder")
    rerank.add_argument("--batch-size", type=int, default=32, help="images or texts per forward pass")


def _params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r} is not KEY=VALUE (e.g. k=60)")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _rerank(args: argparse.Namespace, rows: list) -> list:
    from swift_ssid.core.fusion import rerank_rows
    from swift_ssid.encoders.dense_retrieval import image_embeddings
    from swift_ssid.encoders.dual_encoder import DualEncoder

    if not args.encoder or not args.collection:
        raise UserError("--rerank needs --encoder DIR and --collection FILE (the images' collection)")
    skipped = Path(args.out).with_suffix(".skipped.jsonl")
    items = checked_items(args.collection, args.image_root, args.skip_invalid, skipped)
    images = [item.image for item in items]
    position = {image: i for i, image in enumerate(images)}
    unknown = sorted({image for row in rows for image in row.images if image not in position})
    if unknown:
        raise UserError(
            f"{len(unknown)} image(s) of {args.runs[0]} are not in {args.collection} (e.g. {unknown[0]!r}); "
            "pass the collection the run's index was built from"
        )
    encoder = DualEncoder(args.encoder, device=args.device, batch_size=args.batch_size)
    cache = Path(args.cache) if args.cache else Path(args.out).resolve().parent / ".dense_cache"
    image_emb = image_embeddings(encoder, images, cache, storage=args.storage)

    def similarity(batch: list) -> list[list[float]]:
        text = encoder.embed_texts([row.query for row in batch])
        out = []
        for vector, row in zip(text, batch, strict=True):
            ids = [position[image] for image in row.images]
            out.append([float(s) for s in (image_emb[ids].astype("float32") @ vector)] if ids else [])
        return out

    base_kind = rows[0].setting.get("kind", "generative") if rows else "generative"
    setting = {"kind": f"{base_kind}+rerank", "rerank": "dense", "encoder": Path(args.encoder).name}
    setting["input"] = Path(args.runs[0]).stem
    return rerank_rows(rows, similarity, setting=setting, k=args.k)


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.fusion import fuse_runs
    from swift_ssid.core.metrics import evaluate_run
    from swift_ssid.core.runs import read_run, write_run

    check_output_file(args.out, "--out")
    runs = [read_run(path) for path in args.runs]
    names = args.names or [Path(p).stem for p in args.runs]
    if len(names) != len(runs):
        raise UserError(f"got {len(names)} --names for {len(runs)} runs; give one name per run")
    if args.k is not None and args.k < 1:
        raise UserError(f"--k {args.k} must be at least 1")
    if args.rerank:
        if len(runs) != 1:
            raise UserError(f"--rerank takes one run, got {len(runs)}; fuse several runs without --rerank")
        rows = _rerank(args, runs[0])
    else:
        params = _params(args.param)
        if args.weights is not None:
            if len(args.weights) != len(runs):
                raise UserError(f"got {len(args.weights)} --weights for {len(runs)} runs; give one per run")
            params["weights"] = args.weights
        if args.method == "wsum" and "weights" not in params:
            raise UserError("--method wsum needs --weights (one per run)")
        rows = fuse_runs(runs, method=args.method, norm=args.norm, params=params, k=args.k, names=names)
    write_run(args.out, rows)
    print(format_metrics(evaluate_run(rows), args.out))
    return 0
