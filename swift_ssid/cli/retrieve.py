"""``swift-ssid retrieve``: trie-constrained top-K retrieval for a queries file, into a resumable run file.

Every run row's ``setting`` holds the reason mode (``train+infer`` / ``train-only`` / ``none``), K, and the
``--setting KEY=VALUE`` labels (plus ``language`` when the queries file declares one); resuming a run file
made with other settings is refused. With ``--adapters``, the training target defaults to the one the
checkpoint's ``args.json`` datasets imply (``ssid-*-noreason``: ``noreason``), and a contradicting
``--target`` / ``SSID_TARGET`` is an error, so ``setting.reason`` says what the model was trained on.

Data parallel, as ``swift infer``: ``NPROC_PER_NODE=N swift-ssid retrieve ...`` relaunches itself under
``torchrun`` (``NNODES``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` as for ms-swift); each rank loads the
model on its own device (``cuda:<local rank>``, or the CPU with the gloo backend), retrieves a contiguous block
of whole batches into ``<out>.part-rank<R>`` (resumable), and rank 0 merges them into ``--out`` in query order:
the same file, row for row and score for score, as one process writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time

from swift_ssid.core.errors import UserError, check_output_file
from swift_ssid.workflows.run import add_retrieval_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retrieval_arguments(parser)
    parser.add_argument("--queries", required=True, metavar="Q.jsonl", help="queries: {query_id?, query, gold_images}")
    parser.add_argument("--k", type=int, default=10, help="beams = identifiers returned per query (default 10)")
    parser.add_argument("--out", required=True, metavar="RUN.jsonl", help="run file (resumed if it exists)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=8, help="queries per engine call")
    parser.add_argument(
        "--setting",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="labels for every run row's setting, e.g. language=zh n_train=1000 protocol=zeroshot "
        "(numbers stay numbers; `swift-ssid table --by KEY` groups by them)",
    )


def check_inputs(args: argparse.Namespace) -> None:
    """Validate every path and number before the model loads (seconds and gigabytes): fail fast, exit 2."""
    from swift_ssid.integration.retrieval import check_model_inputs

    numbers = {"--k": args.k, "--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens}
    if min(numbers.values()) >= 1:
        check_output_file(args.out, "--out")
    check_model_inputs(args.model, args.index, args.adapters, numbers)


def torchrun_command(argv: list[str]) -> list[str] | None:
    """The ``torchrun`` command that reruns ``swift-ssid ARGV`` on ``NPROC_PER_NODE`` processes, or None.

    None when no launch is wanted: ``NPROC_PER_NODE`` and ``NNODES`` unset (or one process on one node), or
    this process is already a torchrun worker. The torchrun flags are ms-swift's (``swift.cli.main``); a free
    ``MASTER_PORT`` is picked on a single node when none is set, so two runs on one machine do not collide.

    Raises:
        UserError: ``NPROC_PER_NODE`` or ``NNODES`` is not a positive integer.
    """
    from swift.cli.main import get_torchrun_args
    from swift.utils import is_dist

    for key in ("NPROC_PER_NODE", "NNODES"):
        value = os.environ.get(key)
        if value is not None and (not value.strip().isdigit() or int(value) < 1):
            raise UserError(f"{key}={value!r} must be a positive integer (processes per node / nodes)")
    nproc, nnodes = int(os.environ.get("NPROC_PER_NODE", "1")), int(os.environ.get("NNODES", "1"))
    if is_dist() or nproc * nnodes == 1:
        return None
    extra = []
    if nnodes == 1 and "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            extra = ["--master_port", str(s.getsockname()[1])]
    return [sys.executable, "-m", "torch.distributed.run", *get_torchrun_args(), *extra, "-m", "swift_ssid.cli", *argv]


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from swift_ssid.core.queries import load_queries, queries_language
    from swift_ssid.core.runs import parse_labels
    from swift_ssid.integration.retrieval import check_template, retrieval_settings

    check_template(args.template)
    check_inputs(args)
    labels = parse_labels(args.setting)
    settings = retrieval_settings(args.index, args.adapters, args.target, args.no_reason)
    queries = load_queries(args.queries)
    language = queries_language(queries, args.queries)
    if language is not None:
        if labels.setdefault("language", language) != language:
            raise UserError(
                f"--setting language={labels['language']} but {args.queries} declares language {language!r}; "
                "drop one of them or fix the file"
            )
    launch = torchrun_command(sys.argv[1:])
    if launch is not None and "retrieve" not in sys.argv[1:]:
        raise UserError("NPROC_PER_NODE needs the command line form `swift-ssid retrieve ...`")
    if launch is not None:
        print(f"run sh: `{' '.join(launch)}`", flush=True)
        return subprocess.run(launch).returncode

    import torch
    from swift.utils import get_dist_setting, init_process_group, is_dist
    from tqdm import tqdm

    from swift_ssid.core.metrics import evaluate_run
    from swift_ssid.core.runs import read_run
    from swift_ssid.integration.retrieval import Retriever, open_engine
    from swift_ssid.reporting.tables import format_metrics

    rank, world_size, barrier = 0, 1, None
    if is_dist():
        import torch.distributed as dist

        init_process_group()  # nccl on GPUs, gloo on the CPU (as swift infer)
        rank, world_size, barrier = get_dist_setting()[0], dist.get_world_size(), dist.barrier
    engine = open_engine(
        args.model, args.template, args.index, args.adapters, args.model_type, args.torch_dtype, args.batch_size
    )
    retriever = Retriever(engine, settings, k=args.k, max_new_tokens=args.max_new_tokens, labels=labels)
    if barrier is not None:
        barrier()  # time retrieval only, from when every rank has its model
    start = time.perf_counter()
    desc = "retrieve" if world_size == 1 else f"retrieve [rank {rank}/{world_size}]"
    n = retriever.run(
        queries,
        args.out,
        batch_size=args.batch_size,
        progress=lambda total: tqdm(total=total, desc=desc, position=rank),
        rank=rank,
        world_size=world_size,
        barrier=barrier,
    )
    seconds = time.perf_counter() - start
    if world_size > 1:
        counts: list[int] = [0] * world_size
        torch.distributed.all_gather_object(counts, n)
        n = sum(counts)
    if rank != 0:
        return 0
    rate = f", {n / seconds:.2f} queries/s" if n and seconds > 0 else ""
    print(f"retrieved {n} queries ({len(queries) - n} already in {args.out}) in {seconds:.1f} s{rate}, "
          f"{world_size} process(es)")  # fmt: skip
    metrics = evaluate_run(read_run(args.out))
    print(format_metrics(metrics, args.out))
    return 0
