"""``swift-ssid search "QUERY"``: one-shot search of an index with a trained model: ranked images, no query file.

Queries come from the command line (one or several) or, with none or ``-``, from stdin (one a line). Each is
answered as ``swift-ssid retrieve --k K`` answers it (the same retriever, :mod:`swift_ssid.service.engine`): the
first K images, each with the identifier that named it, its beam score and its reason. Printed as a table, or with
``--json`` as JSON Lines (one object per query: ``query``, ``k``, ``hits``, ``setting``).

Example:
    swift-ssid search "a tabby cat on a sofa" --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --adapters output/checkpoint-300 --template ssid_qwen2_5_vl --index runs/flickr30k/index --k 5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from swift_ssid.core.errors import UserError
from swift_ssid.service.engine import ModelSpec, SearchResult, add_model_arguments, check_query


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="*", metavar="QUERY", help="query text(s); none or - reads stdin lines")
    add_model_arguments(parser)
    parser.add_argument("--k", type=int, default=10, help="images per query = beams (default 10)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=8, help="queries per engine call")
    parser.add_argument("--json", action="store_true", help="JSON Lines, one object per query, instead of a table")


def read_queries(args: argparse.Namespace) -> list[str]:
    """The query texts: the arguments, else stdin's non-blank lines; each checked (``UserError``)."""
    texts = args.queries if args.queries and args.queries != ["-"] else [ln for ln in sys.stdin if ln.strip()]
    if not texts:
        raise UserError("no query: pass QUERY arguments or lines on stdin, e.g. swift-ssid search 'a tabby cat'")
    return [check_query(t) for t in texts]


def format_result(result: SearchResult) -> str:
    """A query's hits as an aligned text table (rank, score, identifier, image, reason)."""
    lines = [f"{result.query}  (k={result.k}, reason {result.setting.get('reason')})"]
    if not result.hits:
        return "\n".join([*lines, "  no image"])
    width = max(len(h.identifier) for h in result.hits)
    image_width = max(len(h.image) for h in result.hits)
    for h in result.hits:
        lines.append(
            f"{h.rank:>4}  {h.score:9.4f}  {h.identifier:<{width}}  {h.image:<{image_width}}  {h.reason or ''}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for flag, value in (("--k", args.k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    texts = read_queries(args)
    from swift_ssid.service.engine import SearchEngine

    engine = SearchEngine.open(ModelSpec.from_args(args), max_batch_size=args.batch_size)
    for start in range(0, len(texts), args.batch_size):
        for result in engine.search(texts[start : start + args.batch_size], args.k):
            print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else format_result(result) + "\n")
    return 0
