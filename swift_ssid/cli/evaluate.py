"""``swift-ssid evaluate RUN.jsonl``: the paper's R@K (image-level hit rate) of a run file.

Two inputs:

* a run file of ``swift-ssid retrieve`` (K ranked identifiers per query): R@1/5/10;
* a ``swift infer`` result file of the ``ssid-query`` dataset (``--queries`` the ``ssid-query.jsonl`` it was made
  from, ``--index`` the identifier index): ``swift infer`` keeps only the top beam, so only **R@1** is
  defined and reported (labelled so); R@5/10 need ``swift-ssid retrieve``. Result rows are matched to queries by
  position and checked by their user turn.

With a run file, ``--index DIR`` checks that the run was made with the index's current version (refused otherwise,
naming both versions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.core.jsonl import iter_jsonl, write_text_atomic
from swift_ssid.core.metrics import DEFAULT_KS, evaluate_run
from swift_ssid.core.runs import RunRow, read_run, row_from_answers
from swift_ssid.reporting.tables import format_metrics

INFER_NOTE = "top beam of `swift infer` only: R@1 (R@5/R@10 need `swift-ssid retrieve`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN.jsonl", help="run file of `swift-ssid retrieve`, or a `swift infer` result file"
    )
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cut-offs (default: 1 5 10)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")
    parser.add_argument(
        "--queries",
        metavar="FILE",
        help="with a `swift infer` result file: the ssid-query.jsonl the results were generated from",
    )
    parser.add_argument(
        "--index",
        metavar="DIR",
        help="the identifier index: needed with a `swift infer` result file; with a run file, refuse a run made with "
        "another version of it",
    )
    add_clip_benchmark_arguments(parser)


def add_clip_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format clip_benchmark --out RESULT.json`` and the names of its row (``docs/search.md``)."""
    group = parser.add_argument_group("clip_benchmark result (beside CLIP rows in `clip_benchmark build`)")
    group.add_argument("--format", choices=("text", "clip_benchmark"), default="text", help="clip_benchmark: also "
                       "write LAION clip_benchmark's zeroshot_retrieval result JSON to --out")  # fmt: skip
    group.add_argument("--out", metavar="RESULT.json", help="with --format clip_benchmark: the result file")
    group.add_argument("--dataset", help="its dataset name (default: the run file's name), e.g. flickr30k")
    group.add_argument("--model-name", help="its model (default: swift_ssid-<kind>, or a dense run's encoder)")
    group.add_argument("--pretrained", help="its pretrained column (default: the run's setting)")


def _is_infer_results(path: str) -> bool:
    """True when the file's first row looks like a ``swift infer`` result (``response``, no ``identifiers``)."""
    for _, row, error in iter_jsonl(path):
        return error is None and "response" in row and "identifiers" not in row
    return False


def _user_turn(row: dict) -> str | None:
    messages = row.get("messages") if isinstance(row.get("messages"), list) else []
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[0] if users and isinstance(users[0], str) else None


def infer_results_to_run(results: str, queries: str, index_dir: str) -> list[RunRow]:
    """One-identifier run rows from ``swift infer`` results of ``ssid-query`` (see the module docstring).

    Raises:
        ValueError: the counts differ, a row is unreadable, or a row's user turn is not its query's.
    """
    from swift_ssid.core.answers import parse_choice
    from swift_ssid.core.index import IdentifierIndex
    from swift_ssid.core.queries import load_queries

    index = IdentifierIndex.load(index_dir)
    qs = load_queries(queries)
    rows = []
    for lineno, row, error in iter_jsonl(results):
        if error is not None:
            raise ValueError(error)
        rows.append((lineno, row))
    if len(rows) != len(qs):
        raise ValueError(
            f"{results} has {len(rows)} result rows but {queries} has {len(qs)} queries; results are matched by "
            "position, so run `swift infer --val_dataset ssid-query` to the end on the same collection (no sampling)"
        )
    out = []
    for (lineno, row), query in zip(rows, qs, strict=True):
        response = row.get("response")
        if not isinstance(response, str):
            raise ValueError(f"{results}:{lineno}: no 'response' string; is this a `swift infer` result file?")
        user = _user_turn(row)
        expected = _user_turn({"messages": query.messages})
        if user is not None and expected is not None and user.strip() != expected.strip():
            raise ValueError(
                f"{results}:{lineno}: the user turn {user[:60]!r} is not query {query.query_id}'s {expected[:60]!r}; "
                "the results must be in ssid-query order (val_dataset_shuffle false) from the same collection"
            )
        answers = [response] if parse_choice(response)[0] else []
        out.append(row_from_answers(query, answers, index.images_for, setting={"source": "swift infer", "k": 1}))
    return out


def run(args: argparse.Namespace) -> int:
    note = None
    if args.json:
        check_output_file(args.json, "--json")
    if args.format == "clip_benchmark":
        if not args.out:
            raise UserError("--format clip_benchmark needs --out RESULT.json (the file clip_benchmark build reads)")
        check_output_file(args.out, "--out")
    if _is_infer_results(args.run):
        if not (args.queries and args.index):
            raise UserError(
                f"{args.run} is a `swift infer` result file: pass --queries (the ssid-query.jsonl it was made "
                "from: python -m swift_ssid.integration.datasets --out DIR ssid-query) and --index DIR"
            )
        rows = infer_results_to_run(args.run, args.queries, args.index)
        metrics = evaluate_run(rows, ks=[1])
        note = INFER_NOTE
    else:
        rows = read_run(args.run)
        if args.index:
            from swift_ssid.core.index import index_version
            from swift_ssid.core.runs import check_run_version

            check_run_version(rows, index_version(args.index), args.index, args.run)
        metrics = evaluate_run(rows, ks=args.ks)
    print(format_metrics(metrics, args.run, note))
    if args.json:
        out = {"run": args.run, **metrics.to_dict(), **({"note": note} if note else {})}
        write_text_atomic(Path(args.json), json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    if args.format == "clip_benchmark":
        from swift_ssid.reporting.clip_benchmark import write_run_result

        dataset = args.dataset or Path(args.run).stem
        print(write_run_result(args.out, rows, metrics, dataset, args.model_name, args.pretrained))
    return 0
