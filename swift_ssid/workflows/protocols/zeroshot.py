"""The zero-shot curve (Fig. 3): train on the first N training images, test images never memorised."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from swift_ssid.workflows.protocols.runner import (
    ProtocolResult,
    RetrieveOptions,
    Training,
    check_queries,
    retrieve,
    train_once,
    write_tables,
)


def train_zeroshot(n: int, training: Training, opts: RetrieveOptions, output_dir: Path, log: Path) -> Path:
    """``swift sft RECIPE`` on the first N training images under ``SSID_PROTOCOL=zeroshot``; skipped when done before.

    Returns:
        The checkpoint it wrote (recorded in ``<output_dir>/ssid_protocol.json``).
    """
    settings = training.settings(opts.index, protocol="zeroshot", train_size=n)
    record = {"protocol": "zeroshot", "n_train": n}
    return train_once(training.recipe, opts, settings, output_dir, log, record, training.sft_args)


def run_zeroshot(
    opts: RetrieveOptions,
    queries: str | os.PathLike,
    out_dir: str | os.PathLike,
    ns: Sequence[int],
    recipe: str | os.PathLike,
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    sft_args: Sequence[str] = (),
) -> ProtocolResult:
    """The zero-shot curve (Fig. 3): for each N, train on the first N training images, then retrieve.

    N = 0 is the base model (no training). Training uses ``SSID_PROTOCOL=zeroshot``, so no test image's
    identifier is ever a training target; the index still holds the test images (stage 1 covered them).

    Args:
        opts: the shared retrieve options (``--model`` etc. also go to ``swift sft``).
        queries: the queries file (test captions).
        out_dir: where checkpoints (``sft_n<N>/``), runs, logs, tables and ``zeroshot.png`` go.
        ns: training-set sizes N (training images; whole numbers >= 0, no repeats).
        recipe: the ``swift sft`` recipe (``recipes/train_qwen2_5_vl_zeroshot.yaml``).
        collection: ``SSID_COLLECTION`` for training.
        image_root: ``SSID_IMAGE_ROOT`` (None: the collection's folder).
        sft_args: extra ``swift sft`` flags (after the recipe's).

    Returns:
        The runs and the table by ``n_train`` (ascending N).
    """
    out_dir = Path(out_dir)
    if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in ns) or len(set(ns)) != len(ns):
        raise ValueError(f"--ns {list(ns)}: give distinct whole numbers >= 0, e.g. --ns 0 1000 3000 5000")
    if not Path(recipe).is_file():
        raise FileNotFoundError(f"recipe {recipe} not found; run from the repository root or pass --recipe")
    check_queries(opts, queries)
    training = Training(recipe, collection, image_root, sft_args)
    runs: dict[str, Path] = {}
    for n in sorted(ns):
        checkpoint = None
        if n > 0:
            sft_dir = out_dir / f"sft_n{n}"
            checkpoint = train_zeroshot(n, training, opts, sft_dir, out_dir / "logs" / f"sft_n{n}.log")
        labels = {"protocol": "zeroshot", "n_train": n}
        runs[str(n)] = retrieve(
            opts, queries, out_dir / f"run_n{n}.jsonl", labels, out_dir / "logs" / f"run_n{n}.log", checkpoint
        )
    plot = out_dir / "zeroshot.png"
    title = "Zero-shot retrieval: R@K vs training images N (Fig. 3)"
    table, markdown = write_tables(list(runs.values()), "n_train", out_dir, title, plot=plot)
    files = {"table.md": out_dir / "table.md", "table.csv": out_dir / "table.csv", "zeroshot.png": plot}
    return ProtocolResult(runs, table, markdown, files)
