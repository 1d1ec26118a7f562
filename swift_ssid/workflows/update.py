"""Collections that change: ``swift-ssid add`` and ``swift-ssid remove``, each a new version of an index folder.

* :func:`add_images` gives identifiers to the new images only, of the index's own kind, and resolves collisions
  against the existing identifiers with the index's policy; no existing identifier changes:

  =====================  ==========================================================================================
  kind                   identifiers of the new images
  =====================  ==========================================================================================
  ``ssid``               stage 1 on the new images only: ``swift infer`` with the model and the paper's prompt
                         (``stage1``), or its result file given (``results``), parsed as ``build-index`` parses
  ``numeric``/``string`` the numbering continues (``params.next_number``; a removed image's number is never reused)
  ``atomic``             new tokens, numbered on; ``new_tokens.txt`` grows (the model must add them)
  ``semantic``           from their captions (``params.caption_index``)
  ``caption-derived``    from their first captions
  ``structured``         the nearest existing image's cluster (cosine of the recorded encoder's embeddings), next
                         position in its leaf; a leaf already holding ``c`` images gets a new sibling leaf, so the
                         paths of the existing images stay as they are
  =====================  ==========================================================================================

* :func:`remove_images` writes a version without the images: the trie is built from the index, so from then on
  retrieval can never return them (no retraining). Atomic tokens stay in ``new_tokens.txt`` (the trained model's
  vocabulary keeps them); numbered kinds keep counting from where they were.

Bad input (an image already in the index, an index of an unknown kind, a new image failing ``swift-ssid check``,
removing an image that is not there) raises :class:`~swift_ssid.core.errors.UserError` before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift_ssid.core.errors import UserError
from swift_ssid.core.index import (
    REGENERATE_FILE,
    IdentifierIndex,
    IndexEntry,
    index_counts,
    index_version,
    load_index,
    read_companion,
    read_manifest,
    read_stats,
    version_dir,
    write_index,
)

KINDS_ADDABLE: tuple[str, ...] = ("ssid", "numeric", "string", "atomic", "semantic", "caption-derived", "structured")

Embed = Callable[[Sequence[str]], Any]
"""Image paths -> an ``(n, d)`` array of L2-normalised embeddings (structured)."""


@dataclass
class UpdateResult:
    """What :func:`add_images` / :func:`remove_images` wrote.

    Attributes:
        index_dir: The index folder.
        kind: Its identifier kind.
        from_version: The version it was read at.
        version: The version written.
        images: The images added or removed.
        identifiers: The added images' identifiers (``add``), in the same order.
        total_images: Images in the new version.
    """

    index_dir: str
    kind: str
    from_version: int
    version: int
    images: list[str]
    identifiers: list[str | None] = field(default_factory=list)
    total_images: int = 0


def read_image_list(path: str | os.PathLike) -> list[str]:
    """The images of ``--images FILE``: one path a line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--images {path}: no such file; list the images to remove, one path a line")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    images = [line for line in lines if line and not line.startswith("#")]
    if not images:
        raise UserError(f"--images {path}: lists no image; write one path a line")
    return images


def _kind_of(index_dir: Path) -> tuple[str, dict[str, Any]]:
    """The index's kind and manifest; UserError for a kind add/remove cannot continue."""
    meta = read_manifest(index_dir)
    kind = str(meta.get("kind") or "ssid")
    if kind not in KINDS_ADDABLE:
        raise UserError(
            f"{index_dir}: index of unknown kind {kind!r}; add/remove handle {', '.join(KINDS_ADDABLE)}: rebuild it "
            "with `swift-ssid identifiers KIND` or `swift-ssid build-index`"
        )
    return kind, meta


def _stored(index: IdentifierIndex) -> dict[str, str]:
    """Each image of the index by its stored path and by its absolute path -> the stored path."""
    out = {os.path.normpath(os.path.abspath(e.image)): e.image for e in index.entries}
    out.update({e.image: e.image for e in index.entries})
    return out


def _match(stored: dict[str, str], image: str) -> str | None:
    """The image as the index stores it: the same string, or the same file by absolute path."""
    return stored.get(image) or stored.get(os.path.normpath(os.path.abspath(image)))


def remove_images(index_dir: str | os.PathLike, images: Sequence[str]) -> UpdateResult:
    """Write a new version of ``index_dir`` without ``images`` (paths as stored, or the same files by absolute path).

    Raises:
        UserError: an image that is not in the index (nothing is written), or an index of an unknown kind.
    """
    index_dir = Path(index_dir)
    kind, meta = _kind_of(index_dir)
    snapshot = version_dir(index_dir)  # one version read throughout
    index = load_index(snapshot)
    known = _stored(index)
    stored = []
    for image in images:
        match = _match(known, image)
        if match is None:
            raise UserError(
                f"{image}: not in the index {index_dir} (version {index_version(snapshot)}); list the images as its "
                "index.jsonl stores them, or leave this one out"
            )
        stored.append(match)
    stored = list(dict.fromkeys(stored))
    new = index.without(stored)
    if not new.entries:
        raise UserError(f"removing {len(stored)} image(s) would leave {index_dir} empty; build a new index instead")
    params = dict(meta.get("params") or {})
    if kind in _numbered():
        from swift_ssid.core.kinds import next_number

        params["next_number"] = next_number(index, params)
    regenerate = [row for row in _regenerate_rows(snapshot, meta) if row.get("images", [None])[0] not in stored]
    version = _write(snapshot, index_dir, kind, meta, new, params, regenerate, {"removed": stored})
    return UpdateResult(str(index_dir), kind, index_version(snapshot), version, stored, [], len(new.entries))


def add_images(
    index_dir: str | os.PathLike,
    collection: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    stage1: Callable[[list[Any]], Path] | None = None,
    embed: Embed | None = None,
) -> UpdateResult:
    """Write a new version of ``index_dir`` with the images of ``collection`` added (see the module docstring).

    Args:
        index_dir: The index folder.
        collection: The new images, a collection ``.jsonl`` (or Karpathy ``.json``); checked like ``swift-ssid check``.
        image_root: Folder the collection's image paths are relative to.
        results: ``ssid``: a ``swift infer`` result file for the new images (stage 1 already run).
        stage1: ``ssid``: runs stage 1 on the new items and returns its result file (used without ``results``).
        embed: ``structured``: image paths -> L2-normalised embeddings (default: the encoder the index records).

    Raises:
        UserError: a new image already in the index, a new image that fails the check, an index of an unknown kind,
            or an ``ssid`` index without ``results`` / ``stage1``; nothing is written.
    """
    from swift_ssid.core import kinds
    from swift_ssid.core.checks import check_collection

    index_dir = Path(index_dir)
    kind, meta = _kind_of(index_dir)
    snapshot = version_dir(index_dir)
    index = load_index(snapshot)
    report = check_collection(collection, image_root)
    if report.problems:
        raise UserError(
            f"{report.problems[0].line()} ({len(report.problems)} problem(s) in {collection}: "
            f"`swift-ssid check {collection}` lists them); nothing added"
        )
    items = kinds.indexed_items(report.items)
    known = _stored(index)
    for item in items:
        if _match(known, item.image) is not None:
            raise UserError(
                f"{item.where or item.image}: image {item.image} is already in the index {index_dir}; leave it out "
                "of the collection (or `swift-ssid remove` it first to give it a new identifier)"
            )
    params = dict(meta.get("params") or {})
    texts: dict[str, str] = {}
    if kind == "ssid":
        entries, regenerate_new = _ssid_entries(items, results, stage1)
    else:
        identifiers = _kind_identifiers(kind, items, index, params, embed, snapshot)
        entries = [
            IndexEntry(image=item.image, identifier=ident, status="ok", caption=item.captions[0], raw_identifier=ident)
            for item, ident in zip(items, identifiers, strict=True)
        ]
        regenerate_new = []
        if kind == "atomic":
            name = meta.get("new_tokens_file") or kinds.NEW_TOKENS_FILE
            old = read_companion(snapshot, name).split()
            texts[name] = "".join(t + "\n" for t in [*old, *identifiers])
    try:
        new = index.with_added(entries)
    except ValueError as e:
        raise UserError(f"{collection}: {e}") from e
    regenerate = [*_regenerate_rows(snapshot, meta), *regenerate_new]
    added = [e.image for e in entries]
    version = _write(snapshot, index_dir, kind, meta, new, params, regenerate, {"added": added}, texts)
    given = [new.identifier_for(image) for image in added]
    return UpdateResult(str(index_dir), kind, index_version(snapshot), version, added, given, len(new.entries))


def _numbered() -> tuple[str, ...]:
    from swift_ssid.core.kinds import NUMBERED_KINDS

    return NUMBERED_KINDS


def _kind_identifiers(
    kind: str, items: list[Any], index: IdentifierIndex, params: dict[str, Any], embed: Embed | None, snapshot: Path
) -> list[str]:
    """The new items' identifiers for a kind other than ``ssid``; updates ``params`` (``next_number``)."""
    from swift_ssid.core import kinds

    if kind in kinds.NUMBERED_KINDS:
        start = kinds.next_number(index, params)
        params["next_number"] = start + len(items)
        if kind == "numeric":
            return kinds.numeric_identifiers(len(items), start)
        if kind == "string":
            return kinds.string_identifiers(len(items), start)
        return kinds.atomic_tokens(len(items), params.get("token_width"), start)
    if kind == "semantic":
        return kinds.semantic_identifiers(items, int(params.get("caption_index") or 0))
    if kind == "caption-derived":
        return kinds.caption_derived_identifiers(items)
    if embed is None:
        embed = _recorded_encoder(params, snapshot)
    return structured_paths(index, [item.image for item in items], embed, c=int(params.get("c") or 30))


def structured_paths(index: IdentifierIndex, new_images: Sequence[str], embed: Embed, c: int = 30) -> list[str]:
    """Cluster paths for new images: the nearest existing image's leaf, next position (a full leaf: a new sibling).

    Args:
        index: The structured index (identifiers ``0_3-1_17-2_5``: cluster per level, then the position).
        new_images: The new images.
        embed: Image paths -> L2-normalised embeddings, one row each.
        c: The largest leaf the index was built with.

    Returns:
        One new, unused identifier per new image.
    """
    import numpy as np

    from swift_ssid.core.kinds import structured_identifier

    existing = [e for e in index.entries if e.identifier is not None]
    paths = [[int(part.split("_", 1)[1]) for part in e.identifier.split("-")] for e in existing]
    old = np.asarray(embed([e.image for e in existing]), dtype=np.float32)
    new = np.asarray(embed(list(new_images)), dtype=np.float32)
    leaves: dict[tuple[int, ...], int] = {}  # leaf prefix -> next position
    siblings: dict[tuple[int, ...], int] = {}  # parent prefix -> next leaf value
    sizes: dict[tuple[int, ...], int] = {}
    for path in paths:
        leaf = tuple(path[:-1])
        leaves[leaf] = max(leaves.get(leaf, 0), path[-1] + 1)
        sizes[leaf] = sizes.get(leaf, 0) + 1
        if leaf:
            siblings[leaf[:-1]] = max(siblings.get(leaf[:-1], 0), leaf[-1] + 1)
    out = []
    for row in new:
        nearest = int(np.argmax(old @ row))
        leaf = tuple(paths[nearest][:-1])
        if leaf and sizes.get(leaf, 0) >= c:
            parent = leaf[:-1]
            leaf = (*parent, siblings.get(parent, 0))
            siblings[parent] = leaf[-1] + 1
        position = leaves.get(leaf, 0)
        leaves[leaf] = position + 1
        sizes[leaf] = sizes.get(leaf, 0) + 1
        out.append(structured_identifier([*leaf, position]))
    return out


def _recorded_encoder(params: dict[str, Any], snapshot: Path) -> Embed:
    """The dual encoder the structured index was built with (``params.encoder``), as an ``embed`` function."""
    from swift_ssid.encoders.dual_encoder import DualEncoder, encoder_fingerprint

    path = params.get("encoder")
    if not path or not Path(path).exists():
        raise UserError(
            f"{snapshot}: the structured index records encoder {path!r}, which is not there; the new images must be "
            "embedded with the same encoder: restore it at that path"
        )
    if params.get("encoder_fingerprint") and encoder_fingerprint(path) != params["encoder_fingerprint"]:
        raise UserError(f"encoder {path}: another model than the index was built with (fingerprint differs)")
    encoder = DualEncoder(path)
    cache = params.get("embeddings_cache")
    return lambda images: encoder.embed_images(list(images), cache=Path(cache) if cache else None)


def _ssid_entries(
    items: list[Any], results: str | os.PathLike | None, stage1: Callable[[list[Any]], Path] | None
) -> tuple[list[IndexEntry], list[dict]]:
    """The new images' entries from stage-1 answers (a result file, or ``stage1`` run now)."""
    from swift_ssid.core.index_build import parse_results, regenerate_row

    if results is None:
        if stage1 is None:
            raise UserError(
                "an ssid index: pass --results FILE (swift infer answers for the new images) or --model/--template "
                "to run stage 1 on them"
            )
        results = stage1(items)
    parsed = parse_results(results, check_images=False)
    wanted = {item.image for item in items}
    by_image = {image: pair for image, pair in parsed.chosen.items()}
    missing = [image for image in wanted if image not in by_image and os.path.abspath(image) not in by_image]
    if missing:
        raise UserError(f"{results}: no answer for new image {sorted(missing)[0]}; rerun stage 1 on every new image")
    entries, regenerate = [], []
    for item in items:
        entry, row = by_image.get(item.image) or by_image[os.path.abspath(item.image)]
        entries.append(entry if entry.image == item.image else IndexEntry(**{**entry.to_dict(), "image": item.image}))
        if entry.status == "invalid":
            regenerate.append(regenerate_row(row, item.image))
    return entries, regenerate


def _regenerate_rows(snapshot: Path, meta: dict[str, Any]) -> list[dict]:
    """The version's ``regenerate.jsonl`` rows (``[]`` when it has none)."""
    from swift_ssid.core.jsonl import read_jsonl

    if REGENERATE_FILE not in (meta.get("sha256") or {}):
        return []
    read_companion(snapshot, REGENERATE_FILE)  # verified against the manifest
    return read_jsonl(snapshot / REGENERATE_FILE)


def _write(
    snapshot: Path,
    index_dir: Path,
    kind: str,
    meta: dict[str, Any],
    new: IdentifierIndex,
    params: dict[str, Any],
    regenerate: list[dict],
    change: dict[str, list[str]],
    texts: dict[str, str] | None = None,
) -> int:
    """Write ``new`` as the next version (stats updated, the change recorded); return its number."""
    try:
        stats = dict(read_stats(snapshot))
    except (OSError, ValueError):
        stats = {}
    counts = index_counts(new)
    stats.update(counts)
    if kind != "ssid":
        from swift_ssid.core.kinds import identifier_stats

        stats.update(identifier_stats(new, counts))
        stats["params"] = params
    stats["valid"] = counts["ok"] + counts["repaired"]
    stats["regenerate"] = len(regenerate)
    from_version = index_version(snapshot)
    history = [*stats.get("changes", []), {"from_version": from_version, **{k: len(v) for k, v in change.items()}}]
    stats["changes"] = history
    extra = {key: value for key, value in meta.items() if key in ("kind", "params", "new_tokens_file")}
    if "params" in extra or kind != "ssid":
        extra["params"] = params
    if texts is None and meta.get("new_tokens_file"):
        texts = {meta["new_tokens_file"]: read_companion(snapshot, meta["new_tokens_file"])}
    write_index(index_dir, new, stats, regenerate=regenerate, texts=texts, meta=extra)
    return index_version(index_dir)


def swift_stage1(
    model: str, template: str, work: str | os.PathLike, model_flags: Sequence[str] = (), max_new_tokens: int = 128
) -> Callable[[list[Any]], Path]:
    """Stage 1 for ``add`` on an ``ssid`` index: ``swift infer`` with the paper's prompt on the new images only.

    Args:
        model: The stage-1 model (the one the index was generated with).
        template: Its SSID template (``ssid_qwen2_5_vl``, ...).
        work: Folder for the rows, the result file and the log.
        model_flags: Further flags that load the model (``--model_type``, ``--torch_dtype``).
        max_new_tokens: Generation budget per answer.

    Returns:
        ``stage1(items) -> result file``, for :func:`add_images`.
    """
    from swift_ssid.core.jsonl import write_jsonl_atomic
    from swift_ssid.core.rows import generate_rows
    from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

    def run(items: list[Any]) -> Path:
        work_dir = Path(work)
        rows, results = work_dir / "add_generate_rows.jsonl", work_dir / "add_generate_results.jsonl"
        write_jsonl_atomic(rows, generate_rows(items))
        results.unlink(missing_ok=True)  # swift infer appends
        cmd = [swift_executable(), "infer", "--custom_register_path", str(PLUGIN_FILE), "--model", model]
        cmd += [*model_flags, "--template", template, "--val_dataset", str(rows), "--result_path", str(results)]
        cmd += ["--max_new_tokens", str(max_new_tokens), "--temperature", "0"]
        run_logged(cmd, work_dir / "add_generate.log", _swift_env())
        return results

    return run


# ---------------------------------------------------------------- continued training (swift-ssid update)

DEFAULT_REPLAY_RATIO = 2.0
"""Replayed old pairs per new pair. Measured in ``benchmarks/UPDATE.md`` (issue 18, item 5), on the demo: at the first
training's learning rate ratio 2 ties 1 (0 and 0.5 forget nearly every old image); at a third of that rate ratio 2 is
the best that still learns the new images (old R@1 0.66, new 0.9 of full retraining's), ratio 4 forgets less but
learns the new ones worse. No measured ratio and rate kept forgetting within the issue's 2 points."""


@dataclass
class UpdateRows:
    """The rows of one continued-training run: the new images' pairs and the replayed old ones.

    Attributes:
        new: memorise + retrieve rows of the new images.
        replay: a seeded sample of the old images' memorise + retrieve rows (images still in the index only).
        with_reason: whether the targets carry the reason line.
    """

    new: list[dict]
    replay: list[dict]
    with_reason: bool

    @property
    def rows(self) -> list[dict]:
        """Every training row, new first (``swift sft --dataset_shuffle`` mixes them)."""
        return [*self.new, *self.replay]


def update_rows(
    index_dir: str | os.PathLike,
    new: Sequence[Any],
    old: Sequence[Any],
    replay_ratio: float = DEFAULT_REPLAY_RATIO,
    seed: int = 0,
    with_reason: bool | None = None,
) -> UpdateRows:
    """Training rows for continued training: the new images' pairs plus ``replay_ratio`` x as many old pairs.

    Args:
        index_dir: The index (its current version, after ``add``).
        new: The added images (collection items).
        old: The images trained before (collection items); those no longer in the index are never replayed.
        replay_ratio: Old pairs per new pair (0: no replay); at most every old pair.
        seed: Seed of the replay sample.
        with_reason: Train the reason line (None: when every trained image has a reason in the index).

    Raises:
        UserError: a negative ratio, or a new image that has no identifier in the index (run ``add`` first).
    """
    import random

    from swift_ssid.core.rows import memorize_rows, retrieve_rows

    if replay_ratio < 0:
        raise UserError(f"--replay-ratio {replay_ratio}: give 0 (no replay) or more old pairs per new pair")
    index = load_index(index_dir)
    known = _stored(index)
    missing = [item.image for item in new if _match(known, item.image) is None]
    if missing:
        raise UserError(f"{missing[0]}: not in the index {index_dir}; `swift-ssid add` the new images first")
    old = [item for item in old if _match(known, item.image) is not None]
    if with_reason is None:
        by_image = {e.image: e for e in index.entries}
        with_reason = all((by_image.get(_match(known, it.image)) or IndexEntry("x", None, "invalid")).reason
                          for it in [*new, *old])  # fmt: skip

    def pairs(items: Sequence[Any]) -> list[dict]:
        if not items:
            return []
        return [
            *memorize_rows(index, items, with_reason=with_reason),
            *retrieve_rows(index, items, with_reason=with_reason),
        ]

    new_rows = pairs(new)
    old_rows = pairs(old)
    k = min(len(old_rows), round(replay_ratio * len(new_rows)))
    replay = random.Random(seed).sample(old_rows, k) if k else []
    return UpdateRows(new_rows, replay, with_reason)


def continued_training_command(
    model: str,
    template: str,
    checkpoint: str | os.PathLike,
    dataset: str | os.PathLike,
    output_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    sft_flags: Sequence[str] = (),
) -> list[str]:
    """The ``swift sft`` arguments that continue training from ``checkpoint`` on ``dataset`` (no ``swift sft``).

    ``--resume_from_checkpoint CKPT --resume_only_model true --ignore_data_skip true`` loads the checkpoint's
    weights (LoRA adapters stay trainable; a full checkpoint is the model) and starts a fresh optimizer over the new
    rows. An atomic index adds its (grown) ``new_tokens.txt``.
    """
    from swift_ssid.core.kinds import NEW_TOKENS_FILE, index_new_tokens

    args = ["--model", model, "--template", template, "--resume_from_checkpoint", str(checkpoint)]
    args += ["--resume_only_model", "true", "--ignore_data_skip", "true", "--dataset", str(dataset)]
    args += ["--dataset_shuffle", "true", "--output_dir", str(output_dir), "--add_version", "false", *sft_flags]
    if index_new_tokens(index_dir):
        args += ["--new_special_tokens", str(Path(index_dir) / NEW_TOKENS_FILE)]
    return args


def continue_training(
    *,
    model: str,
    template: str,
    checkpoint: str | os.PathLike,
    index_dir: str | os.PathLike,
    new: Sequence[Any],
    old: Sequence[Any],
    output_dir: str | os.PathLike,
    replay_ratio: float = DEFAULT_REPLAY_RATIO,
    seed: int = 0,
    sft_flags: Sequence[str] = (),
    with_reason: bool | None = None,
) -> dict[str, Any]:
    """Continue training from ``checkpoint`` on the new images' pairs plus a replay of old ones (``swift sft``).

    Returns:
        ``checkpoint`` (the new one), ``new_rows``, ``replay_rows``, ``with_reason``, ``seconds``, ``dataset``.
    """
    import time

    from swift_ssid.core.jsonl import write_jsonl_atomic
    from swift_ssid.integration.checkpoints import last_checkpoint
    from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

    rows = update_rows(index_dir, new, old, replay_ratio, seed, with_reason)
    out = Path(output_dir)
    dataset = out / "update_train.jsonl"
    write_jsonl_atomic(dataset, rows.rows)
    args = continued_training_command(model, template, checkpoint, dataset, out, index_dir, sft_flags)
    cmd = [swift_executable(), "sft", "--custom_register_path", str(PLUGIN_FILE), *args]
    start = time.perf_counter()
    run_logged(cmd, out / "update_sft.log", _swift_env())
    seconds = round(time.perf_counter() - start, 1)
    return {
        "checkpoint": str(last_checkpoint(out)),
        "new_rows": len(rows.new),
        "replay_rows": len(rows.replay),
        "with_reason": rows.with_reason,
        "seconds": seconds,
        "dataset": str(dataset),
    }


def _swift_env() -> dict[str, str]:
    """The environment of a ``swift`` command run here: offline, and no ``SSID_*`` setting of the caller's."""
    from swift_ssid.integration.settings import SSIDSettings

    offline = {"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return {**os.environ, **offline, **SSIDSettings().to_env()}
