"""Image collections: read a Karpathy-split JSON or a collection JSON Lines file into one item list.

Two formats, chosen by the file name:

* ``*.json``: Karpathy's split file (``dataset_flickr30k.json``, ``dataset_coco.json``)::

      {"images": [{"filename": "1000092795.jpg", "filepath": "val2014",   # filepath optional
                   "split": "train",                                     # train | val | test | restval
                   "sentences": [{"raw": "Two young guys ..."}, ...]}, ...]}

  The image path is ``image_root/filepath/filename``; ``image_root`` defaults to the JSON file's folder.
* ``*.jsonl``: one item a line, ``{"image": "img/a.jpg", "captions": ["...", ...], "split": "test"}``.
  Relative image paths resolve against ``image_root`` when given, else against the JSONL file's folder.
  A row may carry ``"text"`` instead of (or beside) ``"image"``: a description standing in for the image,
  or a document. The model then reads the text wherever it would see the image (identifier generation,
  memorisation); a text-only row needs an ``"id"``: ``{"id": "doc-1", "text": "...", "captions": [...],
  "split": "test"}``.

Every item has one key, :attr:`CollectionItem.image`: the absolute image path of a row with an image (an
``id`` beside it is not used), else the row's ``id`` verbatim. Rows, the identifier index, run files and
metrics all name items by this key, so they work alike for images and texts. Text is whitespace-normalised
like captions (one line). Pure module: no torch, no ms-swift.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from swift_ssid.core.errors import MAX_LISTED
from swift_ssid.core.jsonl import iter_jsonl

SPLITS: tuple[str, ...] = ("train", "restval", "val", "test")
OnError = Callable[[str, str | None, str], None]
"""``on_error(where, image_or_None, message)``: called for a bad row instead of raising (lenient reading)."""
TRAIN_SPLITS = frozenset({"train", "restval"})


@dataclass(frozen=True)
class CollectionItem:
    """One item (an image, or a text) of a collection.

    Attributes:
        image: The item's key: the absolute path of its image file, or the ``id`` of a text-only row.
        captions: Its captions (at least one, none blank), whitespace-normalised.
        split: ``train``, ``restval``, ``val`` or ``test`` (``restval`` counts as training data).
        where: Where the item was read from (``file:line`` or ``file images[i]``), for error messages.
        text: The text the model reads in place of the image (a description or a document), or None.
        has_image: False for a text-only row (its key names no file).
    """

    image: str
    captions: tuple[str, ...]
    split: str
    where: str = ""
    text: str | None = None
    has_image: bool = True

    @property
    def id(self) -> str:
        """The item's key (:attr:`image`): its absolute image path, or a text-only row's ``id``."""
        return self.image

    def to_row(self) -> dict:
        """The item as a collection ``.jsonl`` row (absolute image path; ``id`` and ``text`` for text rows)."""
        row: dict = {"image": self.image} if self.has_image else {"id": self.image}
        if self.text is not None:
            row["text"] = self.text
        return {**row, "captions": list(self.captions), "split": self.split}


def load_collection(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[CollectionItem]:
    """Read a collection file into items, in file order, checking every row.

    Args:
        path: A Karpathy-split ``.json`` file or a collection ``.jsonl`` file.
        image_root: Folder the image paths are relative to (see the module docstring for defaults).

    Returns:
        The items in file order.

    Raises:
        FileNotFoundError: When the file or the image root does not exist, or images are missing
            (the message counts them and names the first few rows).
        ValueError: For a malformed row, an unknown split, a missing or blank caption, or an image
            listed twice; the message names the file, the row, the value seen and the fix.

    Example:
        >>> items = load_collection("data/dataset_flickr30k.json", image_root="data/flickr30k-images")  # doctest: +SKIP
    """
    items = read_rows(path, image_root)
    if not items:
        raise ValueError(f"collection file {path} holds no images; add rows or pass another collection file")
    _check_unique(items)
    _check_images_exist(items, Path(path), image_root)
    return items


def read_rows(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, on_error: OnError | None = None
) -> list[CollectionItem]:
    """Read a collection file's rows without checking image files; bad rows raise, or go to ``on_error``.

    Args:
        path: A Karpathy-split ``.json`` file or a collection ``.jsonl`` file.
        image_root: Folder the image paths are relative to.
        on_error: Called as ``on_error(where, image, message)`` for each malformed row (which is then
            left out); None: raise ValueError at the first one. Unreadable files always raise.

    Returns:
        The well-formed rows, in file order (possibly empty; images may repeat or be missing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"collection file {path} does not exist; pass a Karpathy-split "
            "JSON (dataset_flickr30k.json / dataset_coco.json) or a collection .jsonl file"
        )
    if image_root is not None and not Path(image_root).is_dir():
        raise FileNotFoundError(
            f"image root {image_root} is not a directory; pass the folder that "
            "holds the images (the one the collection's paths are relative to)"
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, image_root, on_error)
    if suffix == ".json":
        return _read_karpathy(path, image_root, on_error)
    raise ValueError(
        f"collection file {path}: unknown format {suffix!r}; use a Karpathy-split .json file or a "
        '.jsonl file with one {"image" or "id" + "text", "captions", "split"} object a line'
    )


def _norm_caption(caption: object, where: str, index: int) -> str:
    """Return the caption with whitespace runs (line breaks included) collapsed, or raise for a bad one."""
    if not isinstance(caption, str):
        raise ValueError(
            f"{where}: caption {index} must be a string, got {type(caption).__name__} {caption!r:.80}; fix the row"
        )
    text = " ".join(caption.split())
    if not text:
        raise ValueError(f"{where}: caption {index} is empty ({caption!r}); write a caption or drop it from the row")
    return text


def _check_split(split: object, where: str) -> str:
    """Return a known split name, or raise ValueError naming the value and the accepted ones."""
    if split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _resolve(image: str, base: Path) -> str:
    """Return ``image`` as an absolute, normalised path (relative paths taken from ``base``)."""
    p = Path(os.path.expanduser(image))
    return os.path.normpath(os.path.abspath(p if p.is_absolute() else base / p))


def _read_karpathy(path: Path, image_root: str | os.PathLike | None, on_error: OnError | None) -> list[CollectionItem]:
    """Read Karpathy's split JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e}); a .json collection must be a Karpathy-split file") from e
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path}: expected a Karpathy-split object with an 'images' list, got {keys}; "
            "for one image a line use a .jsonl file instead"
        )
    root = Path(image_root) if image_root is not None else path.parent
    rows = ((f"{path} images[{i}]", row, None) for i, row in enumerate(images))
    return _collect(rows, lambda row, where: _karpathy_item(row, where, root), "filename", root, on_error)


def _collect(
    rows: Iterable[tuple[str, object, str | None]],
    make: Callable[[object, str], CollectionItem],
    image_key: str,
    base: Path,
    on_error: OnError | None,
) -> list[CollectionItem]:
    """Items from ``(where, row, read error)`` triples; a bad row raises, or goes to ``on_error`` when given.

    ``on_error`` receives ``where``, the row's key (``image_key`` resolved against ``base``, else its ``id``;
    None when the row names neither) and the message.
    """
    items = []
    for where, row, error in rows:
        try:
            if error is not None:
                raise ValueError(error)
            items.append(make(row, where))
        except ValueError as e:
            if on_error is None:
                raise
            image = row.get(image_key) if isinstance(row, dict) else None
            key = row.get("id") if isinstance(row, dict) else None
            if isinstance(image, str) and image:
                key = _resolve(image, base)
            on_error(where, key if isinstance(key, str) and key else None, str(e))
    return items


def _karpathy_item(row: object, where: str, root: Path) -> CollectionItem:
    """One Karpathy ``images[i]`` entry as an item, or raise ValueError naming ``where``."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}; fix the file")
    filename = row.get("filename")
    if not isinstance(filename, str) or not filename:
        raise ValueError(f"{where}: 'filename' must be a non-empty string, got {filename!r}; fix the row")
    filepath = row.get("filepath") or ""
    if not isinstance(filepath, str):
        raise ValueError(f"{where}: 'filepath' must be a string, got {filepath!r}; fix the row")
    split = _check_split(row.get("split"), f"{where} ({filename})")
    sentences = row.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise ValueError(
            f"{where} ({filename}): 'sentences' must be a non-empty list of {{\"raw\": ...}}, got "
            f"{sentences!r:.80}; give the image at least one caption or drop it"
        )
    captions = []
    for k, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else sentence
        captions.append(_norm_caption(raw, f"{where} ({filename})", k))
    image = _resolve(str(Path(filepath) / filename), root)
    return CollectionItem(image=image, captions=tuple(captions), split=split, where=where)


def _read_jsonl(path: Path, image_root: str | os.PathLike | None, on_error: OnError | None) -> list[CollectionItem]:
    """Read a collection JSON Lines file."""
    base = Path(image_root) if image_root is not None else path.parent
    rows = ((f"{path}:{lineno}", row, error) for lineno, row, error in iter_jsonl(path))
    return _collect(rows, lambda row, where: _jsonl_item(row, where, base), "image", base, on_error)


def _jsonl_item(row: dict, where: str, base: Path) -> CollectionItem:
    """One collection ``.jsonl`` row as an item, or raise ValueError naming ``where``."""
    image, text, key = row.get("image"), row.get("text"), row.get("id")
    if image is None and text is None:
        raise ValueError(
            f"{where}: the row has neither 'image' nor 'text' (keys: {sorted(row)}); write "
            '{"image": "path/to.jpg", "captions": ["..."], "split": "test"} or '
            '{"id": "doc-1", "text": "...", "captions": ["..."], "split": "test"}'
        )
    if image is not None and (not isinstance(image, str) or not image):
        raise ValueError(
            f"{where}: 'image' must be a non-empty path string, got {image!r}; write "
            '{"image": "path/to.jpg", "captions": ["..."], "split": "test"}'
        )
    if text is not None:
        if not isinstance(text, str) or not text.split():
            raise ValueError(f"{where}: 'text' must be a non-empty string, got {text!r:.80}; write the text or drop it")
        text = " ".join(text.split())
    if image is None and (not isinstance(key, str) or not key.strip()):
        raise ValueError(
            f"{where}: a text row without 'image' needs an 'id' (a non-empty string naming it in the index and "
            f'the runs), got {key!r}; add e.g. "id": "doc-{where.rsplit(":", 1)[-1]}"'
        )
    label = f"{where} ({image if image is not None else key})"
    split = _check_split(row.get("split"), label)
    captions = row.get("captions")
    if isinstance(captions, str) or not isinstance(captions, list) or not captions:
        raise ValueError(
            f"{label}: 'captions' must be a non-empty list of strings, got "
            f"{captions!r:.80}; give the {'image' if image is not None else 'text'} at least one caption"
        )
    normed = tuple(_norm_caption(c, label, k) for k, c in enumerate(captions))
    key = _resolve(image, base) if image is not None else key
    return CollectionItem(image=key, captions=normed, split=split, where=where, text=text, has_image=image is not None)


def _check_unique(items: list[CollectionItem]) -> None:
    """Raise ValueError when two rows name the same image file."""
    seen: dict[str, str] = {}
    for item in items:
        if item.image in seen:
            what = "image" if item.has_image else "id"
            raise ValueError(
                f"{item.where}: {what} {item.image} is already listed at {seen[item.image]}; list each "
                f"{'image' if item.has_image else 'text'} once with all its captions"
            )
        seen[item.image] = item.where


def _check_images_exist(items: list[CollectionItem], path: Path, image_root: str | os.PathLike | None) -> None:
    """Raise FileNotFoundError listing the first rows whose image file is missing."""
    missing = [item for item in items if item.has_image and not os.path.isfile(item.image)]
    if not missing:
        return
    prefix = str(path)

    def row(item: CollectionItem) -> str:
        label = item.where[len(prefix) :].lstrip() if item.where.startswith(prefix) else item.where
        return f"line {label[1:]}" if label.startswith(":") else label

    shown = "; ".join(f"{row(item)}: {item.image}" for item in missing[:MAX_LISTED])
    root = f"image root {image_root}" if image_root is not None else f"the default root {path.parent}"
    raise FileNotFoundError(
        f"{len(missing)} of {len(items)} images of {path} are missing (looked under {root}); first: {shown}. "
        "Pass the image root (--image-root) as the folder the collection's image paths are relative to, or drop "
        "the missing rows"
    )
