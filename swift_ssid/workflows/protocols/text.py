"""The text-side protocol on real captions: identifier kinds, SSID and lexical/dense references, one resumable run.

The collection is built from a captions file with five captions per image, in image order (Flickr30K's Karpathy
test split by default). Of the first ``images`` images, a seeded ``test_share`` become test images, the rest
training images. Each image is a text item: caption 1 is its *description* (the collection row's ``text``),
captions 2-5 its captions. Every row of the table is trained and queried alike:

* memorise: description -> identifier, for every image (repeated ``memorise_repeat`` times, ms-swift's
  ``dataset#N``, so the test images are not a small minority of the rows);
* retrieve: captions 2-5 of the training images -> identifier;
* pseudo-queries (on by default, as DSI-QG and GRACE's semantic kind do): the description *as a query* (the
  retrieve prompt) -> identifier, for every image, so each test identifier is also an answer to a query;
* held-out queries: captions 2-5 of the test images (never trained on).

Identifiers are built from a *description collection* (the same ids, ``captions = [description]``), so the
kinds that read a caption (semantic, caption-derived) and stage 1's caption variant read the description and
never a held-out query. Rows (:data:`ROWS`): the untrained LM over the semantic index (zero-shot, constrained),
GRACE's kinds, ``ssid`` (identifiers the model writes from the description with the paper's prompt, text
variant, the description given as its caption; unusable answers asked again once with sampling; the labelled
caption-derived fallback below ``min_usable``), BM25 (bm25s) and dense (all-MiniLM-L6-v2) over the
descriptions, and one rank fusion (ranx RRF, ``fuse``).

Per row the table gives R@1/5/10 with a 95% bootstrap interval over the held-out queries, the chance level,
the share of held-out queries whose first answer is a training image (the bias of answering with trained
identifiers; ``1 - test_share`` would be unbiased), the identifiers' mean tokens, training steps and times;
paired bootstrap intervals of R@K differences say whether the semantic kinds beat numeric and string (Table I).

Everything lands under ``out``: ``collection.jsonl``, ``descriptions.jsonl``, ``queries.jsonl``,
``index_<kind>/``, ``sft_<row>/``, ``run_<row>.jsonl``, ``row_<row>.json`` (timings), ``logs/``, ``table.md``,
``table.csv``, ``tables.md`` (the paper's layout), ``results.json`` and ``text_protocol.png``. A re-run skips
finished indexes, trainings and runs and resumes an unfinished run file; a killed training restarts.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from swift_ssid.core.jsonl import read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from swift_ssid.core.metrics import DEFAULT_KS, chance_hit_rate, evaluate_run
from swift_ssid.core.runs import RunRow, read_run, write_run
from swift_ssid.core.significance import (
    bootstrap_interval,
    hits_at,
    paired_difference,
    training_answer_share,
    usable_upper_bound,
)
from swift_ssid.workflows.protocols.runner import NO_ENV_TARGET, SFT_MARKER, RetrieveOptions, retrieve
from swift_ssid.workflows.protocols.text_report import RowResult, plot, to_csv, to_markdown

logger = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[3]
DEFAULT_CAPTIONS = CHECKOUT.parent / "shared" / "data" / "flickr30k_karpathy_test_captions.txt"
"""``../shared/data/flickr30k_karpathy_test_captions.txt`` beside the checkout: 5,000 captions, 1,000 images x 5."""
CAPTIONS_PER_IMAGE = 5
KINDS: tuple[str, ...] = ("numeric", "string", "semantic", "caption-derived", "atomic")
"""GRACE's kinds this protocol trains (structured needs image embeddings; there are no images here)."""
ROWS: tuple[str, ...] = ("untrained", *KINDS, "ssid", "bm25", "dense", "fusion")
GENERATIVE: frozenset[str] = frozenset({"untrained", *KINDS, "ssid"})
DIFFERENCES: tuple[tuple[str, str], ...] = (
    ("semantic", "numeric"),
    ("semantic", "string"),
    ("caption-derived", "numeric"),
    ("ssid", "numeric"),
    ("ssid", "string"),
    ("ssid", "semantic"),
)
"""Pairs whose R@K difference gets a paired bootstrap interval (Table I's claim: semantic beats numeric/string)."""
PROTOCOL = "text"
FALLBACK_LABEL = "ssid (fallback: caption-derived)"


# ---------------------------------------------------------------- pure parts: data and split


def read_caption_groups(path: str | os.PathLike, images: int | None = None) -> list[tuple[str, ...]]:
    """The captions file as one 5-tuple per image (file order), the first ``images`` of them.

    Raises:
        ValueError: the file's caption count is no multiple of five, a caption is blank, or it has fewer images.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"captions file {path} not found; pass --captions FILE (5 captions per image, one a line, image order)"
        )
    lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = next((i for i, line in enumerate(lines) if not line), None)
    if blank is not None:
        raise ValueError(f"{path}:{blank + 1}: blank caption; every line must hold one caption")
    if len(lines) % CAPTIONS_PER_IMAGE:
        raise ValueError(
            f"{path}: {len(lines)} captions is no multiple of {CAPTIONS_PER_IMAGE}; the file must hold "
            f"{CAPTIONS_PER_IMAGE} captions per image, in image order"
        )
    groups = [tuple(lines[i : i + CAPTIONS_PER_IMAGE]) for i in range(0, len(lines), CAPTIONS_PER_IMAGE)]
    if images is not None:
        if images < 2 or images > len(groups):
            raise ValueError(f"--images {images}: give 2 .. {len(groups)} (the images in {path})")
        groups = groups[:images]
    return groups


def split_images(n: int, test_share: float, seed: int) -> list[str]:
    """``train`` / ``test`` for each of ``n`` images: ``round(n * test_share)`` test images drawn with ``seed``.

    Example:
        >>> split_images(5, 0.4, seed=0).count("test")
        2
    """
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"--test-share {test_share}: give a share between 0 and 1, e.g. 0.2")
    n_test = min(max(round(n * test_share), 1), n - 1)
    test = set(np.random.default_rng(seed).permutation(n)[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(n)]


def image_id(i: int) -> str:
    """The item id of the i-th image of the captions file (0-based)."""
    return f"img-{i:04d}"


def collection_rows(groups: Sequence[Sequence[str]], splits: Sequence[str]) -> list[dict]:
    """Text collection rows: ``{"id", "text": caption 1, "captions": captions 2-5, "split"}``."""
    return [
        {"id": image_id(i), "text": caps[0], "captions": list(caps[1:]), "split": split}
        for i, (caps, split) in enumerate(zip(groups, splits, strict=True))
    ]


def description_rows(rows: Sequence[dict]) -> list[dict]:
    """The same items with ``captions = [description]``: what identifiers are built from (no held-out query)."""
    return [{**row, "captions": [row["text"]]} for row in rows]


# ---------------------------------------------------------------- settings


@dataclass
class TextProtocolOptions:
    """What ``swift-ssid protocol text`` runs (see the module docstring).

    Attributes:
        out: where everything goes (resumable).
        captions: the captions file (5 per image, image order).
        images: the first N images of the file.
        test_share: share of test images (seeded).
        seed: split, training and bootstrap seed.
        model / model_type / template / torch_dtype: the language model and its ms-swift settings.
        rows: which of :data:`ROWS` to run, in that order.
        tuner: ``lora`` or ``full``.
        max_steps: optimiser steps per trained row.
        learning_rate / batch_size / max_length / lora_rank: training settings.
        memorise_repeat: memorise rows are repeated this many times.
        pseudo_queries: also train description-as-query -> identifier for every image.
        sft_args: extra ``swift sft`` flags.
        k: beams = identifiers per query.
        retrieve_batch_size: queries per engine call.
        max_new_tokens: generation budget of retrieval.
        generate_max_new_tokens: stage-1 budget (ssid).
        min_usable: ssid's usable share below which the labelled caption-derived fallback is used.
        stage1_probe: ssid: run stage 1 on the first N descriptions first; when even the upper 95% bound of their
            usable share (Clopper-Pearson, after asking again) is below ``min_usable``, use the fallback without
            running the rest (default 20; 0: no probe).
        fuse: the two (or more) rows fused by ranx RRF into the ``fusion`` row.
        bootstrap: resamples of the bootstrap intervals.
        model_label: the model named in the tables.
    """

    out: Path
    model: str
    captions: Path = DEFAULT_CAPTIONS
    images: int = 200
    test_share: float = 0.2
    seed: int = 0
    model_type: str | None = "llama"
    template: str = "ssid_chatml"
    torch_dtype: str | None = "float32"
    rows: tuple[str, ...] = ROWS
    tuner: str = "lora"
    max_steps: int = 300
    learning_rate: float = 5e-4
    batch_size: int = 8
    max_length: int = 256
    lora_rank: int = 16
    memorise_repeat: int = 4
    pseudo_queries: bool = True
    sft_args: tuple[str, ...] = ()
    k: int = 10
    retrieve_batch_size: int = 8
    max_new_tokens: int = 48
    generate_max_new_tokens: int = 64
    min_usable: float = 0.8
    stage1_probe: int = 20
    fuse: tuple[str, ...] = ("semantic", "dense")
    bootstrap: int = 1000
    model_label: str = "this model"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out, self.captions = Path(self.out), Path(self.captions)
        self.rows = tuple(r for r in ROWS if r in self.rows)  # table order
        if not self.rows:
            raise ValueError(f"--rows: give some of {', '.join(ROWS)}")
        if self.tuner not in ("lora", "full"):
            raise ValueError(f"--tuner {self.tuner!r}: use lora or full")
        if self.max_steps < 1 or self.memorise_repeat < 1 or self.k < 1:
            raise ValueError("--max-steps, --memorise-repeat and --k must be at least 1")
        if "fusion" in self.rows and (len(self.fuse) < 2 or not set(self.fuse) <= set(ROWS) - {"fusion"}):
            raise ValueError(f"--fuse {list(self.fuse)}: give two rows or more of {', '.join(ROWS[:-1])}")

    def training(self) -> dict[str, Any]:
        """The settings that make a training what it is (a change retrains)."""
        return {
            "tuner": self.tuner,
            "max_steps": self.max_steps,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "lora_rank": self.lora_rank if self.tuner == "lora" else None,
            "memorise_repeat": self.memorise_repeat,
            "pseudo_queries": self.pseudo_queries,
            "seed": self.seed,
            "sft_args": list(self.sft_args),
        }

    def retrieve_options(self, index: Path) -> RetrieveOptions:
        return RetrieveOptions(
            model=self.model,
            template=self.template,
            index=index,
            model_type=self.model_type,
            torch_dtype=self.torch_dtype,
            k=self.k,
            batch_size=self.retrieve_batch_size,
            max_new_tokens=self.max_new_tokens,
        )


# ---------------------------------------------------------------- the run


class TextProtocol:
    """Runs :class:`TextProtocolOptions` row by row; every step is skipped when its output is there."""

    def __init__(self, options: TextProtocolOptions):
        self.o = options
        self.out = options.out
        self.logs = self.out / "logs"
        self.collection = self.out / "collection.jsonl"
        self.descriptions = self.out / "descriptions.jsonl"
        self.queries = self.out / "queries.jsonl"
        self._tokens: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ data
    def prepare(self) -> None:
        """Write the collection, the description collection and the held-out queries (checked against a re-run)."""
        from swift_ssid.core.collection import load_collection
        from swift_ssid.core.rows import query_rows

        o = self.o
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"captions": str(o.captions), "images": o.images, "test_share": o.test_share, "seed": o.seed}
        marker = self.out / "data.json"
        before = read_json(marker)
        if before is not None and before != data:
            raise ValueError(
                f"{self.out} holds a protocol run on other data ({before}); pass another --out or the same "
                "--captions/--images/--test-share/--seed"
            )
        rows = collection_rows(read_caption_groups(o.captions, o.images), split_images(o.images, o.test_share, o.seed))
        write_jsonl_atomic(self.collection, rows)
        write_jsonl_atomic(self.descriptions, description_rows(rows))
        items = load_collection(self.collection)
        write_jsonl_atomic(self.queries, query_rows(items))
        write_json_atomic(marker, data)
        self.train_images = {it.image for it in items if it.split == "train"}
        self.n_images = len(items)
        logger.info(
            "text protocol: %d images (%d train / %d test), %d held-out queries -> %s",
            len(items),
            len(self.train_images),
            len(items) - len(self.train_images),
            sum(1 for _ in open(self.queries, encoding="utf-8")),
            self.out,
        )

    # ------------------------------------------------------------ identifiers
    def kind_index(self, kind: str) -> Path:
        from swift_ssid.workflows.kinds import KindOptions
        from swift_ssid.workflows.protocols.identifiers import build_kind_index

        return build_kind_index(kind, self.descriptions, None, self.out / f"index_{kind}", KindOptions())

    def ssid_index(self) -> tuple[Path, dict[str, Any]]:
        """Stage 1 by the model (paper's prompt, text variant, description as caption), asked again once; fallback.

        Returns:
            The index and ``{"usable_share", "asked_again", "source"}``.
        """
        from swift_ssid.core.collection import load_collection

        work = self.out / "ssid_stage1"
        info_file = work / "stage1.json"
        info = read_json(info_file)
        if isinstance(info, dict) and info.get("source") == "model":
            index = work / "index_model"  # where stage 1 wrote it (the recorded path may name a moved --out)
            if (index / "index.jsonl").is_file():
                return index, {**info, "index": str(index)}
        elif isinstance(info, dict) and info.get("source"):
            return self.kind_index("caption-derived"), {**info, "index": str(self.kind_index("caption-derived"))}
        items = list(load_collection(self.descriptions))
        start = time.perf_counter()
        probe = None
        if 0 < self.o.stage1_probe < len(items):
            probe = self._stage1(items[: self.o.stage1_probe], work / "probe")
            probe["upper_95"] = round(usable_upper_bound(probe["usable"], probe["images"]), 4)
        if probe is not None and probe["upper_95"] < self.o.min_usable:
            info = {"probe": probe, "usable_share": probe["usable_share"]}
            info["decided_on"] = f"a probe of {probe['images']}"
        else:
            info = self._stage1(items, work)
            info["probe"] = probe
        info["stage1_s"] = round(time.perf_counter() - start, 1)
        if "index" in info and info["usable_share"] >= self.o.min_usable:
            info.update(source="model")
        else:
            logger.warning(
                "ssid: only %.0f%% of the model's identifiers are usable (< %.0f%%; %s): the row uses the labelled "
                "caption-derived fallback, NOT model-written identifiers",
                100 * info["usable_share"],
                100 * self.o.min_usable,
                info.get("decided_on", "all descriptions"),
            )
            info.update(source="caption-derived fallback", index=str(self.kind_index("caption-derived")))
        write_json_atomic(info_file, info)
        return Path(info["index"]), info

    def _stage1(self, items: Sequence[Any], work: Path) -> dict[str, Any]:
        """Stage 1 (swift infer, greedy) on ``items``, unusable answers asked once more at temperature 0.7."""
        from swift_ssid.core.index import read_stats
        from swift_ssid.core.rows import generate_rows

        work.mkdir(parents=True, exist_ok=True)
        rows = work / "rows.jsonl"
        results = work / "results.jsonl"
        write_jsonl_atomic(rows, generate_rows(items, with_caption=True))
        if not results.is_file():
            partial = work / "results.partial.jsonl"
            partial.unlink(missing_ok=True)
            self._infer(rows, partial, f"ssid_generate_{work.name}.log", temperature=0.0)
            partial.replace(results)
        model_index = work / "index_model"
        self._build_index(results, model_index, f"ssid_build_index_{work.name}.log")
        stats = read_stats(model_index)
        first_share = stats["valid"] / max(stats["images"], 1)
        regenerate = model_index / "regenerate.jsonl"
        asked = 0
        if regenerate.is_file() and regenerate.stat().st_size:
            asked = sum(1 for line in open(regenerate, encoding="utf-8") if line.strip())
            again = work / "results_again.jsonl"
            again.unlink(missing_ok=True)
            self._infer(regenerate, again, f"ssid_ask_again_{work.name}.log", temperature=0.7)
            with open(results, "a", encoding="utf-8") as f:  # the first valid answer of an item wins on rebuild
                f.write(again.read_text(encoding="utf-8"))
            self._build_index(results, model_index, f"ssid_build_index_again_{work.name}.log")
            stats = read_stats(model_index)
        images = max(int(stats["images"]), 1)
        return {
            "images": images,
            "usable": int(stats["valid"]),
            "usable_share_first": round(first_share, 4),
            "asked_again": asked,
            "usable_share": round(stats["valid"] / images, 4),
            "index": str(model_index),
        }

    def _infer(self, rows: Path, result: Path, log: str, temperature: float) -> None:
        from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

        cmd = [swift_executable(), "infer", "--custom_register_path", str(PLUGIN_FILE), *self._model_flags()]
        cmd += ["--val_dataset", str(rows), "--result_path", str(result), "--temperature", str(temperature)]
        cmd += ["--max_new_tokens", str(self.o.generate_max_new_tokens), "--max_batch_size", "8"]
        cmd += ["--seed", str(self.o.seed)]
        run_logged(cmd, self.logs / log, _env())

    def _build_index(self, results: Path, out: Path, log: str) -> None:
        from swift_ssid.workflows.pipeline import run_logged

        cmd = [sys.executable, "-m", "swift_ssid.cli", "build-index", str(results), "--out", str(out)]
        cmd += ["--min-usable", "0", "--collection", str(self.descriptions)]
        shutil.rmtree(out, ignore_errors=True)
        run_logged(cmd, self.logs / log, _env())

    def _model_flags(self) -> list[str]:
        flags = ["--model", self.o.model, "--template", self.o.template]
        if self.o.model_type:
            flags += ["--model_type", self.o.model_type]
        if self.o.torch_dtype:
            flags += ["--torch_dtype", self.o.torch_dtype]
        return flags

    # ------------------------------------------------------------ training
    def pseudo_query_file(self, index: Path, with_reason: bool) -> Path:
        """Rows ``retrieve_prompt(description) -> identifier`` for every image (DSI-QG's pseudo-queries)."""
        from swift_ssid.core.answers import format_target
        from swift_ssid.core.collection import load_collection
        from swift_ssid.core.index import IdentifierIndex
        from swift_ssid.core.prompt import retrieve_prompt

        ix = IdentifierIndex.load(index)
        by_image = {e.image: e for e in ix.entries}
        rows = []
        for item in load_collection(self.collection):
            entry = by_image[item.image]
            target = format_target(entry.identifier, entry.reason, with_reason)
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": retrieve_prompt(item.text or item.captions[0])},
                        {"role": "assistant", "content": target},
                    ]
                }
            )
        path = index / "pseudo_queries.jsonl"
        write_jsonl_atomic(path, rows)
        return path

    def train(self, row: str, index: Path, target: str) -> tuple[Path, dict[str, Any]]:
        """``swift sft`` of one row (memorise x repeat + retrieve [+ pseudo-queries]); skipped when done before.

        Returns:
            The checkpoint and its record (``steps``, ``seconds``).
        """
        from swift_ssid.core.kinds import new_token_sft_flags
        from swift_ssid.integration.checkpoints import last_checkpoint
        from swift_ssid.integration.settings import SSIDSettings
        from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

        o = self.o
        output_dir = self.out / f"sft_{row}"
        record = {"protocol": PROTOCOL, "row": row, "index": str(index), "target": target, **o.training()}
        marker = output_dir / SFT_MARKER
        done = read_json(marker, {})
        if isinstance(done, dict) and all(_same(k, done.get(k), v) for k, v in record.items()):
            checkpoint = output_dir / Path(done.get("checkpoint", "")).name  # found again in a moved --out
            if done.get("checkpoint") and checkpoint.is_dir():
                logger.info("%s: trained before (%s), skipping swift sft", row, checkpoint)
                return checkpoint, {**done, "checkpoint": str(checkpoint)}
        suffix = "" if target == "reason" else "-noreason"
        n_memorise = self.n_images * o.memorise_repeat
        datasets = [f"ssid-memorize{suffix}#{n_memorise}", f"ssid-retrieve{suffix}"]
        if o.pseudo_queries:
            datasets.append(str(self.pseudo_query_file(index, target == "reason")))
        cmd = [swift_executable(), "sft", "--custom_register_path", str(PLUGIN_FILE), *self._model_flags()]
        cmd += ["--dataset", *datasets, "--dataset_shuffle", "true", "--tuner_type", o.tuner]
        if o.tuner == "lora":
            cmd += ["--lora_rank", str(o.lora_rank), "--lora_alpha", str(2 * o.lora_rank)]
        cmd += ["--max_steps", str(o.max_steps), "--save_steps", str(o.max_steps), "--save_total_limit", "1"]
        cmd += ["--per_device_train_batch_size", str(o.batch_size), "--learning_rate", str(o.learning_rate)]
        cmd += ["--max_length", str(o.max_length), "--seed", str(o.seed), "--data_seed", str(o.seed)]
        cmd += ["--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0", "--report_to", "none"]
        cmd += ["--check_model", "false", "--add_version", "false", "--save_only_model", "true"]
        cmd += ["--logging_steps", "10", "--warmup_ratio", "0.05"]
        cmd += new_token_sft_flags(index)
        cmd += [*o.sft_args, "--output_dir", str(output_dir)]
        settings = SSIDSettings(index_dir=index, collection=str(self.collection), protocol="standard", target=target)
        logger.info("%s: swift sft (%d steps, %s) -> %s", row, o.max_steps, o.tuner, output_dir)
        seconds = run_logged(cmd, self.logs / f"sft_{row}.log", _env(**settings.to_env()))
        checkpoint = last_checkpoint(output_dir)
        state = read_json(checkpoint / "trainer_state.json", {}) or {}
        steps = int(state.get("global_step") or o.max_steps)
        losses = [e["loss"] for e in state.get("log_history", []) if "loss" in e]
        done = {**record, "checkpoint": str(checkpoint), "steps": steps, "seconds": round(seconds, 1)}
        done["final_loss"] = losses[-1] if losses else None
        write_json_atomic(marker, done)
        return checkpoint, done

    # ------------------------------------------------------------ retrieval
    def generative(self, row: str, index: Path, checkpoint: Path | None, target: str, labels: dict) -> Path:
        """Trie-constrained retrieval of the held-out queries (resumed; skipped when the run file is complete)."""
        from swift_ssid.integration.retrieval import done_query_ids

        run_file = self.out / f"run_{row}.jsonl"
        labels = {"protocol": PROTOCOL, **labels}
        extra = ["--target", target] + (["--no-reason"] if target == "reason" else [])
        reason = "train-only" if target == "reason" else "none"
        timing = self.out / f"row_{row}.json"
        query_ids = {json.loads(line)["query_id"] for line in open(self.queries, encoding="utf-8")}
        marker = checkpoint.parent / SFT_MARKER if checkpoint is not None else None
        if marker is not None and run_file.is_file() and run_file.stat().st_mtime_ns < marker.stat().st_mtime_ns:
            stale = run_file.with_name(run_file.name + ".stale")
            logger.warning("%s: %s predates the training it should rank with; moved to %s", row, run_file, stale)
            run_file.replace(stale)
            timing.unlink(missing_ok=True)
        if query_ids <= done_query_ids(run_file, {"reason": reason, "k": self.o.k, **labels}) and timing.is_file():
            logger.info("%s: retrieved before (%s), skipping", row, run_file)
            return run_file
        budget = max(self.o.max_new_tokens, int(self.token_stats(index)["max"]) + 8)  # prefix and line end
        start = time.perf_counter()
        retrieve(
            replace(self.o.retrieve_options(index), max_new_tokens=budget),
            self.queries,
            run_file,
            labels,
            self.logs / f"run_{row}.log",
            checkpoint,
            extra,
            env=NO_ENV_TARGET,
        )
        write_json_atomic(timing, {"retrieve_s": round(time.perf_counter() - start, 1), "queries": len(query_ids)})
        return run_file

    def lexical_or_dense(self, row: str) -> Path:
        """BM25 (bm25s, English stopwords) or dense (all-MiniLM-L6-v2, cosine) over the descriptions."""
        from swift_ssid.core.collection import load_collection
        from swift_ssid.core.queries import load_queries

        run_file = self.out / f"run_{row}.jsonl"
        timing = self.out / f"row_{row}.json"
        if run_file.is_file() and timing.is_file():
            return run_file
        items = load_collection(self.collection)
        ids = [it.image for it in items]
        docs = [it.text or it.captions[0] for it in items]
        queries = load_queries(self.queries)
        k = min(self.o.k, len(ids))
        start = time.perf_counter()
        if row == "bm25":
            import bm25s

            retriever = bm25s.BM25()
            retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
            tokens = bm25s.tokenize([q.query for q in queries], stopwords="en", show_progress=False)
            top, scores = retriever.retrieve(tokens, k=k, show_progress=False)
            label = {"kind": "bm25", "method": "bm25s"}
        else:
            from swift_ssid.encoders.text_embedder import SentenceEmbedder

            embedder = SentenceEmbedder("all-MiniLM-L6-v2")
            sims = embedder.encode([q.query for q in queries]) @ embedder.encode(docs).T
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(sims, top, axis=1)
            label = {"kind": "dense", "embedder": embedder.name}
        rows = []
        for q, idx, sc in zip(queries, top, scores, strict=True):
            images = [ids[int(i)] for i in idx]
            setting = {"protocol": PROTOCOL, **label, "reason": "none", "k": self.o.k}
            rows.append(
                RunRow(
                    q.query_id, q.query, list(q.gold_images), images, [float(s) for s in sc], [None] * len(images),
                    images, setting=setting,
                )
            )  # fmt: skip
        write_run(run_file, rows)
        write_json_atomic(timing, {"retrieve_s": round(time.perf_counter() - start, 1), "queries": len(queries)})
        return run_file

    def fusion(self, runs: dict[str, Path]) -> Path | None:
        """RRF (ranx) of the ``fuse`` rows' runs, as ``swift-ssid fuse`` does; None when one of them is missing."""
        from swift_ssid.core.fusion import fuse_runs

        missing = [name for name in self.o.fuse if name not in runs]
        if missing:
            logger.warning("fusion: rows %s did not run; add them to --rows or change --fuse", missing)
            return None
        names = list(self.o.fuse)
        fused = fuse_runs(
            [read_run(runs[n]) for n in names],
            method="rrf",
            names=names,
            k=self.o.k,
            setting={"protocol": PROTOCOL, "reason": "none", "k": self.o.k},
        )
        for row in fused:
            row.setting["kind"] = "fusion: rrf(" + " + ".join(names) + ")"
        run_file = self.out / "run_fusion.jsonl"
        write_run(run_file, fused)
        write_json_atomic(self.out / "row_fusion.json", {"retrieve_s": None})
        return run_file

    # ------------------------------------------------------------ the whole protocol
    def run(self) -> dict[str, Any]:
        """Every row of ``rows``, then the tables, the plot and ``results.json``."""
        wall = time.perf_counter()
        load_start = _load()
        self.prepare()
        runs: dict[str, Path] = {}
        rows: list[RowResult] = []
        extras: dict[str, dict[str, Any]] = {}
        for row in self.o.rows:
            logger.info("[%s] ...", row)
            if row in ("bm25", "dense"):
                runs[row] = self.lexical_or_dense(row)
                extras[row] = {}
            elif row == "fusion":
                fused = self.fusion(runs)
                if fused is None:
                    continue
                runs[row] = fused
                extras[row] = {}
            elif row == "untrained":
                index = self.kind_index("semantic")
                runs[row] = self.generative(row, index, None, "noreason", {"kind": "untrained (semantic ids)"})
                extras[row] = {"index": index}
            else:
                info: dict[str, Any] = {}
                trained_as, index, target, kind = row, self.kind_index(row) if row != "ssid" else None, "noreason", row
                note = ""
                if row == "ssid":
                    index, info = self.ssid_index()
                    probe = info.get("probe") or {}
                    asked = info.get("asked_again", probe.get("asked_again", 0))
                    decided = info.get("decided_on", "all descriptions")
                    note = f"usable {info['usable_share']:.0%} ({decided}), asked again {asked}"
                    if info["source"] == "model":
                        target = "reason"
                    else:  # the fallback IS the caption-derived row: same index, so its training and run are reused
                        trained_as, kind = "caption-derived", "caption-derived"
                        note += "; fallback = the caption-derived row's training and run"
                checkpoint, trained = self.train(trained_as, index, target)
                runs[row] = self.generative(trained_as, index, checkpoint, target, {"kind": kind})
                extras[row] = {"index": index, "trained": trained, "note": note, "stage1": info or None}
                if trained_as != row:
                    extras[row].update(kind=FALLBACK_LABEL, timing_row=trained_as)
            rows.append(self.summarise(row, runs[row], extras[row]))
        results = self.write(rows, runs, extras, time.perf_counter() - wall, load_start)
        return results

    def token_stats(self, index: Path) -> dict[str, Any]:
        """Tokens per identifier of an index with the model's tokenizer (min/median/mean/max), computed once."""
        from swift_ssid.core.index import IdentifierIndex
        from swift_ssid.core.kinds import index_new_tokens
        from swift_ssid.workflows.kinds import token_stats

        key = str(index)
        if key not in self._tokens:
            identifiers = IdentifierIndex.load(index).identifiers()
            self._tokens[key] = token_stats(identifiers, self.o.model, index_new_tokens(index))["tokens_per_identifier"]
        return self._tokens[key]

    def summarise(self, name: str, run_file: Path, extra: dict[str, Any]) -> RowResult:
        run = read_run(run_file)
        metrics = evaluate_run(run, DEFAULT_KS)
        bounds = bootstrap_interval(hits_at(run), self.o.bootstrap, self.o.seed)
        tokens = None
        if "index" in extra:
            tokens = float(self.token_stats(Path(extra["index"]))["mean"])
        timing = read_json(self.out / f"row_{extra.get('timing_row', name)}.json", {}) or {}
        per_query = timing.get("retrieve_s") / max(metrics.n_queries, 1) if timing.get("retrieve_s") else None
        trained = extra.get("trained") or {}
        return RowResult(
            name=name,
            kind=extra.get("kind") or run[0].setting.get("kind", name),
            run=str(run_file),
            n=metrics.n_queries,
            recall={f"R@{k}": metrics.r_at(k) for k in DEFAULT_KS},
            interval={f"R@{k}": [float(bounds[j, 0]), float(bounds[j, 1])] for j, k in enumerate(DEFAULT_KS)},
            chance={f"R@{k}": chance_hit_rate(k, self.n_images) for k in DEFAULT_KS},
            train_answer_share=training_answer_share(run, self.train_images),
            tokens_mean=tokens,
            steps=trained.get("steps"),
            train_s=trained.get("seconds"),
            retrieve_s_per_query=round(per_query, 2) if per_query else None,
            note=extra.get("note", ""),
        )

    def write(
        self,
        rows: list[RowResult],
        runs: dict[str, Path],
        extras: dict[str, dict[str, Any]],
        wall_s: float,
        load_start: list[float] | None,
    ) -> dict[str, Any]:
        from swift_ssid.reporting.tables import kind_tables, summarize_run_files

        differences = {}
        loaded = {name: read_run(path) for name, path in runs.items()}
        for a, b in DIFFERENCES:
            if a in loaded and b in loaded:
                differences[f"{a} - {b}"] = paired_difference(
                    loaded[a], loaded[b], n_boot=self.o.bootstrap, seed=self.o.seed
                )
        markdown = to_markdown(rows, differences, self.o, self.n_images, len(self.train_images))
        write_text_atomic(self.out / "table.md", markdown)
        write_text_atomic(self.out / "table.csv", to_csv(rows))
        paper = summarize_run_files([runs[r.name] for r in rows], by="kind")
        tables = kind_tables(paper, model=self.o.model_label, collection=f"Flickr30K text side, {self.n_images} images")
        write_text_atomic(self.out / "tables.md", tables)
        plot(rows, self.out / "text_protocol.png", self.o.model_label)
        results = {
            "protocol": PROTOCOL,
            "model": self.o.model_label,
            "model_dir": self.o.model,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.o).items()},
            "data": read_json(self.out / "data.json"),
            "images": self.n_images,
            "train_images": len(self.train_images),
            "rows": [asdict(r) for r in rows],
            "differences": differences,
            "stage1": {k: v.get("stage1") for k, v in extras.items() if v.get("stage1")},
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_at_start": load_start,
                "load_at_end": _load(),
            },
            "wall_s": round(wall_s, 1),
            "command": " ".join(sys.argv),
        }
        write_json_atomic(self.out / "results.json", results)
        return {**results, "markdown": markdown}


# ---------------------------------------------------------------- output


def _same(key: str, recorded: Any, wanted: Any) -> bool:
    """A training record's setting equals the wanted one; an index is the same folder of ``--out`` (moved or not)."""
    if key == "index" and isinstance(recorded, str):
        return Path(recorded).name == Path(wanted).name  # index_<kind>, or ssid_stage1/index_model
    return recorded == wanted


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    return env


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_text_protocol(options: TextProtocolOptions) -> dict[str, Any]:
    """Run the text-side protocol (see the module docstring); returns ``results.json`` plus ``markdown``."""
    return TextProtocol(options).run()


__all__ = [
    "DEFAULT_CAPTIONS",
    "ROWS",
    "TextProtocol",
    "TextProtocolOptions",
    "bootstrap_interval",
    "collection_rows",
    "hits_at",
    "paired_difference",
    "read_caption_groups",
    "run_text_protocol",
    "split_images",
    "training_answer_share",
]
