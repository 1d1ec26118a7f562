"""Dataset rows for the four stages, built from a collection and an identifier index (pure: no torch, no ms-swift).

Rows are ms-swift's standard format (``{"messages": [...], "images": [path]}``), one builder per dataset; a text
item of the collection (:attr:`CollectionItem.text`) gives text-only rows, the text standing where the image would;
:mod:`swift_ssid.integration.datasets` registers them with ms-swift under :data:`DATASET_NAMES` and reads the
collection, index and protocol from the settings. The protocol (``standard`` or ``zeroshot``) and the training size
select the images of each role (:func:`split_collection`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swift_ssid.core.answers import format_target
from swift_ssid.core.collection import TRAIN_SPLITS, CollectionItem
from swift_ssid.core.errors import MAX_LISTED
from swift_ssid.core.prompt import (
    MEMORIZE_PROMPT,
    memorize_text_prompt,
    render_prompt,
    render_text_prompt,
    retrieve_prompt,
)

if TYPE_CHECKING:
    from swift_ssid.core.index import IdentifierIndex, IndexEntry

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("standard", "zeroshot")
"""``standard``: memorise every image that is retrieved (the paper, GRACE); ``zeroshot``: test images never trained."""

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
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not a protocol; use one of {', '.join(PROTOCOLS)}")
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 0):
        raise ValueError(f"train_size {train_size!r} must be a whole number >= 0 (or None for all training images)")
    train = tuple(item for item in collection if item.split in TRAIN_SPLITS)
    if train_size is not None:
        train = train[:train_size]
    test = tuple(item for item in collection if item.split == "test")
    memorize = train + test if protocol == "standard" else train
    return Split(train=train, test=test, memorize=memorize)


# ---------------------------------------------------------------- row builders


def as_index(index: IdentifierIndex | str | os.PathLike) -> IdentifierIndex:
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


def generate_prompt(item: CollectionItem, with_caption: bool = True) -> str:
    """The stage-1 user turn of one item: the paper's prompt (``<image>`` first), or our text variant for a text item.

    Args:
        item: The item.
        with_caption: Fill the prompt's ``caption:`` line with the item's first caption.
    """
    caption = item.captions[0] if with_caption else None
    if item.text is not None:
        return render_text_prompt(item.text, caption)
    return "<image>" + render_prompt(caption)


def generate_rows(collection: Iterable[CollectionItem], with_caption: bool = True) -> list[dict]:
    """Stage-1 rows: the paper's prompt for each image, optionally conditioned on its first caption.

    Args:
        collection: The images (and texts) to generate identifiers for.
        with_caption: Fill the prompt's ``caption:`` line with the item's first caption.

    Returns:
        ``{"messages": [user], "images": [path]}`` rows (no assistant turn), in input order; a text item's row
        is ``{"messages": [user]}`` with the text in the prompt (:func:`generate_prompt`), and its results are
        matched back to the item by that prompt (:func:`generate_keys`).
    """
    rows = []
    for item in collection:
        row: dict = {"messages": [{"role": "user", "content": generate_prompt(item, with_caption)}]}
        if item.text is None:
            row["images"] = [item.image]
        rows.append(row)
    return rows


def generate_keys(collection: Iterable[CollectionItem]) -> dict[str, str]:
    """Stage-1 user turn -> item key, for the text items (whose ``swift infer`` results carry no image).

    Both prompt variants (with and without the caption) are mapped, so results of either dataset find their item.

    Raises:
        ValueError: When two text items ask the same prompt (same text and caption), naming both rows.
    """
    keys: dict[str, str] = {}
    where: dict[str, str] = {}
    for item in collection:
        if item.text is None:
            continue
        for prompt in dict.fromkeys((generate_prompt(item, True), generate_prompt(item, False))):
            if prompt in keys and keys[prompt] != item.image:
                raise ValueError(
                    f"{item.where} ({item.image}): its text and first caption are those of {where[prompt]} "
                    f"({keys[prompt]}), so their stage-1 answers cannot be told apart; merge the two rows or make "
                    "their texts differ"
                )
            keys.setdefault(prompt, item.image)
            where.setdefault(prompt, item.where)
    return keys


def result_key(row: dict, keys: dict[str, str]) -> str | None:
    """The item key of a ``swift infer`` result row without an image (its last user turn in ``keys``), or None."""
    messages = row.get("messages")
    if not isinstance(messages, list):
        return None
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return keys.get(users[-1]) if users and isinstance(users[-1], str) else None


def _memorize_row(item: CollectionItem, target: str) -> dict:
    """One memorise row: the image (or the item's text) -> the target."""
    if item.text is not None:
        return {
            "messages": [
                {"role": "user", "content": memorize_text_prompt(item.text)},
                {"role": "assistant", "content": target},
            ]
        }
    return {
        "messages": [{"role": "user", "content": MEMORIZE_PROMPT}, {"role": "assistant", "content": target}],
        "images": [item.image],
    }


def memorize_rows(
    index: IdentifierIndex | str | os.PathLike,
    collection: Sequence[CollectionItem],
    *,
    protocol: str = "standard",
    train_size: int | None = None,
    with_reason: bool = True,
) -> list[dict]:
    """Memorise rows: image (or a text item's text) -> its identifier (and reason), one per memorised item.

    Args:
        index: The identifier index (or its directory).
        collection: All collection items (the protocol selects from them).
        protocol: ``standard`` (training + test images) or ``zeroshot`` (training images only).
        train_size: Keep only the first N training images.
        with_reason: False for the no-reason ablation target.

    Returns:
        ``{"messages": [user, assistant], "images": [path]}`` rows in collection order; a text item's row has no
        ``images`` and its user turn is :func:`~swift_ssid.core.prompt.memorize_text_prompt` of its text.

    Raises:
        ValueError: When a memorised image has no valid identifier (or no reason, when needed).
    """
    items = split_collection(collection, protocol, train_size).memorize
    entries = _entries_for(as_index(index), items, with_reason)
    rows = [
        _memorize_row(item, format_target(entry.identifier, entry.reason, with_reason))
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
    entries = _entries_for(as_index(index), items, with_reason)
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
    """Return one id stem per item: the image file stem (Flickr's ``1000092795``) or a text item's id, or the full
    key if they repeat."""
    stems = [Path(item.image).stem if item.has_image else item.image for item in items]
    return stems if len(set(stems)) == len(stems) else [item.image for item in items]


def caption_query_rows(items: Sequence[CollectionItem]) -> list[dict]:
    """Query rows for every caption of ``items``, each with its image as the gold one.

    Returns:
        Rows ``{"messages": [user], "query_id": "<stem>#<k>", "query": caption, "gold_images": [path]}`` (the
        ``ssid-query`` format); the user turn is :func:`retrieve_prompt` of the caption, exactly as
        ``ssid-retrieve`` trains on it.
    """
    return [
        {
            "messages": [{"role": "user", "content": retrieve_prompt(caption)}],
            "query_id": f"{stem}#{k}",
            "query": caption,
            "gold_images": [item.image],
        }
        for stem, item in zip(_query_ids(items), items, strict=True)
        for k, caption in enumerate(item.captions)
    ]


def query_rows(collection: Sequence[CollectionItem]) -> list[dict]:
    """Evaluation queries: every test caption, with its gold image.

    Args:
        collection: All collection items (their ``test`` images are queried).

    Returns:
        Rows ``{"messages": [user], "query_id": "<stem>#<k>", "query": caption, "gold_images": [path]}``;
        the user turn is :func:`retrieve_prompt` of the caption. ms-swift's loader drops the extra columns
        unless ``remove_unused_columns=False``; ``swift infer`` (transformers backend) cannot run with that
        flag (it passes the columns to ``model.generate``), so its results keep the ssid-query order instead,
        and ``swift-ssid retrieve --queries`` reads these rows from a file
        (``python -m swift_ssid.integration.datasets`` writes it).

    Raises:
        ValueError: When the collection has no test images.
    """
    test = split_collection(collection).test
    if not test:
        raise ValueError(
            "the collection has no 'test' images, so there is nothing to query; mark the images to "
            "retrieve with split 'test'"
        )
    rows = caption_query_rows(test)
    logger.info("query rows: %d (%d test images)", len(rows), len(test))
    return rows
