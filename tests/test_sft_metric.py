"""``--eval_metric ssid_recall``: R@1/5/10 from K constrained beams during ``swift sft`` validation.

Fast tests cover decoding the serialised run rows, the one R@K, registration, and the metric's argument
checks. The slow test trains a tiny random Qwen2 text model (``swift_ssid.testing.tiny_models``) with the real
``swift sft`` CLI and checks the logged R@K against ``evaluate_run`` on the metric's own run files, the
step-0 beams against ``swift_ssid.integration.retrieval.Retriever`` on the untrained model, and checkpoint selection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from swift.utils import Serializer
from torch.nn.utils.rnn import pad_sequence

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.metrics import evaluate_run
from swift_ssid.core.runs import RunRow, read_run
from swift_ssid.integration.sft_metric import (
    METRIC_NAME,
    SSIDRecallMetrics,
    metrics_from_rows,
    register_metrics,
    rows_from_predictions,
)
from swift_ssid.testing.tiny_models import OFFLINE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = REPO_ROOT / "templates" / "ssid_templates.py"
SWIFT = Path(sys.executable).with_name("swift")
OFFLINE = OFFLINE_ENV  # the environment every swift call on a tiny model needs
IMAGES = {
    "img0.jpg": "dog - park - ball",
    "img1.jpg": "two men - street",
    "img2.jpg": "girl - red dress",
    "img3.jpg": "man - bicycle - road",
    "img4.jpg": "children - beach",
    "img5.jpg": "woman - kitchen",
    "img6.jpg": "dog - park - ball",
    "img7.jpg": "brown dog - snow",
    "img8.jpg": "boy - swimming pool",
    "img9.jpg": "old man - bench",
    "img10.jpg": "cat - sofa",
    "img11.jpg": "horse - field",
}
CAPTIONS = {
    "img0.jpg": "A dog chases a ball in the park.",
    "img1.jpg": "Two men walk down a street.",
    "img2.jpg": "A girl in a red dress.",
    "img3.jpg": "A man rides a bicycle.",
    "img10.jpg": "A cat sleeps on a sofa.",
}
PROMPT = "Which image matches this caption? "
K = 10
MAX_NEW_TOKENS = 24


def row(query_id: str, images: list[str], gold: list[str]) -> RunRow:
    return RunRow(query_id, "a query", gold, [f"id{i}" for i in range(len(images))], [0.0] * len(images),
                  [None] * len(images), images)  # fmt: skip


def serialised(rows: list) -> torch.Tensor:
    """Rows as the metric's prediction step returns them (Serializer bytes, right-padded)."""
    return pad_sequence([Serializer.to_tensor(r) for r in rows], batch_first=True, padding_value=0)


# ---------------------------------------------------------------- decoding and scoring


def test_rows_from_predictions_decodes_and_drops_repeated_queries():
    rows = [row("q0", ["a", "g0"], ["g0"]), row("q1", ["b"], ["g1"]), row("q2", ["g2"], ["g2"])]
    padded = serialised([r.to_dict() for r in rows] + [rows[1].to_dict()])  # q1 again, as DDP padding repeats
    decoded = rows_from_predictions(padded.numpy())
    assert [r.to_dict() for r in decoded] == [r.to_dict() for r in rows]
    metrics = metrics_from_rows(decoded)
    expected = evaluate_run(rows).to_dict()
    assert metrics == {key: expected[key] for key in ("R@1", "R@5", "R@10", "unknown_identifier_rate")}
    assert metrics["R@1"] == 1 / 3 and metrics["R@5"] == 2 / 3


def test_rows_from_predictions_rejects_greedy_text_predictions():
    with pytest.raises(ValueError, match="--eval_metric ssid_recall --predict_with_generate true"):
        rows_from_predictions(serialised(["identifier:dog - park - ball"]).numpy())


# ---------------------------------------------------------------- registration and checks


def test_registered_in_ms_swift_eval_metrics_map_once():
    from swift.metrics import eval_metrics_map

    import swift_ssid.integration.register  # noqa: F401

    assert eval_metrics_map[METRIC_NAME] is SSIDRecallMetrics
    with pytest.raises(ValueError, match="already registered"):
        register_metrics()


def test_metric_needs_generation_an_index_and_an_ssid_template(tmp_path, monkeypatch):
    IdentifierIndex([IndexEntry("a.jpg", "dog - park", "ok")]).save(tmp_path / "index")
    args = SimpleNamespace(predict_with_generate=False, metric_for_best_model=None)
    trainer = SimpleNamespace(template=object(), prediction_step=None)
    with pytest.raises(ValueError, match="--predict_with_generate true"):
        SSIDRecallMetrics(args, trainer)
    args.predict_with_generate = True
    monkeypatch.delenv("SSID_INDEX", raising=False)
    with pytest.raises(ValueError, match="SSID_INDEX"):
        SSIDRecallMetrics(args, trainer)
    monkeypatch.setenv("SSID_INDEX", str(tmp_path / "index"))
    with pytest.raises(ValueError, match="needs an SSID template"):
        SSIDRecallMetrics(args, trainer)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("rouge-l", "R@1"), ("eval_rouge-l", "R@1"), ("R@5", "R@5"), ("eval_R@10", "eval_R@10"), (None, None)],
)
def test_metric_for_best_model_defaults_to_r_at_1(given, kept):
    args = SimpleNamespace(metric_for_best_model=given)
    SSIDRecallMetrics._check_best_metric(args)
    assert args.metric_for_best_model == kept


def test_metric_for_best_model_it_does_not_report_is_an_error():
    with pytest.raises(ValueError, match="R@1, R@5, R@10"):
        SSIDRecallMetrics._check_best_metric(SimpleNamespace(metric_for_best_model="bleu-4"))


# ---------------------------------------------------------------- the real swift sft


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_swift_sft_logs_r_at_k_from_k_constrained_beams(tmp_path):
    from swift.infer_engine import TransformersEngine

    import swift_ssid.integration.register  # noqa: F401  (the SSID templates, for the in-process retriever)
    from swift_ssid.core.queries import query_from_row
    from swift_ssid.integration.retrieval import Retriever
    from swift_ssid.integration.settings import SSIDSettings
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    model_dir = build_tiny_qwen2_text(tmp_path / "tiny")
    IdentifierIndex([IndexEntry(image, ident, "ok") for image, ident in IMAGES.items()]).save(tmp_path / "index")
    train = [
        {"messages": [{"role": "user", "content": PROMPT + caption},
                      {"role": "assistant", "content": f"identifier:{IMAGES[image]}\nreason:It shows that."}]}
        for image, caption in CAPTIONS.items()
    ]  # fmt: skip
    val = [
        {"messages": [{"role": "user", "content": PROMPT + CAPTIONS[image]}], "query_id": f"v{i}",
         "query": CAPTIONS[image], "gold_images": [image]}
        for i, image in enumerate(["img0.jpg", "img1.jpg", "img2.jpg"])
    ]  # fmt: skip
    val.append(train[-1])  # a row with a target instead of gold images: gold = its identifier's images
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "val.jsonl", val)
    out = tmp_path / "out"
    env = {**os.environ, **OFFLINE, "SSID_INDEX": str(tmp_path / "index"), "SSID_INFER_REASON": "false"}
    cmd = [
        str(SWIFT), "sft", "--custom_register_path", str(PLUGIN), "--model", str(model_dir), "--model_type", "qwen2",
        "--template", "ssid_qwen2_5", "--torch_dtype", "float32", "--dataset", str(tmp_path / "train.jsonl"),
        "--val_dataset", str(tmp_path / "val.jsonl"), "--remove_unused_columns", "false",
        "--predict_with_generate", "true", "--eval_metric", METRIC_NAME, "--num_beams", str(K),
        "--max_new_tokens", str(MAX_NEW_TOKENS), "--metric_for_best_model", "R@5", "--eval_on_start", "true",
        "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "1", "--output_dir", str(out), "--tuner_type", "lora", "--check_model", "false",
        "--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0", "--report_to", "none",
        "--add_version", "false", "--save_only_model", "true",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    evals = {h["step"]: h for h in state["log_history"] if "eval_R@1" in h}
    assert sorted(evals) == [0, 1]  # --eval_on_start, then step 1
    runs = {step: read_run(out / METRIC_NAME / f"run-step{step}.jsonl") for step in evals}
    for step, logged in evals.items():
        expected = evaluate_run(runs[step]).to_dict()
        for key in ("R@1", "R@5", "R@10", "unknown_identifier_rate"):
            assert logged[f"eval_{key}"] == expected[key], (step, key)
    assert state["best_metric"] == max(h["eval_R@5"] for h in evals.values())
    assert state["best_model_checkpoint"] == str(out / "checkpoint-1")

    step0 = runs[0]
    assert [r.query_id for r in step0[:3]] == ["v0", "v1", "v2"]
    assert step0[3].gold_images == ["img10.jpg"]  # from the target identifier "cat - sofa"
    assert all(len(r.identifiers) == K and not r.unknown_identifiers for r in step0)
    assert all(r.setting == {"reason": "train-only", "k": K} for r in step0)

    # at step 0 the LoRA update is zero: the metric's beams are swift_ssid.integration.retrieval's on the base model
    engine = TransformersEngine(
        str(model_dir), model_type="qwen2", template_type="ssid_qwen2_5", torch_dtype=torch.float32, max_batch_size=1
    )
    settings = SSIDSettings(index_dir=tmp_path / "index", infer_reason=False)
    retriever = Retriever(engine, settings, k=K, max_new_tokens=MAX_NEW_TOKENS)
    val[-1] = {**val[-1], "query_id": "target-row", "gold_images": ["img10.jpg"]}
    queries = [query_from_row(r, i, "val.jsonl") for i, r in enumerate(val, start=1)]
    retrieved = [retriever.retrieve_batch([q])[0] for q in queries]  # one query per batch, as in the metric
    assert [r.identifiers for r in retrieved] == [r.identifiers for r in step0]
