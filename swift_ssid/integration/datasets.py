"""The SSID datasets of the four stages registered with ms-swift, built from the settings.

The rows come from the pure builders of :mod:`swift_ssid.core.rows`; this module builds them from
:class:`SSIDSettings` (:func:`build_rows`, :func:`write_dataset_files`), and :func:`dataset_metas` and
:func:`register` are the ms-swift side, called once from :mod:`swift_ssid.integration.register`. Its command
line (:func:`main`, ``python -m swift_ssid.integration.datasets --out DIR [NAME ...]``) stays here: the
layers let integration import nothing from ``swift_ssid.cli``.

Registered names (``swift sft --dataset ssid-memorize ssid-retrieve``, ``swift infer --val_dataset ssid-query``):

=========================  ===================================================================================
``ssid-generate``          stage 1: image + its first caption -> the paper's prompt (no assistant turn)
``ssid-generate-nocaption`` stage 1 without the caption: the model writes its own
``ssid-memorize``          image -> ``identifier:<id>\\nreason:<reason>``  (:data:`MEMORIZE_PROMPT`)
``ssid-retrieve``          caption -> the same target                     (:data:`RETRIEVE_PROMPT`)
``ssid-memorize-noreason`` / ``ssid-retrieve-noreason``: target ``identifier:<id>`` only (reason ablation)
``ssid-query``             test captions with ``query_id``, ``query``, ``gold_images`` (evaluation queries)
=========================  ===================================================================================

Where the rows come from is set by environment variables, read in one place
(:meth:`SSIDSettings.from_env`), so a recipe sets them in its ``ENV:`` block:

* ``SSID_COLLECTION``: a Karpathy-split JSON or a collection ``.jsonl`` (see :mod:`swift_ssid.core.collection`).
* ``SSID_IMAGE_ROOT``: the folder image paths are relative to (optional).
* ``SSID_INDEX``: the identifier index directory (``swift-ssid build-index``); memorise/retrieve need it.
* ``SSID_PROTOCOL``: ``standard`` (default; GRACE and the paper: memorise every image that is retrieved,
  test images included; train retrieval on training captions; query with test captions) or ``zeroshot``
  (test images never appear in training).
* ``SSID_TRAIN_SIZE``: use only the first N training images (``train`` + ``restval``, file order).
* ``SSID_SKIP_INVALID``: ``true`` leaves out the rows ``swift-ssid check`` flags (unreadable or SVG images, missing
  files, empty captions, duplicates, extreme sizes), each logged with its ``file:line`` and fix
  (:meth:`SSIDSettings.load_collection`); by default such a row stops the dataset with that message.

Prompts. The paper does not print its memorise/retrieve instructions; GRACE uses short ones. Ours are
short, differ between the two tasks, and are constants of :mod:`swift_ssid.core.prompt`; retrieval queries must
use :func:`swift_ssid.core.prompt.retrieve_prompt` exactly, since the model learns the identifier after that text.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift_ssid.core.collection import CollectionItem
from swift_ssid.core.jsonl import write_jsonl_atomic
from swift_ssid.core.rows import (
    DATASET_NAMES,
    GENERATE,
    GENERATE_NOCAPTION,
    MEMORIZE,
    MEMORIZE_NOREASON,
    QUERY,
    RETRIEVE,
    RETRIEVE_NOREASON,
    Split,
    as_index,
    generate_rows,
    memorize_rows,
    query_rows,
    retrieve_rows,
    split_collection,
)
from swift_ssid.integration.settings import SSIDSettings

if TYPE_CHECKING:
    from swift_ssid.core.index import IdentifierIndex

logger = logging.getLogger(__name__)

__all__ = [  # the row builders are imported from here by tests and documentation examples; they live in core/rows.py
    "DATASET_NAMES",
    "build_rows",
    "dataset_metas",
    "generate_rows",
    "main",
    "memorize_rows",
    "query_rows",
    "register",
    "retrieve_rows",
    "split_collection",
    "write_dataset_files",
]


# ---------------------------------------------------------------- rows from the settings


def build_rows(name: str, settings: SSIDSettings) -> list[dict]:
    """Build the rows of a registered dataset from settings (what the ms-swift loader calls).

    Args:
        name: One of :data:`DATASET_NAMES`.
        settings: Where to read from.

    Returns:
        The rows.

    Raises:
        ValueError: For an unknown name, missing settings, or a dataset with no rows.
    """
    return _build(name, settings)[0]


def _build(name: str, settings: SSIDSettings) -> tuple[list[dict], Split]:
    """Return the rows of a registered dataset and the image split they were built from."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; the SSID datasets are {', '.join(DATASET_NAMES)}")
    collection = settings.load_collection()
    split = split_collection(collection, settings.protocol, settings.train_size)
    if name in (GENERATE, GENERATE_NOCAPTION):
        rows = generate_rows(split.generate, with_caption=name == GENERATE)
    elif name == QUERY:
        rows = query_rows(collection)
    else:
        reason = name in (MEMORIZE, RETRIEVE)
        if name in (MEMORIZE, MEMORIZE_NOREASON):
            rows = memorize_rows(
                settings.load_index(),
                collection,
                protocol=settings.protocol,
                train_size=settings.train_size,
                with_reason=reason,
            )
        else:
            rows = retrieve_rows(settings.load_index(), collection, train_size=settings.train_size, with_reason=reason)
    if not rows:
        raise ValueError(
            f"{name} has no rows under {SSIDSettings.env_var('protocol')}={settings.protocol} "
            f"{SSIDSettings.env_var('train_size')}={settings.train_size} "
            f"({len(split.train)} training, {len(split.test)} test images in {settings.collection}); "
            f"{SSIDSettings.env_var('train_size')}=0 is the zero-data point, which needs no training: "
            "query the base model instead"
        )
    return rows, split


def write_dataset_files(
    out_dir: str | os.PathLike,
    collection: Sequence[CollectionItem],
    index: IdentifierIndex | str | os.PathLike | None = None,
    *,
    protocol: str = "standard",
    train_size: int | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Write every dataset as ``<out_dir>/<name>.jsonl`` (usable as ``--dataset <file>`` too).

    Args:
        out_dir: Destination folder (created).
        collection: All collection items.
        index: The identifier index (or its directory); without it only the generate and query
            files are written.
        protocol: ``standard`` or ``zeroshot``.
        train_size: Keep only the first N training images.
        names: Only these datasets (default: all that can be built).

    Returns:
        Dataset name -> written file, for the files written (empty datasets are skipped).

    Raises:
        ValueError: For an unknown name, or a name that needs the index when none is given.
    """
    out_dir = Path(out_dir)
    split = split_collection(collection, protocol, train_size)
    built: dict[str, Callable[[], list[dict]]] = {
        GENERATE: lambda: generate_rows(split.generate, with_caption=True),
        GENERATE_NOCAPTION: lambda: generate_rows(split.generate, with_caption=False),
    }
    if split.test:
        built[QUERY] = lambda: query_rows(collection)
    if index is not None:
        index = as_index(index)
        for name, reason in ((MEMORIZE, True), (MEMORIZE_NOREASON, False)):
            built[name] = lambda r=reason: memorize_rows(
                index, collection, protocol=protocol, train_size=train_size, with_reason=r
            )
        for name, reason in ((RETRIEVE, True), (RETRIEVE_NOREASON, False)):
            built[name] = lambda r=reason: retrieve_rows(index, collection, train_size=train_size, with_reason=r)
    wanted = list(built) if names is None else list(names)
    for name in wanted:
        if name not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {name!r}; the SSID datasets are {', '.join(DATASET_NAMES)}")
        if name not in built:
            why = (
                "the collection has no test images"
                if name == QUERY
                else f"it needs the index (set {SSIDSettings.env_var('index_dir')})"
            )
            raise ValueError(f"cannot write {name}: {why}")
    written = {}
    for name in wanted:
        rows = built[name]()
        if rows:
            path = out_dir / f"{name}.jsonl"
            write_jsonl_atomic(path, rows)
            written[name] = path
    return written


# ---------------------------------------------------------------- ms-swift registration

_HELP = {
    GENERATE: "SSID stage 1: image + first caption -> the paper's three-line prompt (swift infer)",
    GENERATE_NOCAPTION: "SSID stage 1 without captions: the model writes the caption too (swift infer)",
    MEMORIZE: "SSID memorise: image -> identifier + reason",
    RETRIEVE: "SSID retrieve: training caption -> identifier + reason",
    MEMORIZE_NOREASON: "SSID memorise, identifier only (reason ablation)",
    RETRIEVE_NOREASON: "SSID retrieve, identifier only (reason ablation)",
    QUERY: "SSID evaluation queries: test captions (+ query_id/query/gold_images with remove_unused_columns false)",
}


@cache
def _loader_class() -> type:
    """Return the ms-swift loader class that builds rows from :class:`SSIDSettings` (imports ms-swift)."""
    from datasets import Dataset as HfDataset
    from swift.dataset import DatasetLoader, RowPreprocessor
    from swift.utils import get_logger

    swift_logger = get_logger()

    class SSIDDatasetLoader(DatasetLoader):
        """Builds an SSID dataset in memory from :class:`SSIDSettings` instead of reading a file or a hub."""

        def load(self, dataset_syntax=None, dataset_meta=None, *, use_hf=None):
            name = dataset_meta.dataset_name
            if dataset_syntax.subsets:
                raise ValueError(
                    f"{name} has no subsets, got {dataset_syntax.subsets}; write --dataset {name} or {name}#N"
                )
            # ms-swift tags rows with `dataset_syntax.dataset`, the hub id (None here): use the name.
            dataset_syntax.dataset = name
            settings = SSIDSettings.from_env()
            rows, split = _build(name, settings)
            swift_logger.info(
                f"{name}: {len(rows)} rows (protocol {settings.protocol}, {len(split.train)} training / "
                f"{len(split.test)} test / {len(split.memorize)} memorised images, "
                f"collection {settings.collection}, image root {settings.image_root or 'the collection folder'}"
                + (", rows `swift-ssid check` flags left out)" if settings.skip_invalid else ")")
            )
            dataset = HfDataset.from_list(rows)
            if self.streaming:
                dataset = dataset.to_iterable_dataset()
            dataset = dataset_meta.preprocess_func(
                dataset, num_proc=self.num_proc, load_from_cache_file=self.load_from_cache_file, strict=self.strict
            )
            if self.remove_unused_columns:
                dataset = RowPreprocessor.remove_useless_columns(dataset)
            return dataset

    return SSIDDatasetLoader


def dataset_metas() -> list[Any]:
    """Return the ``DatasetMeta`` of every SSID dataset (imports ms-swift).

    Returns:
        One meta per name in :data:`DATASET_NAMES`; each has no file or hub id and a loader that builds the
        rows from :class:`SSIDSettings` at load time, so ``NAME#N`` sampling and several ``--dataset``
        values work as for any ms-swift dataset.
    """
    from swift.dataset import DatasetMeta, RowPreprocessor

    loader = _loader_class()
    return [
        DatasetMeta(
            dataset_name=name, loader=loader, preprocess_func=RowPreprocessor(), tags=["ssid"], help=_HELP[name]
        )
        for name in DATASET_NAMES
    ]


def register(meta: Any) -> None:
    """Register one meta with ms-swift; a second registration of a name fails loudly (no ``exist_ok``)."""
    from swift.dataset import register_dataset

    register_dataset(meta)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m swift_ssid.integration.datasets --out DIR [NAME ...]``: write the datasets the settings select.

    The files are what ``--dataset ssid-...`` loads, for inspection, for ``swift-ssid retrieve --queries
    DIR/ssid-query.jsonl`` and for ms-swift commands that take a file.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m swift_ssid.integration.datasets",
        description=main.__doc__.splitlines()[0].replace("``", ""),
    )
    parser.add_argument("--out", required=True, help="folder for <name>.jsonl files")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(DATASET_NAMES)} (default: all)")
    args = parser.parse_args(argv)
    try:
        settings = SSIDSettings.from_env()
        index = settings.load_index() if settings.index_dir is not None else None
        written = write_dataset_files(
            args.out,
            settings.load_collection(),
            index,
            protocol=settings.protocol,
            train_size=settings.train_size,
            names=args.names or None,
        )
    except (OSError, ValueError) as e:
        print(f"swift_ssid.integration.datasets: error: {e}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
