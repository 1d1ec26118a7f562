"""End to end: the whole SSID method through :class:`swift_ssid.workflows.pipeline.Pipeline` (what ``make demo`` runs).

For a tiny random Qwen2.5-VL and a tiny random LLaVA-NeXT, on the bundled demo collection (12 real photos,
8 train / 4 test, 5 captions each), one module-scoped run per family goes through the real commands:
``swift infer`` on the ``ssid-generate`` rows -> ``swift-ssid build-index`` (the random model's answers are
unusable, so the labelled caption-derived source builds the index) -> ``swift sft --dataset ssid-memorize
ssid-retrieve`` (4 steps; LoRA for Qwen2.5-VL, full fine-tuning as in the demo for LLaVA-NeXT, so both retrieve
branches run) -> ``swift-ssid retrieve`` (K beams) -> ``swift-ssid evaluate`` / ``report``; then an extra
``swift infer`` on the fine-tuned checkpoint with ``SSID_INDEX`` set, and two resumed ``run_all()`` calls.

Stage 1 also resumes: the fixture leaves a killed run's partial result file (3 answered images and a torn
last line), so ``swift infer`` runs only for the 9 others.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from e2e_helpers import TINY_MODEL_ENV, read_jsonl, swift, write_jsonl

from swift_ssid.core.caption_identifiers import SOURCE_LABEL, caption_identifier
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex
from swift_ssid.core.metrics import evaluate_run
from swift_ssid.core.runs import read_run
from swift_ssid.integration.datasets import query_rows
from swift_ssid.testing.tiny_models import BUILDERS, SFT_CPU_FLAGS
from swift_ssid.workflows.demo import DEMO_COLLECTION, demo_config
from swift_ssid.workflows.pipeline import Pipeline, PipelineConfig

pytestmark = pytest.mark.slow

FAMILIES = ("qwen2_5_vl", "llava_next")
TUNER = {"qwen2_5_vl": "lora", "llava_next": "full"}
K = 5
STEPS = 4
N_TEST_CAPTIONS = 20  # 4 test images x 5 captions
SEEDED = 3  # images answered by the "killed" earlier stage-1 run
KEPT_RUN_ROWS = 15  # run-file rows left by the "killed" earlier retrieve


def sft_flags(tuner: str) -> list[str]:
    """A 4-step ``swift sft`` on CPU with the given tuner (``lora`` or ``full``)."""
    flags = list(SFT_CPU_FLAGS)
    flags[flags.index("--tuner_type") + 1] = tuner
    return [
        *flags,
        *("--max_steps", str(STEPS), "--save_steps", str(STEPS), "--per_device_train_batch_size", "2"),
        *("--learning_rate", "1e-4", "--logging_steps", "1", "--seed", "0"),
    ]


@dataclass
class E2ERun:
    """What one family's pipeline run left behind, for the asserting tests."""

    family: str
    config: PipelineConfig
    work: Path
    first: dict  # summary of the first run_all()
    resumed: dict  # summary of run_all() after the run file lost its last rows
    finished: dict  # summary of run_all() on a finished work folder
    run_before_resume: str  # run.jsonl text after the first run
    run_after_resume: str
    run_after_finished: str
    infer_results: Path  # `swift infer` with SSID_INDEX on the fine-tuned model
    seeded_images: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def index(self) -> IdentifierIndex:
        return IdentifierIndex.load(self.work / "index")


def seed_killed_generate(work: Path, images: list[str]) -> None:
    """Leave what a killed stage-1 ``swift infer`` leaves: a few result rows and a torn last line."""
    rows = [
        {
            "response": "",
            "labels": None,
            "logprobs": None,
            "messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant", "content": ""}],
            "images": [{"bytes": None, "path": image}],
            "seeded_by_test": True,
        }
        for image in images
    ]
    path = write_jsonl(work / "generate" / "results.partial.jsonl", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"response": "caption:a pho')


@pytest.fixture(scope="module", params=FAMILIES)
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> E2ERun:
    """One pipeline run per family, resumed twice, plus ``swift infer`` with the index (about 3-4 min each)."""
    family = request.param
    root = tmp_path_factory.mktemp(f"e2e_{family}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    model_dir = BUILDERS[family](root / "model")
    seconds["build_model"] = time.perf_counter() - start

    work = root / "work"
    # The demo's settings (template, model flags, environment, collection), with a shorter run.
    config = replace(
        demo_config(work, family, model_dir),
        sft_flags=sft_flags(TUNER[family]),
        k=K,
        generate_max_new_tokens=16,  # the random model's answers are unusable at any length
        retrieve_max_new_tokens=24,  # identifiers are at most 12 tokens (+ the newline) with either tokenizer
    )
    config.env.update(TINY_MODEL_ENV)
    seeded = [item.image for item in load_collection(DEMO_COLLECTION)[:SEEDED]]
    seed_killed_generate(work, seeded)

    t = time.perf_counter()
    first = Pipeline(config).run_all()
    seconds["pipeline"] = time.perf_counter() - t
    run_file = work / "run.jsonl"
    run_before = run_file.read_text(encoding="utf-8")

    # swift infer on the fine-tuned model, the ssid-query dataset, the trie constraint from SSID_INDEX.
    ckpt = Path(first["stages"]["train"]["checkpoint"])
    model_args = ["--adapters", str(ckpt)] if TUNER[family] == "lora" else ["--model", str(ckpt)]
    infer_results = work / "infer_with_index.jsonl"
    seconds["swift_infer"] = swift(
        "infer",
        [*model_args, "--val_dataset", "ssid-query", "--result_path", str(infer_results), "--max_new_tokens", "24"],
        work / "logs" / "extra_swift_infer.log",
        plugin=False,  # the checkpoint's args.json names the plugin file; swift infer re-imports it
        SSID_INDEX=str(work / "index"),
        SSID_COLLECTION=str(DEMO_COLLECTION),
    )

    # A retrieve killed after 15 queries, mid-way through writing the 16th row.
    lines = run_before.splitlines(keepends=True)
    run_file.write_text("".join(lines[:KEPT_RUN_ROWS]) + lines[KEPT_RUN_ROWS][:40], encoding="utf-8")
    t = time.perf_counter()
    resumed = Pipeline(config).run_all()
    seconds["resume"] = time.perf_counter() - t
    run_after_resume = run_file.read_text(encoding="utf-8")

    t = time.perf_counter()
    finished = Pipeline(config).run_all()
    seconds["rerun_finished"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    print(f"\n[e2e {family}] wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"[e2e {family}] stages: {json.dumps(first['stages'])}")
    return E2ERun(
        family=family,
        config=config,
        work=work,
        first=first,
        resumed=resumed,
        finished=finished,
        run_before_resume=run_before,
        run_after_resume=run_after_resume,
        run_after_finished=run_file.read_text(encoding="utf-8"),
        infer_results=infer_results,
        seeded_images=seeded,
        seconds=seconds,
    )


def test_stage1_resumes_and_keeps_one_answer_per_image(e2e: E2ERun) -> None:
    results = read_jsonl(e2e.work / "generate" / "results.jsonl")
    collection = [item.image for item in load_collection(DEMO_COLLECTION)]
    assert sorted(row["images"][0]["path"] for row in results) == sorted(collection)
    assert [row["images"][0]["path"] for row in results if row.get("seeded_by_test")] == e2e.seeded_images
    asked = [row["images"][0] for row in read_jsonl(e2e.work / "generate" / "rows.jsonl")]
    assert asked == collection[SEEDED:], "swift infer must run only for the images without an answer"
    assert e2e.first["stages"]["generate"]["answered_before"] == SEEDED
    assert not (e2e.work / "generate" / "results.partial.jsonl").exists()


def test_build_index_reports_unusable_answers_and_the_fallback_is_recorded(e2e: E2ERun) -> None:
    stats = json.loads((e2e.work / "index_model" / "stats.json").read_text())
    assert stats["images"] == 12
    assert stats["valid"] / stats["images"] < e2e.config.min_valid_share, "a random tiny model wrote usable answers?"
    assert stats["invalid"] == stats["images"] - stats["valid"] > 0
    assert sum(stats["invalid_by_reason"].values()) >= stats["invalid"]  # every rejection names its reason
    assert len(read_jsonl(e2e.work / "index_model" / "regenerate.jsonl")) == stats["invalid"]

    index_stage = e2e.first["stages"]["index"]
    assert index_stage["source"] == SOURCE_LABEL
    assert index_stage["model_answers"] == {
        "images": stats["images"],
        "valid": stats["valid"],
        "valid_share": stats["valid"] / stats["images"],
    }
    assert e2e.first["identifier_source"] == SOURCE_LABEL
    saved = json.loads((e2e.work / "summary.json").read_text())
    assert saved["identifier_source"] == SOURCE_LABEL and saved["stages"]["index"]["source"] == SOURCE_LABEL

    # The index actually used holds every image with the caption-derived identifier of its first caption.
    expected = {item.image: caption_identifier(item.captions[0]) for item in load_collection(DEMO_COLLECTION)}
    assert {entry.image: entry.identifier for entry in e2e.index.entries} == expected
    assert SOURCE_LABEL in (e2e.work / "report.html").read_text(encoding="utf-8")


def test_sft_trained_on_the_registered_memorize_and_retrieve_datasets(e2e: E2ERun) -> None:
    ckpt = Path(e2e.first["stages"]["train"]["checkpoint"])
    assert ckpt.name == f"checkpoint-{STEPS}"
    args = json.loads((ckpt / "args.json").read_text())
    assert args["dataset"] == ["ssid-memorize", "ssid-retrieve"] and args["tuner_type"] == TUNER[e2e.family]
    log = (e2e.work / "logs" / "3_sft.log").read_text(encoding="utf-8")
    assert "ssid-memorize: 12 rows" in log  # standard protocol: 8 train + 4 test images memorised
    assert "ssid-retrieve: 40 rows" in log  # 8 train images x 5 captions
    steps = [json.loads(line) for line in (ckpt.parent / "logging.jsonl").read_text().splitlines()]
    assert any(row.get("global_step/max_steps") == f"{STEPS}/{STEPS}" and "loss" in row for row in steps)
    if e2e.family == "qwen2_5_vl":  # LoRA: B starts at zero, so any non-zero entry means the steps updated it
        from safetensors.torch import load_file

        lora_b = [t for name, t in load_file(str(ckpt / "adapter_model.safetensors")).items() if "lora_B" in name]
        assert lora_b and any(t.abs().sum() > 0 for t in lora_b)


def test_retrieve_returns_k_indexed_identifiers_per_test_caption(e2e: E2ERun) -> None:
    index = e2e.index
    rows = read_run(e2e.work / "run.jsonl")
    expected = query_rows(load_collection(DEMO_COLLECTION))
    assert [row.query_id for row in rows] == [q["query_id"] for q in expected]
    assert [row.gold_images for row in rows] == [q["gold_images"] for q in expected]
    for row in rows:
        assert len(row.identifiers) == K == len(set(row.identifiers)), row.identifiers
        assert all(identifier in index for identifier in row.identifiers), row.identifiers
        assert row.unknown_identifiers == []
        assert row.images == [image for i in row.identifiers for image in index.images_for(i)]
        assert row.scores == sorted(row.scores, reverse=True)  # beam order
        assert row.setting["k"] == K


def test_swift_infer_with_ssid_index_writes_only_indexed_identifiers(e2e: E2ERun) -> None:
    index = e2e.index
    results = read_jsonl(e2e.infer_results)
    queries = read_jsonl(e2e.work / "queries.jsonl")
    assert [row["messages"][0]["content"] for row in results] == [q["messages"][0]["content"] for q in queries]
    for row in results:
        response = row["response"]
        assert response.startswith("identifier:"), response
        identifier = response[len("identifier:") :].split("\n", 1)[0]
        assert identifier in index, (identifier, index.identifiers())


def test_evaluate_reports_recall_at_1_5_10(e2e: E2ERun) -> None:
    metrics = json.loads((e2e.work / "metrics.json").read_text())
    assert metrics["n_queries"] == N_TEST_CAPTIONS and metrics["missing_queries"] == []
    assert 0.0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 1.0
    assert metrics["unknown_identifier_rate"] == 0.0
    recomputed = evaluate_run(read_run(e2e.work / "run.jsonl")).to_dict()
    assert {k: metrics[k] for k in ("R@1", "R@5", "R@10")} == {k: recomputed[k] for k in ("R@1", "R@5", "R@10")}
    assert e2e.first["metrics"]["R@1"] == metrics["R@1"]


def test_resume_skips_finished_stages_and_completes_the_run_file_without_duplicates(e2e: E2ERun) -> None:
    for stage in ("generate", "index", "train"):
        assert e2e.resumed["stages"][stage]["skipped"] is True
        assert e2e.finished["stages"][stage]["skipped"] is True
    # Skipped stages keep what their run recorded.
    assert e2e.resumed["stages"]["index"]["source"] == SOURCE_LABEL
    assert e2e.resumed["stages"]["index"]["model_answers"] == e2e.first["stages"]["index"]["model_answers"]
    assert e2e.finished["stages"]["train"]["checkpoint"] == e2e.first["stages"]["train"]["checkpoint"]

    before = e2e.run_before_resume.splitlines()
    after = e2e.run_after_resume.splitlines()
    assert after[:KEPT_RUN_ROWS] == before[:KEPT_RUN_ROWS]  # finished rows untouched
    ids = [json.loads(line)["query_id"] for line in after]
    assert len(ids) == len(set(ids)) == N_TEST_CAPTIONS
    assert ids == [json.loads(line)["query_id"] for line in before]
    assert "skipped" not in e2e.resumed["stages"]["retrieve"]
    assert e2e.resumed["metrics"]["n_queries"] == N_TEST_CAPTIONS

    # A finished work folder: retrieve is skipped too, and nothing changes.
    assert e2e.finished["stages"]["retrieve"]["skipped"] is True
    assert e2e.run_after_finished == e2e.run_after_resume
    assert e2e.finished["metrics"] == e2e.resumed["metrics"]
