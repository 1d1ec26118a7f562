"""The whole SSID method as one resumable sequence of real ``swift`` / ``swift-ssid`` commands.

Every stage starts with the collection check (:func:`swift_ssid.core.checks.check_collection`, cached by file
size and time): a problem row stops the run with one line per problem (``file:line``, the fix), or, with
``skip_invalid``, is listed in ``skipped.jsonl`` and left out. The rows that pass are written to
``collection.jsonl`` in the work folder (absolute image paths), which every stage then reads.

Stages (each a subprocess, each skipped when its output already exists, so a re-run resumes; a skipped
stage is marked ``"skipped": true`` in ``summary.json`` and keeps what its earlier run recorded):

1. ``generate``   ``swift infer`` over ``ssid-generate`` rows (the paper's prompt per image); a killed run's
                  partial results are kept and only the images without an answer are generated again
2. ``index``      ``swift-ssid build-index`` on the raw results; if too few answers are usable (a tiny
                  random model), the labelled caption-derived fallback source builds the index instead;
                  or a prebuilt index folder (``index=DIR``, e.g. from ``swift-ssid identifiers KIND``) is used
3. ``train``      ``swift sft --dataset ssid-memorize ssid-retrieve`` (registered datasets, read from
                  ``SSID_COLLECTION`` / ``SSID_INDEX`` / ``SSID_PROTOCOL``)
4. ``retrieve``   ``swift-ssid retrieve`` (top-K trie-constrained beam search) on the test captions (``run.jsonl``)
                  and, for the memorisation check, on the training captions of the first ``memorisation_images``
                  training images (``run_memorised.jsonl``); resumes an unfinished run file, skipped when the
                  same command already finished it
5. ``evaluate``   ``swift-ssid evaluate`` and ``swift-ssid report`` for both (R@1/5/10 with the chance level
                  ``K / indexed images``, the number of distinct ranked lists, HTML reports)

Used by the offline demo (:mod:`swift_ssid.workflows.demo`) and the end-to-end tests; with a real model
directory and the recipes' settings it is the same sequence the recipes document.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swift_ssid.core.checks import CheckReport, check_collection
from swift_ssid.core.collection import TRAIN_SPLITS, CollectionItem
from swift_ssid.core.images import DEFAULT_BACKGROUND, parse_background
from swift_ssid.core.index import read_stats
from swift_ssid.core.jsonl import iter_jsonl, read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from swift_ssid.core.kinds import new_token_sft_flags
from swift_ssid.core.rows import result_key
from swift_ssid.integration.checkpoints import last_checkpoint
from swift_ssid.integration.settings import ENV_KEYS, SSIDSettings

logger = logging.getLogger(__name__)

PLUGIN_FILE = Path(__file__).resolve().parents[1] / "plugin.py"
IDENTIFIER_SOURCES: tuple[str, ...] = ("auto", "model", "caption-derived", "index")
MAX_PROBLEMS_SHOWN = 20
PROGRESS_EVERY_S = 10.0
"""How often a running stage's progress (its log's latest line) is logged."""
DATASETS = {
    "reason": ["ssid-memorize", "ssid-retrieve"],
    "noreason": ["ssid-memorize-noreason", "ssid-retrieve-noreason"],
}
"""The ``swift sft`` datasets of each training target."""


def index_target(index_dir: str | os.PathLike) -> str:
    """The training target an index supports: ``reason`` when every usable entry has a reason, else ``noreason``.

    Indexes of ``swift-ssid identifiers KIND`` carry no reasons; only ``swift-ssid build-index`` on stage-1
    answers writes them.
    """
    from swift_ssid.core.index import IdentifierIndex

    entries = [e for e in IdentifierIndex.load(index_dir).entries if e.identifier is not None]
    has_reason = bool(entries) and all(e.reason is not None and e.reason.strip() for e in entries)
    return "reason" if has_reason else "noreason"


def swift_executable() -> str:
    """The ``swift`` console script of this Python environment."""
    candidate = Path(sys.executable).with_name("swift")
    if not candidate.exists():
        raise FileNotFoundError(f"no `swift` next to {sys.executable}: install ms-swift==4.6.0 into this environment")
    return str(candidate)


class StageError(RuntimeError):
    """A pipeline stage's command failed; the message names the command and the end of its log."""


class CollectionError(StageError):
    """The collection check found problem rows (and ``skip_invalid`` is off); the message lists them."""


def check_rows(
    collection: str | os.PathLike,
    image_root: str | os.PathLike | None,
    *,
    skip_invalid: bool,
    skipped: Path,
    cache: Path | None = None,
    announce: bool = True,
) -> CheckReport:
    """The collection check every command that reads a collection runs first (``run``, ``identifiers``, ...).

    Problem rows stop the command with one line per problem (``file:line: [code] what; fix``, as ``swift-ssid
    check`` prints them), or, with ``skip_invalid``, are listed in ``skipped`` (JSON Lines) and left out.

    Returns:
        The report; its ``items`` are the usable rows.

    Raises:
        CollectionError: a row has a problem and ``skip_invalid`` is off, or no row is usable.
    """
    report = check_collection(collection, image_root, cache=cache)
    if not report.problems:
        skipped.unlink(missing_ok=True)
        return report
    shown = [p.line() for p in report.problems[:MAX_PROBLEMS_SHOWN]]
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more (`swift-ssid check` lists all)")
    listing = "\n".join(shown)
    if not skip_invalid:
        raise CollectionError(
            f"{report.summary()}:\n{listing}\nfix these rows, or pass --skip-invalid to leave them out "
            f"(they are then listed in {skipped})"
        )
    report.write_skipped(skipped)
    if not report.items:
        raise CollectionError(f"{report.summary()}: no usable row left; fix the collection:\n{listing}")
    if announce:
        logger.warning("%s; left out (listed in %s):\n%s", report.summary(), skipped, listing)
    return report


def add_skip_invalid_argument(parser: argparse._ActionsContainer, listed_in: str) -> None:
    """Add ``--skip-invalid`` (the flag of every command that reads a collection) to ``parser``."""
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help=f"leave out the rows `swift-ssid check` flags (listed in {listed_in}) instead of stopping",
    )


def checked_items(
    collection: str | os.PathLike, image_root: str | os.PathLike | None, skip_invalid: bool, skipped: Path
) -> list[CollectionItem]:
    """The usable items of a collection after :func:`check_rows` (for commands that need no collection file)."""
    report = check_rows(collection, image_root, skip_invalid=skip_invalid, skipped=skipped)
    if report.problems:
        print(f"{report.summary()}; skipped rows: {skipped}")
    return report.items


def write_checked(items: Sequence[CollectionItem], path: Path) -> Path:
    """Write usable items as a collection ``.jsonl`` (absolute image paths), unless it already holds exactly them."""
    text = "".join(json.dumps(it.to_row(), ensure_ascii=False) + "\n" for it in items)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def last_log_line(log_path: Path, tail_bytes: int = 4096) -> str:
    """The last non-empty line of a log, a progress bar's latest state included (the text after its last ``\\r``)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [part.strip() for line in tail.splitlines() for part in line.split("\r") if part.strip()]
    return lines[-1][:160] if lines else ""


def run_logged(
    cmd: Sequence[str],
    log_path: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    heartbeat_s: float = PROGRESS_EVERY_S,
) -> float:
    """Run ``cmd``, output to ``log_path``; return its wall time or raise :class:`StageError` with the log's end.

    While it runs, every ``heartbeat_s`` seconds the log's latest line (a progress bar, a loss) is logged when
    it changed, so no stage is silent for long.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        shown = ""
        while True:
            try:
                proc.wait(timeout=heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                line = last_log_line(log_path)
                if line and line != shown:
                    logger.info("  %s (%.0f s): %s", log_path.stem, time.perf_counter() - start, line)
                    shown = line
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-40:])
        raise StageError(f"`{shlex.join(cmd[:3])} ...` exited {proc.returncode}; full log: {log_path}\n{tail}")
    return elapsed


@dataclass
class PipelineConfig:
    """What to run and where.

    Attributes:
        workdir: every artifact goes here (resumable: finished stages are skipped).
        collection: collection ``.jsonl`` or Karpathy JSON (``swift_ssid.core.collection``), with train/test splits.
        model: base model directory or id.
        template: SSID template (``ssid_qwen2_5_vl``, ``ssid_llava1_6_vicuna_hf``, ``ssid_qwen2_5``).
        model_flags: extra flags for every swift call that loads the model (``--model_type``, dtype, ...).
        identifier_source: ``auto`` (model answers, or the caption-derived fallback when fewer than
            ``min_valid_share`` are usable), ``model`` (never fall back) or ``caption-derived``.
        sft_flags: extra ``swift sft`` flags (steps, learning rate, tuner ...).
        k: beams = identifiers returned per query.
        generate_max_new_tokens / retrieve_max_new_tokens: generation budgets.
        env: extra environment for every command (offline flags, ``MAX_PIXELS``, ...).
        image_root: the folder the collection's image paths are relative to (default: the collection's folder).
        skip_invalid: leave out (and list in ``skipped.jsonl``) the rows the collection check flags, instead of
            stopping.
        index: a prebuilt identifier index folder (``swift-ssid build-index`` format); skips stages 1 and 2.
        alpha_background: the colour transparent image areas are composited onto (``SSID_ALPHA_BACKGROUND``).
        memorisation_images: training images whose training captions are queried as the memorisation check
            (first N in file order; 0: no check).
    """

    workdir: Path
    collection: Path
    model: str
    template: str
    model_flags: list[str] = field(default_factory=list)
    identifier_source: str = "auto"
    min_valid_share: float = 0.8
    sft_flags: list[str] = field(default_factory=list)
    protocol: str = "standard"
    k: int = 10
    generate_max_new_tokens: int = 64
    retrieve_max_new_tokens: int = 48
    retrieve_batch_size: int = 8
    env: dict[str, str] = field(default_factory=dict)
    image_root: Path | None = None
    skip_invalid: bool = False
    index: Path | None = None
    alpha_background: str = DEFAULT_BACKGROUND
    memorisation_images: int = 100

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.collection = Path(self.collection)
        if self.identifier_source not in IDENTIFIER_SOURCES:
            raise ValueError(
                f"identifier_source must be one of {', '.join(IDENTIFIER_SOURCES)}, got {self.identifier_source!r}"
            )
        if not self.collection.is_file():
            raise FileNotFoundError(
                f"collection {self.collection} not found: pass a collection .jsonl or Karpathy JSON"
            )
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
            if not self.image_root.is_dir():
                raise FileNotFoundError(f"image root {self.image_root} is not a folder: pass the folder of the images")
        if self.index is not None:
            self.index = Path(self.index).resolve()
            if not (self.index / "index.jsonl").is_file():
                raise FileNotFoundError(
                    f"index {self.index} holds no index.jsonl: pass a folder written by `swift-ssid build-index` or "
                    "`swift-ssid identifiers`"
                )
        if not 0.0 <= self.min_valid_share <= 1.0:
            raise ValueError(f"min_valid_share must be between 0 and 1, got {self.min_valid_share}")
        if self.memorisation_images < 0:
            raise ValueError(f"memorisation_images must be >= 0, got {self.memorisation_images}")
        parse_background(self.alpha_background)
        if self.index is not None:
            self.identifier_source = "index"
        elif self.identifier_source == "index":
            raise ValueError("identifier_source 'index' needs index=DIR (a prebuilt index folder)")


class Pipeline:
    """Runs the stages of :class:`PipelineConfig` in order; ``summary`` collects timings and outcomes."""

    def __init__(self, config: PipelineConfig):
        self.cfg = config
        self.work = config.workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.summary: dict = {"config": {k: str(v) for k, v in asdict(config).items()}, "stages": {}}
        self._previous_stages = _previous_stages(self.work / "summary.json")

    # ------------------------------------------------------------------ helpers
    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        env.update(self.cfg.env)
        env.update(extra)
        return env

    def _stage(self, name: str, outputs: Sequence[Path], fn) -> None:
        if all(p.exists() for p in outputs):
            logger.info("[%s] done before, skipping (%s)", name, ", ".join(map(str, outputs)))
            self._skipped(name)
            return
        logger.info("[%s] running", name)
        start = time.perf_counter()
        info = fn() or {}
        info["seconds"] = round(time.perf_counter() - start, 1)
        self.summary["stages"][name] = info
        logger.info("[%s] finished in %.1f s", name, info["seconds"])

    def _skipped(self, name: str) -> None:
        """Mark stage ``name`` skipped, keeping what its earlier run recorded (source, checkpoint, ...)."""
        earlier = self.summary["stages"].get(name) or self._previous_stages.get(name) or {}
        kept = {k: v for k, v in earlier.items() if k not in ("seconds", "skipped")}
        self.summary["stages"][name] = {**kept, "skipped": True}

    def _swift(self, command: str, args: list[str], log: str, **env: str) -> float:
        cmd = [swift_executable(), command, "--custom_register_path", str(PLUGIN_FILE), *args]
        return run_logged(cmd, self.logs / log, self._env(**env))

    def _ssid(self, args: list[str], log: str, **env: str) -> float:
        return run_logged([sys.executable, "-m", "swift_ssid.cli", *args], self.logs / log, self._env(**env))

    @property
    def index_dir(self) -> Path:
        return self.cfg.index if self.cfg.index is not None else self.work / "index"

    @property
    def checkpoint(self) -> Path:
        marker = self.work / "sft" / "last_checkpoint.txt"
        if not marker.exists():
            raise FileNotFoundError(f"{marker} missing: run the train stage first")
        return Path(marker.read_text().strip())

    # ------------------------------------------------------------------ the collection check
    def check(self) -> list[CollectionItem]:
        """Check the collection (each stage starts here); write the usable rows to the work folder's copy.

        Returns:
            The usable items.

        Raises:
            CollectionError: a row has a problem and ``skip_invalid`` is off (the message lists the problems),
                or no row is usable.
        """
        skipped = self.work / "skipped.jsonl"
        report = check_rows(
            self.cfg.collection,
            self.cfg.image_root,
            skip_invalid=self.cfg.skip_invalid,
            skipped=skipped,
            cache=self.work / "check_cache.json",
            announce="collection_check" not in self.summary,
        )
        self.summary["collection_check"] = {
            "rows": report.rows,
            "usable": len(report.items),
            "skipped": len(report.problems),
            "skipped_file": str(skipped) if report.problems else None,
        }
        write_checked(report.items, self.collection_file)
        return report.items

    @property
    def collection_file(self) -> Path:
        """The checked collection every stage reads (usable rows only, absolute image paths)."""
        return self.work / "collection.jsonl"

    def _settings_env(self) -> dict[str, str]:
        """The ``SSID_*`` environment of the datasets and templates (checked collection, background, target)."""
        has_index = (self.index_dir / "index.jsonl").is_file()
        return SSIDSettings(
            index_dir=self.index_dir if has_index else None,
            collection=str(self.collection_file),
            protocol=self.cfg.protocol,
            alpha_background=self.cfg.alpha_background,
            target=self.target() if has_index else "reason",  # type: ignore[arg-type]
        ).to_env()

    def target(self) -> str:
        """The training target: ``noreason`` when the index has no reasons (kind indexes) or ``SSID_TARGET`` says so.

        Recorded in the summary (``target``, ``target_why``) and logged once.
        """
        if "target" not in self.summary:
            wanted = (self._env().get(SSIDSettings.env_var("target")) or "").strip().lower()
            if wanted == "noreason":
                target, why = "noreason", f"{SSIDSettings.env_var('target')}=noreason"
            else:
                target = index_target(self.index_dir)
                why = "the index has a reason for every image" if target == "reason" else "the index has no reasons"
            self.summary["target"], self.summary["target_why"] = target, why
            if target == "noreason":
                logger.warning(
                    "training target: identifier only (%s): training %s and retrieving with --target noreason",
                    why,
                    " ".join(DATASETS[target]),
                )
        return self.summary["target"]

    # ------------------------------------------------------------------ stages
    def generate(self) -> None:
        """Stage 1: the model answers the paper's prompt for every image (``swift infer``)."""
        from swift_ssid.core.rows import generate_keys, generate_rows

        items = self.check()
        raw = self.work / "generate" / "results.jsonl"
        # swift infer appends to --result_path every `write_batch_size` rows, so a killed run leaves a partial file.
        # It writes here and the stage renames it to `raw` only once every image has an answer; a re-run keeps the
        # finished rows and asks only for the missing images.
        partial = self.work / "generate" / "results.partial.jsonl"

        def run() -> dict:
            rows, keys = generate_rows(items), generate_keys(items)  # keys: text items' results carry no image
            done = _answered_images(partial, keys)
            todo = [row for row, it in zip(rows, items, strict=True) if it.image not in done]
            if done:
                logger.info("%s: %d of %d images answered before; %d to go", partial, len(done), len(rows), len(todo))
            if todo:
                rows_path = self.work / "generate" / "rows.jsonl"
                write_jsonl_atomic(rows_path, todo)
                args = ["--model", self.cfg.model, *self.cfg.model_flags, "--template", self.cfg.template]
                args += ["--val_dataset", str(rows_path), "--result_path", str(partial)]
                args += ["--max_new_tokens", str(self.cfg.generate_max_new_tokens), "--temperature", "0"]
                self._swift("infer", args, "1_generate.log", **self._settings_env())
            missing = [it.image for it in items if it.image not in _answered_images(partial, keys)]
            if missing:
                raise StageError(
                    f"swift infer left {len(missing)} of {len(rows)} images without an answer in {partial} "
                    f"(first: {missing[0]}); see {self.logs / '1_generate.log'} and re-run to resume"
                )
            partial.replace(raw)
            return {"images": len(rows), "answered_before": len(done & {it.image for it in items})}

        self._stage("generate", [raw], run)

    def build_index(self) -> None:
        """Stage 2: parse the answers into the identifier index, or fall back to caption-derived identifiers."""
        from swift_ssid.core.caption_identifiers import SOURCE_LABEL, write_caption_results

        items = self.check()
        model_index = self.work / "index_model"
        if self.cfg.index is not None:
            self._use_prebuilt_index(items)
            return

        collection = ["--collection", str(self.collection_file)]  # text rows' results are matched by their prompt

        def run() -> dict:
            info: dict = {}
            if self.cfg.identifier_source != "caption-derived":
                raw = self.work / "generate" / "results.jsonl"
                self._ssid(
                    ["build-index", str(raw), "--out", str(model_index), "--min-usable", "0", *collection],
                    "2_build_index_model.log",
                )
                stats = read_stats(model_index)  # verified against the index's manifest
                share = stats["valid"] / max(stats["images"], 1)
                info["model_answers"] = {"images": stats["images"], "valid": stats["valid"], "valid_share": share}
                logger.info("model-written identifiers: %d of %d usable", stats["valid"], stats["images"])
                if self.cfg.identifier_source == "model" or share >= self.cfg.min_valid_share:
                    model_index.rename(self.index_dir)
                    info["source"] = "model"
                    return info
                logger.warning(
                    "only %.0f%% of the model's answers are usable identifiers (< %.0f%%): using the labelled %s "
                    "fallback source, NOT model-written identifiers",
                    100 * share,
                    100 * self.cfg.min_valid_share,
                    SOURCE_LABEL,
                )
            results = self.work / "index_caption" / "results.jsonl"
            write_caption_results(((it.image, it.captions[0]) for it in items), results)
            self._ssid(
                ["build-index", str(results), "--out", str(self.index_dir), *collection], "2_build_index_caption.log"
            )
            info["source"] = SOURCE_LABEL
            return info

        self._stage("index", [self.index_dir / "index.jsonl"], run)
        self._record_source()

    def _use_prebuilt_index(self, items: list[CollectionItem]) -> None:
        """Stage 2 with ``index=DIR``: check that it names every usable image, record its source."""
        from swift_ssid.core.index import IdentifierIndex

        try:
            index = IdentifierIndex.load(self.index_dir)
        except (OSError, ValueError) as e:
            raise StageError(f"prebuilt index {self.index_dir}: {e}") from None
        lacking = [it for it in items if index.identifier_for(it.image) is None]
        if lacking:
            raise StageError(
                f"prebuilt index {self.index_dir} has no usable identifier for {len(lacking)} of {len(items)} images "
                f"(first: {lacking[0].where} {lacking[0].image}); build the index from this collection (same image "
                "paths), or leave those rows out of the collection"
            )
        try:
            stats = read_stats(self.index_dir)
        except (OSError, ValueError):  # a folder without (matching) stats: named by its path
            stats = {}
        kind = stats.get("identifier_source") or stats.get("kind")
        source = f"prebuilt index ({kind})" if kind else f"prebuilt index {self.index_dir}"
        self.summary["stages"]["index"] = {"source": source, "index": str(self.index_dir), "skipped": True}
        self._record_source()

    def _record_source(self) -> None:
        source_file = self.work / "identifier_source.txt"
        if "source" in self.summary["stages"].get("index", {}):
            source_file.write_text(self.summary["stages"]["index"]["source"])
        self.summary["identifier_source"] = source_file.read_text() if source_file.exists() else "unknown"

    def train(self) -> None:
        """Stage 3: ``swift sft`` on the memorise and retrieve datasets together."""
        self.check()
        out = self.work / "sft"

        def run() -> dict:
            args = ["--model", self.cfg.model, *self.cfg.model_flags, "--template", self.cfg.template]
            args += ["--dataset", *DATASETS[self.target()], "--dataset_shuffle", "true"]
            args += ["--output_dir", str(out), *self.cfg.sft_flags]
            if (self.index_dir / "index.jsonl").is_file():  # atomic identifiers: the tokens the index names
                args += new_token_sft_flags(self.index_dir)
            if "--check_model" not in self.cfg.sft_flags:
                # ms-swift's default asks the ModelScope hub whether a local model is its latest version, ignoring
                # MODELSCOPE_OFFLINE (three retries, ~7 s offline); every command of the pipeline runs offline.
                args += ["--check_model", "false"]
            self._swift("sft", args, "3_sft.log", **self._settings_env())
            try:
                checkpoint = last_checkpoint(out)
            except FileNotFoundError as e:
                raise StageError(f"{e}; see {self.logs / '3_sft.log'}") from None
            (out / "last_checkpoint.txt").write_text(str(checkpoint))
            return {"checkpoint": str(checkpoint), "datasets": DATASETS[self.target()]}

        self._stage("train", [out / "last_checkpoint.txt"], run)

    def memorisation_query_rows(self, items: list[CollectionItem]) -> list[dict]:
        """Queries of the memorisation check: the training captions of the first ``memorisation_images``
        training images, in the ``ssid-query`` row format and exactly as ``ssid-retrieve`` trains on them."""
        from swift_ssid.core.rows import caption_query_rows

        return caption_query_rows([it for it in items if it.split in TRAIN_SPLITS][: self.cfg.memorisation_images])

    def retrieve(self) -> None:
        """Stage 4: top-K trie-constrained retrieval of the test captions (and the memorisation check's queries)."""
        from swift_ssid.core.rows import query_rows

        items = self.check()
        sets = {"test": query_rows(items), "memorised": self.memorisation_query_rows(items)}
        info: dict = {}
        all_skipped = True
        for name, rows in sets.items():
            if not rows:
                continue
            done = self._retrieve_set(name, rows)
            all_skipped &= done.pop("skipped", False)
            if name == "test":
                info.update(done)
            else:
                info[name] = done
        if all_skipped:
            self._skipped("retrieve")
        else:
            self.summary["stages"]["retrieve"] = info

    def _retrieve_set(self, name: str, rows: list[dict]) -> dict:
        """Retrieve one query set (``test``: ``queries.jsonl`` -> ``run.jsonl``; else with a ``_NAME`` suffix)."""
        suffix = "" if name == "test" else f"_{name}"
        queries = self.work / f"queries{suffix}.jsonl"
        run_file = self.work / f"run{suffix}.jsonl"
        write_jsonl_atomic(queries, rows)
        model_type = _flag(self.cfg.model_flags, "--model_type")
        ckpt = self.checkpoint
        if (ckpt / "adapter_config.json").exists():  # LoRA: the base model plus the adapter
            args = ["retrieve", "--model", self.cfg.model, "--adapters", str(ckpt)]
        else:  # full fine-tuning: the checkpoint is the model
            args = ["retrieve", "--model", str(ckpt)]
        args += ["--template", self.cfg.template, "--index", str(self.index_dir), "--queries", str(queries)]
        args += ["--k", str(self.cfg.k), "--out", str(run_file), "--batch-size", str(self.cfg.retrieve_batch_size)]
        args += ["--max-new-tokens", str(self.cfg.retrieve_max_new_tokens)]
        if model_type:
            args += ["--model_type", model_type]
        dtype = _flag(self.cfg.model_flags, "--torch_dtype")
        if dtype:
            args += ["--torch-dtype", dtype]
        if self.target() == "noreason":
            args += ["--target", "noreason"]
        # Invoked unless an earlier call with the same command and SSID_* settings left every query in the run
        # file (loading the model only to find nothing to do costs minutes for a 7B model); otherwise retrieve
        # itself skips the queries already in the run file.
        env = self._env(**self._settings_env())
        stamp = {"args": args, "env": {k: v for k, v in sorted(env.items()) if k in ENV_KEYS}}
        stamp_file = self.work / f"retrieve{suffix}_done.json"
        query_ids = [row["query_id"] for row in rows]
        if read_json(stamp_file) == stamp and set(query_ids) <= {r.get("query_id") for r in _read_rows(run_file)}:
            logger.info("[retrieve] done before, skipping (%s holds all %d queries)", run_file, len(query_ids))
            return {"queries": len(query_ids), "skipped": True}
        stamp_file.unlink(missing_ok=True)
        start = time.perf_counter()
        what = "test captions" if name == "test" else f"{name} check: training captions"
        logger.info("[retrieve] %s: %d queries -> %s (log %s)", what, len(query_ids), run_file, self.logs)
        self._ssid(args, f"4_retrieve{suffix}.log", **self._settings_env())
        write_json_atomic(stamp_file, stamp)
        seconds = round(time.perf_counter() - start, 1)
        logger.info("[retrieve] %s: finished in %.1f s", what, seconds)
        return {"queries": len(query_ids), "seconds": seconds}

    def evaluate(self) -> dict:
        """Stage 5: R@1/5/10 (``swift-ssid evaluate``) with chance levels, and the HTML reports (``swift-ssid report``).

        Returns:
            The test captions' metrics (``summary["memorisation"]`` holds the memorisation check's).
        """
        from swift_ssid.core.index import IdentifierIndex
        from swift_ssid.core.metrics import chance_hit_rate
        from swift_ssid.core.runs import read_run

        self.check()
        logger.info("[evaluate] running (metrics and HTML reports)")
        start = time.perf_counter()
        n_images = sum(1 for e in IdentifierIndex.load(self.index_dir).entries if e.identifier is not None)
        source = self.summary.get("identifier_source", "unknown")
        for suffix in ("", "_memorised"):
            run_file = self.work / f"run{suffix}.jsonl"
            if not run_file.is_file():
                continue
            metrics_file = self.work / f"metrics{suffix}.json"
            self._ssid(["evaluate", str(run_file), "--json", str(metrics_file)], f"5_evaluate{suffix}.log")
            report = self.work / f"report{suffix}.html"
            what = "test captions" if not suffix else "memorisation check: training captions"
            title = f"SSID retrieval, {what} ({source} identifiers)"
            report_args = ["report", str(run_file), "--index", str(self.index_dir), "--out", str(report)]
            report_args += ["--collection", str(self.collection_file)]
            report_args += ["--title", title, "--alpha-background", self.cfg.alpha_background]
            self._ssid(report_args, f"5_report{suffix}.log")
            metrics = json.loads(metrics_file.read_text())
            ks = [int(k[2:]) for k in metrics if k.startswith("R@")]
            ranked = [tuple(row.identifiers) for row in read_run(run_file)]
            extra = {
                "chance": {f"R@{k}": round(chance_hit_rate(k, max(n_images, 1)), 4) for k in ks},
                "indexed_images": n_images,
                "distinct_ranked_lists": len(set(ranked)),
                "report": str(report),
            }
            if suffix:
                self.summary["memorisation"] = {**metrics, **extra}
            else:
                self.summary["metrics"] = metrics
                self.summary["chance"] = extra["chance"]
                self.summary["test"] = extra
                self.summary["report"] = str(report)
        self.summary["stages"]["evaluate"] = {"seconds": round(time.perf_counter() - start, 1)}
        return self.summary["metrics"]

    def run_all(self) -> dict:
        """All stages in order; returns the summary (also written to ``summary.json``)."""
        start = time.perf_counter()
        if self.cfg.identifier_source not in ("caption-derived", "index"):
            self.generate()
        self.build_index()
        self.train()
        self.retrieve()
        self.evaluate()
        self.summary["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(self.work / "summary.json", self.summary)
        return self.summary


def _flag(flags: Sequence[str], name: str) -> str | None:
    """The value following ``name`` in a flat flag list, or None."""
    flags = list(flags)
    return flags[flags.index(name) + 1] if name in flags and flags.index(name) + 1 < len(flags) else None


def _read_rows(path: Path) -> list[dict]:
    """The readable rows of a JSON Lines file (none when it is missing); broken lines are left out."""
    if not path.is_file():
        return []
    return [row for _, row, error in iter_jsonl(path) if error is None]


def _previous_stages(summary_path: Path) -> dict:
    """The ``stages`` of an earlier run's summary, or ``{}``."""
    previous = read_json(summary_path)
    stages = previous.get("stages") if isinstance(previous, dict) else None
    return stages if isinstance(stages, dict) else {}


def _answered_images(results: Path, text_keys: dict[str, str] | None = None) -> set[str]:
    """Images (and text items, found by their prompt in ``text_keys``) with a result row in a (possibly partial)
    ``swift infer`` result file.

    A killed writer can leave a broken last line; the file is rewritten without it, since ``swift infer``
    appends the next rows right after it.
    """
    if not results.is_file():
        return set()
    rows, broken = [], 0
    for _, row, error in iter_jsonl(results):
        if error is None and isinstance(row.get("response"), str) and isinstance(row.get("images") or [], list):
            rows.append(row)
        else:
            broken += 1
    if broken:
        logger.warning("%s: dropping %d broken line(s) before resuming", results, broken)
        write_jsonl_atomic(results, rows)
    images = set()
    for row in rows:
        first = row["images"][0] if row.get("images") else None
        path = first.get("path") if isinstance(first, dict) else first
        if first is None and text_keys:
            path = result_key(row, text_keys)
        if isinstance(path, str):
            images.add(path)
    return images


def _recall_line(metrics: dict, chance: dict) -> str:
    """``R@1 85.0% (chance 8.3%) / R@5 ...`` for the R@K keys of ``metrics`` (percent, as every command prints R@K)."""
    from swift_ssid.reporting.tables import format_percent

    def percent(value: float | None) -> str:
        return "?" if value is None else f"{format_percent(value)}%"

    keys = [k for k in metrics if k.startswith("R@")]
    return " / ".join(f"{k} {percent(metrics[k])} (chance {percent(chance.get(k))})" for k in keys)


def format_summary(summary: dict, title: str) -> str:
    """The block a run prints at the end: source, both R@K lines beside chance, distinct lists, report paths."""
    rule = "=" * 88
    lines = ["", rule, title, f"identifier source   : {summary.get('identifier_source', 'unknown')}"]
    if summary.get("target") == "noreason":
        lines.append(f"training target     : identifier only, the -noreason datasets ({summary.get('target_why')})")
    gen = summary.get("stages", {}).get("index", {}).get("model_answers")
    if gen:
        lines.append(f"model answers       : {gen['valid']} of {gen['images']} usable as identifiers")
    check = summary.get("collection_check") or {}
    if check.get("skipped"):
        lines.append(
            f"collection          : {check['usable']} of {check['rows']} rows used; skipped: {check['skipped_file']}"
        )
    mem = summary.get("memorisation")
    if mem:
        lines.append(
            f"memorisation check  : {mem['n_queries']} training captions of memorised images, image-level "
            f"{_recall_line(mem, mem['chance'])}; {mem['distinct_ranked_lists']} distinct ranked lists"
        )
    m, test = summary["metrics"], summary.get("test", {})
    distinct = f"; {test['distinct_ranked_lists']} distinct ranked lists" if "distinct_ranked_lists" in test else ""
    recall = _recall_line(m, summary.get("chance", {}))
    lines.append(f"held-out test       : {m['n_queries']} test captions, image-level {recall}{distinct}")
    lines.append(f"report              : {summary.get('report')}")
    if mem:
        lines.append(f"memorisation report : {mem['report']}")
    lines.append(f"wall time           : {summary.get('seconds', 0):.0f} s")
    lines.append(rule)
    return "\n".join(lines)
