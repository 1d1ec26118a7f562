"""Issue 18, item 5: continued training after ``swift-ssid add`` against full retraining, through the real commands.

One resumable run per ``--setting``: every step writes ``OUT/steps/<step>.json`` atomically when it is done and is
skipped when that file is there, so a kill loses at most the step it was in (its partial outputs are removed and it
runs again). The steps, all through ``swift-ssid`` / ``swift sft`` subprocesses:

1. ``data``: a seeded 80/20 split of the collection's images into old and new; queries of each.
2. ``index``: ``swift-ssid identifiers numeric`` over the old images (no model needed at build time, and the
   shortest identifiers to decode: ``1`` .. ``N``; ``add`` continues the numbering).
3. ``base``: ``swift sft`` on the old images' memorise + retrieve rows for S steps; ``retrieve_base`` over the old
   queries with index version 1.
4. ``add``: ``swift-ssid add`` the new images (version 2).
5. ``update_r<R>``: ``swift-ssid update`` from base's checkpoint for each ``--replay-ratio`` R, with about 25% of
   full retraining's steps; each retrieved over old and new queries (version 2).
6. ``full``: ``swift sft`` from scratch on old + new rows, the same epochs as base; retrieved likewise.
7. ``remove``: ``swift-ssid remove`` a seeded 10% of all images (version 3); the best update checkpoint retrieves
   every query again and every ranked list is searched for a removed image (must be none).
8. ``report``: ``results_update_<setting>.json``, ``.md`` and ``.png`` (old/new R@1 per condition).

Settings: ``demo`` (the bundled 12-image demo collection, the demo's tiny random LLaVA-NeXT, full fine-tuning;
queries are the trained captions: it measures forgetting and learning, not generalisation) and ``text`` (real
Flickr30K captions as text items with SmolLM2-135M-Instruct, LoRA; caption 1 is the description, captions 2-3 the
trained and evaluated queries: a memorisation measurement too, sized to 15 minutes of 2 busy cores).

Usage:
    HF_HUB_OFFLINE=1 MODELSCOPE_OFFLINE=1 TOKENIZERS_PARALLELISM=false \\
        python benchmarks/bench_update.py --setting demo --out /tmp/bench_update_demo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from swift_ssid.core.collection import load_collection
from swift_ssid.core.jsonl import read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from swift_ssid.core.metrics import chance_hit_rate, first_relevant_rank
from swift_ssid.core.runs import read_run
from swift_ssid.workflows.pipeline import PLUGIN_FILE, run_logged, swift_executable

HERE = Path(__file__).resolve().parent
KS = (1, 5, 10)
SSID_KEYS = ("SSID_INDEX", "SSID_TARGET", "SSID_INFER_REASON", "SSID_COLLECTION", "SSID_PROTOCOL", "SSID_TRAIN_SIZE")
CPU_SFT = [
    *("--check_model", "false", "--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0"),
    *("--report_to", "none", "--save_only_model", "true", "--logging_steps", "10", "--warmup_ratio", "0.05"),
    *("--seed", "0", "--data_seed", "0"),
]
"""``swift sft`` flags shared by every training: short CPU runs, predictable paths, seeded."""


@dataclass
class Options:
    """One benchmark configuration (``--setting`` picks the defaults; flags override them)."""

    setting: str
    out: Path
    images: int
    steps: int
    ratios: tuple[float, ...]
    update_share: float = 0.25
    new_share: float = 0.2
    remove_share: float = 0.1
    seed: int = 0
    k: int = 10
    learning_rate: str = "1e-2"
    update_learning_rates: tuple[str, ...] = ()
    batch_size: int = 8
    tuner: str = "full"
    lora_rank: int = 16
    max_length: int = 256
    captions: Path = HERE.parents[1] / "shared" / "data" / "flickr30k_karpathy_test_captions.txt"
    real_lm: str = ""


SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {"images": 12, "steps": 200, "ratios": (0.0, 0.5, 1.0, 2.0, 4.0), "learning_rate": "1e-2", "tuner": "full"},
    "text": {"images": 40, "steps": 24, "ratios": (0.0, 1.0), "learning_rate": "2e-3", "tuner": "lora"},
}


# ---------------------------------------------------------------- helpers


def env() -> dict[str, str]:
    """This environment without ``SSID_*`` settings, offline, one BLAS thread (2 cores shared with another job)."""
    out = {k: v for k, v in os.environ.items() if k not in SSID_KEYS}
    offline = {"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return {**out, **offline, "OMP_NUM_THREADS": "1"}


def swift_ssid_cmd(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "swift_ssid.cli", *args]


def swift_sft_cmd(args: Sequence[str]) -> list[str]:
    return [swift_executable(), "sft", "--custom_register_path", str(PLUGIN_FILE), *args]


def train_runtime(*logs: Path) -> float | None:
    """The trainer's ``train_runtime`` (seconds of training, no start-up) from a ``swift sft`` log."""
    for log in logs:
        if log.is_file():
            found = re.findall(r"train_runtime['\"]?:\s*['\"]?([0-9.]+)", log.read_text("utf-8", "replace"))
            if found:
                return float(found[-1])
    return None


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recall(run_file: Path, query_ids: set[str] | None = None) -> dict[str, Any]:
    """R@1/5/10 of a run file's rows (only ``query_ids`` when given) and the query count."""
    rows = [r for r in read_run(run_file) if query_ids is None or r.query_id in query_ids]
    ranks = [first_relevant_rank(r.images, r.gold_images) for r in rows]
    n = len(rows)
    return {"n": n, **{f"R@{k}": round(sum(r is not None and r <= k for r in ranks) / max(n, 1), 4) for k in KS}}


class Bench:
    """The steps of one run; each is skipped when ``steps/<name>.json`` is there."""

    def __init__(self, o: Options) -> None:
        self.o = o
        self.out = o.out.resolve()
        self.logs = self.out / "logs"
        self.index = self.out / "index"

    # ------------------------------------------------------------ the step machinery
    def step(self, name: str, fn: Callable[[], dict[str, Any]], cleanup: Sequence[Path] = ()) -> dict[str, Any]:
        """Run ``fn`` unless ``steps/<name>.json`` holds its result; partial outputs in ``cleanup`` go first."""
        marker = self.out / "steps" / f"{name}.json"
        done = read_json(marker, None)
        if isinstance(done, dict):
            print(f"[{name}] done before", flush=True)
            return done
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        result = {**fn(), "step_wall_s": round(time.perf_counter() - start, 1)}
        write_json_atomic(marker, result)
        print(f"[{name}] {json.dumps(result)[:300]}", flush=True)
        return result

    def run(self, cmd: list[str], log: str) -> float:
        return run_logged(cmd, self.logs / log, env())

    # ------------------------------------------------------------ the model
    def model(self) -> dict[str, str]:
        """The model folder, its ms-swift model type and SSID template (the demo's tiny model is built in OUT)."""
        if self.o.setting == "text":
            return {"model": self.o.real_lm, "model_type": "llama", "template": "ssid_chatml"}
        from swift_ssid.testing.tiny_models import BUILDERS
        from swift_ssid.workflows.demo import DEFAULT_FAMILY, TEMPLATES, model_flags

        flags = model_flags(DEFAULT_FAMILY)
        path = self.out / "model"
        if not (path / "config.json").is_file():
            BUILDERS[DEFAULT_FAMILY](path)
        model_type = flags[flags.index("--model_type") + 1]
        return {"model": str(path), "model_type": model_type, "template": TEMPLATES[DEFAULT_FAMILY]}

    def sft_flags(self, steps: int) -> list[str]:
        o = self.o
        flags = ["--tuner_type", o.tuner, "--learning_rate", o.learning_rate, "--max_length", str(o.max_length)]
        flags += ["--per_device_train_batch_size", str(o.batch_size), "--max_steps", str(steps)]
        flags += ["--save_steps", str(steps), "--add_version", "false", *CPU_SFT]
        if o.tuner == "lora":
            flags += ["--lora_rank", str(o.lora_rank), "--lora_alpha", str(2 * o.lora_rank)]
        return flags

    # ------------------------------------------------------------ step 1: data
    def data(self) -> dict[str, Any]:
        """``collection/old/new.jsonl`` (80/20, seeded), ``queries_old/new.jsonl`` and the removed images."""
        from swift_ssid.core.rows import caption_query_rows

        o = self.o
        if o.setting == "demo":
            from swift_ssid.workflows.demo import DEMO_COLLECTION

            rows = [json.loads(line) for line in DEMO_COLLECTION.read_text().splitlines() if line.strip()]
            rows = [{**r, "image": str(DEMO_COLLECTION.parent / r["image"]), "split": "train"} for r in rows]
            queried = {r["image"]: r["captions"] for r in rows}  # the trained captions
        else:
            from swift_ssid.workflows.protocols.text import collection_rows, read_caption_groups

            groups = read_caption_groups(o.captions, o.images)
            rows = collection_rows(groups, ["train"] * len(groups))  # text: caption 1, captions: captions 2-5
            rows = [{**r, "captions": r["captions"][:2]} for r in rows]  # captions 2-3: trained and queried
            queried = {r["id"]: r["captions"] for r in rows}
        rows = rows[: o.images]
        key = "image" if o.setting == "demo" else "id"
        order = list(range(len(rows)))
        random.Random(o.seed).shuffle(order)
        n_new = round(len(rows) * o.new_share)
        new_i = set(order[:n_new])
        old = [r for i, r in enumerate(rows) if i not in new_i]
        new = [r for i, r in enumerate(rows) if i in new_i]
        n_remove = max(1, round(len(rows) * o.remove_share))
        removed = sorted(random.Random(o.seed + 1).sample([r[key] for r in rows], n_remove))
        for name, part in (("collection", rows), ("old", old), ("new", new)):
            write_jsonl_atomic(self.out / f"{name}.jsonl", part)
        for name, part in (("old", old), ("new", new)):
            query_items = [{**r, "captions": queried[r[key]]} for r in part]
            write_jsonl_atomic(self.out / f"query_items_{name}.jsonl", query_items)
            items = load_collection(self.out / f"query_items_{name}.jsonl")
            write_jsonl_atomic(self.out / f"queries_{name}.jsonl", caption_query_rows(items))
        queries = [*read_rows(self.out / "queries_old.jsonl"), *read_rows(self.out / "queries_new.jsonl")]
        write_jsonl_atomic(self.out / "queries_all.jsonl", queries)
        return {"images": len(rows), "old": len(old), "new": len(new), "removed": removed, "queries": len(queries)}

    # ------------------------------------------------------------ training
    def train_rows(self, names: Sequence[str], out: Path) -> int:
        """The pipeline's usual rows (memorise + retrieve, no reason: numeric has none) of collections ``names``."""
        from swift_ssid.core.rows import memorize_rows, retrieve_rows

        items = [it for name in names for it in load_collection(self.out / f"{name}.jsonl")]
        index = self.index / "versions" / ("0001" if names == ("old",) else "0002")
        rows = [*memorize_rows(index, items, with_reason=False), *retrieve_rows(index, items, with_reason=False)]
        write_jsonl_atomic(out, rows)
        return len(rows)

    def sft(self, name: str, names: tuple[str, ...], steps: int) -> dict[str, Any]:
        """``swift sft`` from the base model on the rows of ``names`` for ``steps`` steps."""
        m = self.model()
        rows = self.train_rows(names, self.out / f"rows_{name}.jsonl")
        out = self.out / f"sft_{name}"
        cmd = swift_sft_cmd(["--model", m["model"], "--model_type", m["model_type"], "--torch_dtype", "float32"])
        cmd += ["--template", m["template"], "--dataset", str(self.out / f"rows_{name}.jsonl")]
        cmd += ["--dataset_shuffle", "true", "--output_dir", str(out), *self.sft_flags(steps)]
        wall = self.run(cmd, f"sft_{name}.log")
        checkpoint = out / f"checkpoint-{steps}"
        if not checkpoint.is_dir():
            raise SystemExit(f"sft_{name}: no {checkpoint}; see {self.logs / f'sft_{name}.log'}")
        return {"checkpoint": str(checkpoint), "rows": rows, "steps": steps, "wall_s": round(wall, 1),
                "train_s": train_runtime(self.logs / f"sft_{name}.log"), "command": shlex.join(cmd)}  # fmt: skip

    def update_name(self, ratio: float, lr: str) -> str:
        """``update_r<R>``, plus ``_lr<LR>`` when the update's learning rate is not the base's."""
        return f"update_r{ratio:g}" + ("" if lr == self.o.learning_rate else f"_lr{lr}")

    def update(self, ratio: float, base: dict[str, Any], steps: int, lr: str) -> dict[str, Any]:
        """``swift-ssid update`` from base's checkpoint with ``--replay-ratio ratio`` (index version 2)."""
        o, m = self.o, self.model()
        name = self.update_name(ratio, lr)
        out = self.out / f"sft_{name}"
        sft_args = ["--max_length", str(o.max_length), *CPU_SFT]
        if o.tuner == "lora":
            sft_args += ["--lora_rank", str(o.lora_rank), "--lora_alpha", str(2 * o.lora_rank)]
        args = ["update", "--model", m["model"], "--model-type", m["model_type"], "--torch-dtype", "float32"]
        args += ["--template", m["template"], "--checkpoint", base["checkpoint"]]
        args += ["--index", str(self.index / "versions" / "0002"), "--collection", str(self.out / "new.jsonl")]
        args += ["--old-collection", str(self.out / "old.jsonl"), "--out", str(out), "--replay-ratio", f"{ratio:g}"]
        args += ["--seed", str(o.seed), "--tuner", o.tuner, "--max-steps", str(steps)]
        args += ["--learning-rate", lr, "--batch-size", str(o.batch_size)]
        args += [f"--sft-args={shlex.join(sft_args)}"]
        log = f"{name}.log"
        wall = self.run(swift_ssid_cmd(args), log)
        checkpoint = out / f"checkpoint-{steps}"
        if not checkpoint.is_dir():
            raise SystemExit(f"{name}: no {checkpoint}; see {self.logs / log}")
        said = re.search(r"(\d+) new \+ (\d+) replayed rows", (self.logs / log).read_text(encoding="utf-8"))
        rows = {"new_rows": int(said.group(1)), "replay_rows": int(said.group(2))} if said else {}
        return {"checkpoint": str(checkpoint), **rows, "steps": steps, "wall_s": round(wall, 1),
                "train_s": train_runtime(*sorted(out.glob("*.log")), self.logs / log),
                "command": shlex.join(["swift-ssid", *args])}  # fmt: skip

    # ------------------------------------------------------------ retrieval
    def retrieve(self, name: str, checkpoint: str, version: int, queries: str) -> dict[str, Any]:
        """``swift-ssid retrieve`` (K beams) of ``queries_<queries>.jsonl`` with index version ``version``."""
        o, m = self.o, self.model()
        run_file = self.out / f"run_{name}.jsonl"
        model = ["--model", m["model"], "--adapters", checkpoint] if o.tuner == "lora" else ["--model", checkpoint]
        args = ["retrieve", *model, "--model_type", m["model_type"], "--torch-dtype", "float32"]
        args += ["--template", m["template"], "--index", str(self.index / "versions" / f"{version:04d}")]
        args += ["--queries", str(self.out / f"queries_{queries}.jsonl"), "--k", str(o.k), "--target", "noreason"]
        args += ["--max-new-tokens", "16", "--batch-size", "16", "--out", str(run_file)]
        wall = self.run(swift_ssid_cmd(args), f"retrieve_{name}.log")
        result: dict[str, Any] = {"run": run_file.name, "retrieve_s": round(wall, 1)}
        for part in ("old", "new"):
            ids = {r["query_id"] for r in read_rows(self.out / f"queries_{part}.jsonl")}
            if queries in (part, "all"):
                result[part] = recall(run_file, ids)
        return result

    # ------------------------------------------------------------ index changes
    def add(self) -> dict[str, Any]:
        """``swift-ssid add`` the new images (skipped when a killed run already wrote version 2)."""
        from swift_ssid.core.index import index_version, load_index

        new = {it.image for it in load_collection(self.out / "new.jsonl")}
        if index_version(self.index) < 2 or not new <= {e.image for e in load_index(self.index).entries}:
            self.run(swift_ssid_cmd(["add", str(self.index), "--collection", str(self.out / "new.jsonl")]), "add.log")
        return {"version": index_version(self.index), "images": len(load_index(self.index).entries)}

    def remove(self, removed: list[str]) -> dict[str, Any]:
        """``swift-ssid remove`` the seeded 10% (skipped when a killed run already wrote version 3)."""
        from swift_ssid.core.index import index_version, load_index

        if index_version(self.index) < 3:
            listed = self.out / "removed.txt"
            write_text_atomic(listed, "\n".join(removed) + "\n")
            self.run(swift_ssid_cmd(["remove", str(self.index), "--images", str(listed)]), "remove.log")
        left = {e.image for e in load_index(self.index).entries}
        return {"version": index_version(self.index), "images": len(left), "still_indexed": sorted(set(removed) & left)}

    # ------------------------------------------------------------ the whole run
    def main(self) -> dict[str, Any]:
        o = self.o
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        load_start = self.step("started", lambda: {"load": os.getloadavg(), "at": time.ctime()})["load"]  # 1st run
        data = self.step("data", self.data)
        index_args = ["identifiers", "numeric", "--collection", str(self.out / "old.jsonl"), "--out", str(self.index)]
        self.step("index", lambda: {"wall_s": round(self.run(swift_ssid_cmd(index_args), "index.log"), 1)},
                  [self.index])  # fmt: skip
        base = self.step("base", lambda: self.sft("base", ("old",), o.steps), [self.out / "sft_base"])
        results = {"base": {**base, **self.step("retrieve_base", lambda: self.retrieve(
            "base", base["checkpoint"], 1, "old"), [self.out / "run_base.jsonl"])}}  # fmt: skip
        self.step("add", self.add)
        rows_all = self.n_rows(("old", "new"))
        full_steps = round(o.steps * rows_all / base["rows"])  # the same epochs as base
        update_steps = max(1, round(o.update_share * full_steps))
        for lr in o.update_learning_rates or (o.learning_rate,):
            for ratio in o.ratios:
                name = self.update_name(ratio, lr)
                trained = self.step(name, lambda r=ratio, x=lr: self.update(r, base, update_steps, x),
                                    [self.out / f"sft_{name}"])  # fmt: skip
                retrieved = self.step(f"retrieve_{name}", lambda c=trained["checkpoint"], n=name: self.retrieve(
                    n, c, 2, "all"), [self.out / f"run_{name}.jsonl"])  # fmt: skip
                results[name] = {**trained, **retrieved, "replay_ratio": ratio, "learning_rate": lr}
        full = self.step("full", lambda: self.sft("full", ("old", "new"), full_steps), [self.out / "sft_full"])
        results["full"] = {**full, **self.step("retrieve_full", lambda: self.retrieve(
            "full", full["checkpoint"], 2, "all"), [self.out / "run_full.jsonl"])}  # fmt: skip
        updates = [n for n in results if n.startswith("update_")]
        best = max(updates, key=lambda n: (results[n]["old"]["R@1"] + results[n]["new"]["R@1"], n))
        removal = self.step("remove", lambda: self.remove(data["removed"]))
        after = self.step("retrieve_removed", lambda: self.after_remove(results[best]["checkpoint"], data["removed"]),
                          [self.out / "run_removed.jsonl"])  # fmt: skip
        summary = self.summary(data, results, best, removal, after)
        machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
        summary["machine"] = {**machine, "load_start": load_start, "load_end": os.getloadavg()}
        summary["wall_s_this_invocation"] = round(time.perf_counter() - started, 1)
        marks = [read_json(m, {}) for m in (self.out / "steps").glob("*.json")]
        summary["wall_s_all_steps"] = round(sum(m.get("step_wall_s", 0.0) for m in marks), 1)  # over resumed runs
        summary["command"] = shlex.join([Path(sys.executable).name, *sys.argv])
        summary["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
        self.report(summary)
        return summary

    def n_rows(self, names: tuple[str, ...]) -> int:
        """Training rows of collections ``names``: one memorise row per image, one retrieve row per caption."""
        return sum(1 + len(it.captions) for name in names for it in load_collection(self.out / f"{name}.jsonl"))

    def after_remove(self, checkpoint: str, removed: list[str]) -> dict[str, Any]:
        """Every query again with the best update checkpoint and version 3: removed images in any ranked list."""
        result = self.retrieve("removed", checkpoint, 3, "all")
        rows = read_run(self.out / "run_removed.jsonl")
        gone = set(removed)
        hits = [r.query_id for r in rows if gone & set(r.images)]
        return {**result, "queries": len(rows), "lists_with_removed_image": len(hits), "checkpoint": checkpoint}

    # ------------------------------------------------------------ the result
    def summary(self, data: dict, results: dict[str, dict], best: str, removal: dict, after: dict) -> dict[str, Any]:
        """Conditions, chance levels, the issue's three targets per update and the removal check."""
        # the removal run is resumed from a first pass: name the update whose checkpoint it used, not today's best
        best = next((n for n, r in results.items() if r.get("checkpoint") == after.get("checkpoint")), best)
        n_old, n_all = data["old"], data["images"]
        chance = {
            "base (old images indexed)": {f"R@{k}": round(chance_hit_rate(k, n_old), 4) for k in KS},
            "after add": {f"R@{k}": round(chance_hit_rate(k, n_all), 4) for k in KS},
        }
        base, full = results["base"], results["full"]
        targets = {}
        for name, r in results.items():
            if not name.startswith("update_"):
                continue
            drop = round(100 * (base["old"]["R@1"] - r["old"]["R@1"]), 1)
            share = r["new"]["R@1"] / full["new"]["R@1"] if full["new"]["R@1"] else None
            time_share = r["train_s"] / full["train_s"] if r.get("train_s") and full.get("train_s") else None
            targets[name] = {
                "old_R@1_drop_points": drop,
                "old_drop_met (<= 2)": drop <= 2,
                "new_R@1_share_of_full": None if share is None else round(share, 3),
                "new_share_met (>= 0.9)": r["new"]["R@1"] >= 0.9 * full["new"]["R@1"],
                "train_time_share_of_full": None if time_share is None else round(time_share, 3),
                "wall_time_share_of_full": round(r["wall_s"] / full["wall_s"], 3),
                "time_met (<= 0.3)": time_share is not None and time_share <= 0.3,
            }
        removed = {**removal, **after, "removed": data["removed"]}
        return {"setting": self.o.setting, "data": data, "conditions": results, "chance": chance, "targets": targets,
                "best_update": best, "remove": removed}  # fmt: skip

    def report(self, s: dict[str, Any]) -> None:
        """``results_update_<setting>.json``, ``.md`` (the tables) and ``.png`` (old/new R@1 bars) under OUT."""
        stem = self.out / f"results_update_{self.o.setting}"
        write_json_atomic(stem.with_suffix(".json"), s)
        load = f"load {s['machine']['load_start'][0]:.1f} at start, {s['machine']['load_end'][0]:.1f} at the end"
        lines = [f"### Setting `{s['setting']}`", "", f"Command: `{s['command']}`", ""]
        lines += [f"Wall time of all steps: {s['wall_s_all_steps']} s; {s['machine']['cpus']} CPUs, {load}.", ""]
        lines += [
            "| condition | steps | train s | wall s | old R@1 | old R@5 | old R@10 | new R@1 | new R@5 | new R@10 |"
        ]
        lines += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in s["conditions"].items():
            cells = [f"{r[p][f'R@{k}']:.3f}" if p in r else "-" for p in ("old", "new") for k in KS]
            lines.append(f"| {name} | {r['steps']} | {r['train_s']} | {r['wall_s']} | {' | '.join(cells)} |")
        for label, c in s["chance"].items():
            cells = " | ".join(f"{c[f'R@{k}']:.3f}" for k in KS)
            lines.append(f"| chance, {label} | | | | {cells} | {cells} |")
        lines += ["", "| update | old R@1 drop (points) | <= 2 | new R@1 / full's | >= 0.9 | train time / full's "
                  "| wall / full's | <= 0.3 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, t in s["targets"].items():
            cells = [t[k] for k in t]
            lines.append(f"| {name} | " + " | ".join("yes" if c is True else "no" if c is False else str(c)
                                                      for c in cells) + " |")  # fmt: skip
        rm = s["remove"]
        lines += ["", f"Remove: {len(rm['removed'])} images, index version {rm['version']} ({rm['images']} images); "
                  f"{rm['queries']} queries retrieved with `{s['best_update']}`: "
                  f"{rm['lists_with_removed_image']} ranked lists hold a removed image."]  # fmt: skip
        write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(s["conditions"])
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
        for j, part in enumerate(("old", "new")):
            values = [s["conditions"][n].get(part, {}).get("R@1", 0.0) for n in names]
            ax.bar([i + (j - 0.5) * 0.38 for i in range(len(names))], values, 0.38, label=f"{part} queries")
        ax.axhline(s["chance"]["after add"]["R@1"], color="grey", linestyle="--", label="chance R@1 (after add)")
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_ylabel("R@1")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"swift-ssid add + update vs full retraining ({s['setting']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        plt.close(fig)
        print(stem.with_suffix(".md").read_text(encoding="utf-8"))


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="work folder (a re-run resumes it)")
    parser.add_argument("--images", type=int, help="images of the collection (demo: 12, text: 40)")
    parser.add_argument("--steps", type=int, help="base training steps S (full: the same epochs)")
    parser.add_argument("--ratios", type=float, nargs="+", help="--replay-ratio values of the updates")
    parser.add_argument("--update-share", type=float, default=0.25, help="update steps / full retraining's")
    parser.add_argument("--learning-rate")
    parser.add_argument("--update-learning-rates", nargs="+", help="the updates' learning rates (default: base's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--real-lm", default="", help="text: the LM folder (default: the real LM asset)")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("setting", "out")}
    settings = {**SETTINGS[args.setting], **given}
    if args.setting == "text" and not settings.get("real_lm"):
        from swift_ssid.testing.assets import real_lm_dir

        settings["real_lm"] = str(real_lm_dir())
    settings["ratios"] = tuple(settings["ratios"])
    settings["update_learning_rates"] = tuple(settings.get("update_learning_rates") or ())
    return Options(setting=args.setting, out=args.out, **settings)


if __name__ == "__main__":
    Bench(parse()).main()
