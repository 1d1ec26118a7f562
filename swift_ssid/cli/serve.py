"""``swift-ssid serve``: a search service: HTTP API, thumbnails and a search page over one index.

It runs its own engine (the model, index and trie loaded once, :mod:`swift_ssid.service`), not a proxy in front
of ``swift deploy``: answers come from the same retriever as ``swift-ssid retrieve``, so they equal its run rows.
Concurrent requests are gathered into engine batches (``--max-batch-size``, ``--batch-wait-ms``). Bound to
127.0.0.1 unless ``--host`` says otherwise; Ctrl-C stops it cleanly. Routes: ``docs/search.md``.

Example:
    swift-ssid serve --model Qwen/Qwen2.5-VL-7B-Instruct --adapters output/checkpoint-300 \\
        --template ssid_qwen2_5_vl --index runs/flickr30k/index --image-root data/flickr30k-images --port 8000
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from swift_ssid.core.errors import UserError
from swift_ssid.service.engine import ModelSpec, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--image-root", "--image_root", metavar="DIR", default=None,
                        help="the collection folder: relative image paths resolve here, and only files inside it are "
                        "served (default: the current folder)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--k", type=int, default=10, help="images per search when a request names no k (default 10)")
    parser.add_argument("--max-k", type=int, default=50, help="the largest k a request may ask for (default 50)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="most searches per engine call (default 8)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long a search waits for others to share its engine call (default 10 ms)")  # fmt: skip


def check_arguments(args: argparse.Namespace) -> Path:
    """Validate the service flags before the model loads; return the image root."""
    for flag, value in (("--k", args.k), ("--max-k", args.max_k), ("--max-batch-size", args.max_batch_size)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if args.k > args.max_k:
        raise UserError(f"--k {args.k} is above --max-k {args.max_k}; raise --max-k or lower --k")
    if args.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms {args.batch_wait_ms}: must not be negative")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a port number; pass 1-65535")
    root = Path(args.image_root or os.getcwd())
    if not root.is_dir():
        raise UserError(f"--image-root {root}: no such folder; pass the folder the index's image paths are under")
    return root


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = check_arguments(args)
    from swift_ssid.service.app import create_app, run_server
    from swift_ssid.service.batching import Batcher
    from swift_ssid.service.engine import SearchEngine
    from swift_ssid.service.images import ImageStore

    engine = SearchEngine.open(ModelSpec.from_args(args), max_batch_size=args.max_batch_size)
    engine.retriever(args.k)  # the default K's retriever, made before the first request
    batcher = Batcher(engine.search, args.max_batch_size, args.batch_wait_ms / 1000)
    app = create_app(batcher, ImageStore(engine.index, root), engine.info, default_k=args.k, max_k=args.max_k)
    index = engine.info["index"]
    url = f"http://{args.host}:{args.port}/"

    def ready() -> None:
        print(f"serving {url} ({index['images']} images, {index['kind']} index {index['version']}; "
              f"model {args.model}); Ctrl-C stops", flush=True)  # fmt: skip

    try:
        run_server(app, args.host, args.port, on_ready=ready)
    finally:
        batcher.close()
    print("stopped", flush=True)
    return 0
