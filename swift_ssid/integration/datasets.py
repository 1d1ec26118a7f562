"""Dataset rows for the four stages, and their registration as ms-swift datasets.

Rows are ms-swift's standard format (``{"messages": [...], "images": [path]}``). The builders here are
pure functions (no torch, no ms-swift); :func:`dataset_metas` and :func:`register` are the ms-swift side,
called once from :mod:`swift_ssid.integration.register`.

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

Prompts. The paper does not print its memorise/retrieve instructions; GRACE uses short ones. Ours are
short, differ between the two tasks, and are the constants below; retrieval queries must use
:func:`retrieve_prompt` exactly, since the model learns the identifier after that text.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift_ssid.core.answers import format_target
from swift_ssid.core.collection import TRAIN_SPLITS, CollectionItem
from swift_ssid.core.jsonl import write_jsonl_atomic
from swift_ssid.core.prompt import MEMORIZE_PROMPT, render_prompt, retrieve_prompt
from swift_ssid.integration.settings import SSIDSettings

if TYPE_CHECKING:
    from swift_ssid.core.index import IdentifierIndex, IndexEntry

logger = logging.getLogger(__name__)


MAX_LISTED = 5

GENERATE = "ssid-generate"
GENERATE_NOCAPTION = "ssid-generate-nocaption"
MEMORIZE = "ssid-memorize"
RETRIEVE = "ssid-retrieve"
MEMORIZE_NOREASON = "ssid-memorize-noreason"
RETRIEVE_NOREASON = "ssid-retrieve-noreason"
QUERY = "ssid-query"
DATASET_NAMES: tuple[str, ...] = (
    GENERATE,
    GENERATE_NOCAPTION,
    MEMORIZE,
    RETRIEVE,
    MEMORIZE_NOREASON,
    RETRIEVE_NOREASON,
    QUERY,
)


# ---------------------------------------------------------------- prompts and targets


# ---------------------------------------------------------------- selecting images


@dataclass(frozen=True)
class Split:
    """The images each dataset uses under a protocol.

    Attributes:
        train: Training images (``train`` + ``restval``; the first ``train_size`` in file order).
        test: Test images (queried; memorised under the standard protocol).
        memorize: Images with a memorise row: ``train + test`` (standard) or ``train`` (zeroshot).
    """

    train: tuple[CollectionItem, ...]
    test: tuple[CollectionItem, ...]
    memorize: tuple[CollectionItem, ...]

    @property
    def generate(self) -> tuple[CollectionItem, ...]:
        """Images that need an identifier: every training and test image (test ones are retrieved)."""
        return self.train + self.test


def split_collection(
    collection: Sequence[CollectionItem], protocol: str = "standard", train_size: int | None = None
) -> Split:
    """Select the images of each role under a protocol (deterministic: file order).

    Args:
        collection: The collection items.
        protocol: ``standard`` or ``zeroshot``.
        train_size: Keep only the first N training images; None keeps all.

    Returns:
        The :class:`Split`. ``val`` images are used by neither protocol.
    """
    SSIDSettings(protocol=protocol, train_size=train_size)  # validates both
    train = tuple(item for item in collection if item.split in TRAIN_SPLITS)
    if train_size is not None:
        train = train[:train_size]
    test = tuple(item for item in collection if item.split == "test")
    memorize = train + test if protocol == "standard" else train
    return Split(train=train, test=test, memorize=memorize)


# ---------------------------------------------------------------- row builders


def _as_index(index: IdentifierIndex | str | os.PathLike) -> IdentifierIndex:
    """Return an index object, loading it when given a directory."""
    if isinstance(index, str | os.PathLike):
        from swift_ssid.core.index import IdentifierIndex

        return IdentifierIndex.load(index)
    return index


def _entries_for(index: IdentifierIndex, items: Iterable[CollectionItem], with_reason: bool) -> list[IndexEntry]:
    """Return the index entry of each item, or raise one ValueError listing every image that lacks a target."""
    by_image: dict[str, IndexEntry] = {}
    for entry in index.entries:
        by_image.setdefault(entry.image, entry)
        by_image.setdefault(os.path.normpath(os.path.abspath(entry.image)), entry)
    found, missing = [], []
    for item in items:
        entry = by_image.get(item.image)
        if entry is None:
            missing.append(f"{item.image} (not in the index)")
        elif entry.identifier is None:
            missing.append(f"{item.image} (invalid: {', '.join(entry.problems) or entry.status})")
        elif with_reason and (entry.reason is None or not entry.reason.strip()):
            missing.append(f"{item.image} (no reason)")
        else:
            found.append(entry)
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) that must be memorised have no usable identifier"
            f"{' and reason' if with_reason else ''} in the index ({index!r}); first: "
            f"{'; '.join(missing[:MAX_LISTED])}. Fix: images not in the index need generating (`swift infer` on "
            f"{GENERATE} with the same collection, protocol and train size settings) and a rebuild "
            "(`swift-ssid build-index`); invalid ones are listed in <index>/regenerate.jsonl: run `swift infer "
            "--val_dataset <index>/regenerate.jsonl`, append the results to the results file and rebuild; "
            "or train the -noreason datasets"
        )
    return found


def generate_rows(collection: Iterable[CollectionItem], with_caption: bool = True) -> list[dict]:
    """Stage-1 rows: the paper's prompt for each image, optionally conditioned on its first caption.

    Args:
        collection: The images to generate identifiers for.
        with_caption: Fill the prompt's ``caption:`` line with the image's first caption.

    Returns:
        ``{"messages": [user], "images": [path]}`` rows (no assistant turn), in input order.
    """
    return [
        {
            "messages": [
                {"role": "user", "content": "<image>" + render_prompt(item.captions[0] if with_caption else None)}
            ],
            "images": [item.image],
        }
        for item in collection
    ]


def memorize_rows(
    index: IdentifierIndex | str | os.PathLike,
    collection: Sequence[CollectionItem],
    *,
    protocol: str = "standard",
    train_size: int | None = None,
    with_reason: bool = True,
) -> list[dict]:
    """Memorise rows: image -> its identifier (and reason), one per memorised image.

    Args:
        index: The identifier index (or its directory).
        collection: All collection items (the protocol selects from them).
        protocol: ``standard`` (training + test images) or ``zeroshot`` (training images only).
        train_size: Keep only the first N training images.
        with_reason: False for the no-reason ablation target.

    Returns:
        ``{"messages": [user, assistant], "images": [path]}`` rows in collection order.

    Raises:
        ValueError: When a memorised image has no valid identifier (or no reason, when needed).
    """
    items = split_collection(collection, protocol, train_size).memorize
    entries = _entries_for(_as_index(index), items, with_reason)
    rows = [
        {
            "messages": [
                {"role": "user", "content": MEMORIZE_PROMPT},
                {"role": "assistant", "content": format_target(entry.identifier, entry.reason, with_reason)},
            ],
            "images": [item.image],
        }
        for item, entry in zip(items, entries, strict=True)
    ]
    logger.info("memorise rows: %d (protocol %s)", len(rows), protocol)
    return rows


def retrieve_rows(
    index: IdentifierIndex | str | os.PathLike,
    collection: Sequence[CollectionItem],
    *,
    train_size: int | None = None,
    with_reason: bool = True,
) -> list[dict]:
    """Retrieve rows: each training caption -> its image's identifier (and reason).

    The protocol does not change these rows (retrieval is trained on training captions under both).

    Args:
        index: The identifier index (or its directory).
        collection: All collection items.
        train_size: Keep only the first N training images.
        with_reason: False for the no-reason ablation target.

    Returns:
        ``{"messages": [user, assistant]}`` rows (text only), image by image, caption by caption.
    """
    items = split_collection(collection, "standard", train_size).train
    entries = _entries_for(_as_index(index), items, with_reason)
    rows = []
    for item, entry in zip(items, entries, strict=True):
        target = format_target(entry.identifier, entry.reason, with_reason)
        for caption in item.captions:
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": retrieve_prompt(caption)},
                        {"role": "assistant", "content": target},
                    ]
                }
            )
    logger.info("retrieve rows: %d (%d training images)", len(rows), len(items))
    return rows


def _query_ids(items: Sequence[CollectionItem]) -> list[str]:
    """Return one id stem per image: the file stem (Flickr's ``1000092795``), or the full path if stems repeat."""
    stems = [Path(item.image).stem for item in items]
    return stems if len(set(stems)) == len(stems) else [item.image for item in items]


def query_rows(collection: Sequence[CollectionItem]) -> list[dict]:
    """Evaluation queries: every test caption, with its gold image.

    Args:
        collection: All collection items (their ``test`` images are queried).

    Returns:
        Rows ``{"messages": [user], "query_id": "<stem>#<k>", "query": caption, "gold_images": [path]}``;
        the user turn is :func:`retrieve_prompt` of the caption. ms-swift's loader drops the extra columns
        unless ``remove_unused_columns=False``; ``swift infer`` (transformers backend) cannot run with that
        flag (it passes the columns to ``model.generate``), so its results keep the ssid-query order instead,
        and ``swift-ssid retrieve --queries`` reads these rows from a file (:func:`main` writes it).

    Raises:
        ValueError: When the collection has no test images.
    """
    test = split_collection(collection).test
    if not test:
        raise ValueError(
            "the collection has no 'test' images, so there is nothing to query; mark the images to "
            "retrieve with split 'test'"
        )
    rows = []
    for stem, item in zip(_query_ids(test), test, strict=True):
        for k, caption in enumerate(item.captions):
            rows.append(
                {
                    "messages": [{"role": "user", "content": retrieve_prompt(caption)}],
                    "query_id": f"{stem}#{k}",
                    "query": caption,
                    "gold_images": [item.image],
                }
            )
    logger.info("query rows: %d (%d test images)", len(rows), len(test))
    return rows


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
        index = _as_index(index)
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
                f"collection {settings.collection})"
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
        prog="python -m swift_ssid.integration.datasets", description=main.__doc__.splitlines()[0]
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
