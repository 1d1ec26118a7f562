"""``swift eval`` with the evalscope benchmark ``ssid_retrieval``: R@1/5/10, the same numbers everywhere.

Fast tests cover run rows from K answers, where the queries come from, the adapter's scoring on real
evalscope objects, the plugin's lazy registration, and the two ms-swift 4.6.0 / evalscope 1.14 shims
(``tests/test_compat.py`` fails once a shim can be deleted). The slow test runs the real ``swift
eval`` (deploy server + evalscope) and ``swift-ssid retrieve`` / ``evaluate`` on a tiny random Qwen2
text model (``swift_ssid.testing.tiny_models``) and checks that all of them, and the sft metric's scoring of
the same predictions, agree to the last digit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.metrics import DEFAULT_KS, evaluate_run
from swift_ssid.core.queries import Query
from swift_ssid.core.runs import RunRow, read_run
from swift_ssid.integration import evalscope_benchmark as eb
from swift_ssid.integration.retrieval import run_setting
from swift_ssid.integration.settings import SSIDSettings
from swift_ssid.testing.tiny_models import OFFLINE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = REPO_ROOT / "templates" / "ssid_templates.py"
BIN = Path(sys.executable).parent
OFFLINE = OFFLINE_ENV  # the environment every swift call on a tiny model needs
# image -> identifier; img6 shares img0's identifier, so one identifier expands to two images
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
QUERIES = [
    {"query_id": "q0", "query": "A dog chases a ball in the park.", "gold_images": ["img0.jpg"]},
    {"query_id": "q1", "query": "Two men walk down a street.", "gold_images": ["img1.jpg"]},
    {"query_id": "q2", "query": "A cat sleeps on a sofa.", "gold_images": ["img10.jpg"]},
]
K = 10
MAX_TOKENS = 24


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """An index (12 images, one shared identifier) and a 3-query file."""
    root = tmp_path_factory.mktemp("swift_eval")
    IdentifierIndex([IndexEntry(image, ident, "ok") for image, ident in IMAGES.items()]).save(root / "index")
    write_jsonl(root / "queries.jsonl", QUERIES)
    return root


@pytest.fixture(scope="module")
def registered():
    """evalscope imported and ``ssid_retrieval`` registered in this process (shims applied)."""
    import evalscope  # noqa: F401
    from evalscope.api.registry import BENCHMARK_REGISTRY

    if not BENCHMARK_REGISTRY.is_materialized(eb.BENCHMARK_NAME):
        eb.register_benchmark()
    return BENCHMARK_REGISTRY


# ---------------------------------------------------------------- run rows and queries


def test_run_row_from_texts_drops_padding_beams_and_expands_shared_identifiers():
    index = IdentifierIndex([IndexEntry(image, ident, "ok") for image, ident in IMAGES.items()])
    query = Query("q0", "A dog.", ["img6.jpg"], [])
    texts = [
        "identifier:two men - street\nreason:Two men.",
        "identifier:Dog - Park - Ball",  # canonicalised; expands to img0 and img6
        "identifier:Dog - Park - Ball",  # a padding beam: same text again
        "identifier:unicorn - moon",  # not in the index
    ]
    row = eb.run_row_from_texts(query, texts, index.images_for, {"reason": "train+infer", "k": 4})
    assert row.identifiers == ["two men - street", "dog - park - ball", "unicorn - moon"]
    assert row.reasons == ["Two men.", None, None]
    assert row.images == ["img1.jpg", "img0.jpg", "img6.jpg"]
    assert row.unknown_identifiers == ["unicorn - moon"]
    assert row.scores == [0.0, -1.0, -2.0]
    assert row.to_dict()["score_kind"] == "beam_rank"
    assert evaluate_run([row]).r_at(1) == 0.0 and evaluate_run([row]).r_at(5) == 1.0


def test_run_setting_names_the_reason_mode():
    from swift_ssid.integration.settings import SSIDSettings

    assert run_setting(SSIDSettings(), 10) == {"reason": "train+infer", "k": 10}
    assert run_setting(SSIDSettings(infer_reason=False), 5) == {"reason": "train-only", "k": 5}
    assert run_setting(SSIDSettings(target="noreason"), 1) == {"reason": "none", "k": 1}


def test_queries_from_a_file_and_from_ssid_query(workdir, monkeypatch):
    queries = eb.load_benchmark_queries(str(workdir / "queries.jsonl"))
    assert [q.query_id for q in queries] == ["q0", "q1", "q2"]
    prompt = "Which image matches this caption? " + QUERIES[0]["query"]
    assert queries[0].messages == [{"role": "user", "content": prompt}]

    demo = REPO_ROOT / "swift_ssid" / "data" / "demo" / "collection.jsonl"
    monkeypatch.setenv("SSID_COLLECTION", str(demo))
    from_dataset = eb.load_benchmark_queries(eb.DEFAULT_QUERIES)
    tests = [json.loads(line) for line in demo.read_text().splitlines() if json.loads(line)["split"] == "test"]
    assert len(from_dataset) == sum(len(t["captions"]) for t in tests)
    assert from_dataset[0].query_id == "coffee#0" and from_dataset[0].query == tests[0]["captions"][0]
    assert from_dataset[0].gold_images == [str(demo.parent / tests[0]["image"])]


def test_queries_errors_name_the_fix(workdir, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="local_path"):
        eb.load_benchmark_queries(str(tmp_path / "missing.jsonl"))
    image_query = {
        "messages": [{"role": "user", "content": "<image>Which?"}],
        "images": ["a.jpg"],
        "gold_images": ["a.jpg"],
    }
    with pytest.raises(ValueError, match="text queries only"):
        eb.load_benchmark_queries(str(write_jsonl(tmp_path / "q.jsonl", [image_query])))
    monkeypatch.delenv("SSID_COLLECTION", raising=False)
    with pytest.raises(ValueError, match="SSID_COLLECTION"):
        eb.load_benchmark_queries(eb.DEFAULT_QUERIES)


# ---------------------------------------------------------------- registration


def test_plugin_registers_without_importing_evalscope_unless_it_is_loaded():
    """sft/infer pay nothing for the benchmark; once evalscope is loaded (as swift eval does first) it registers."""
    script = (
        "import sys, json\n"
        "import swift_ssid.integration.register\n"
        "from swift.metrics import eval_metrics_map\n"
        "from swift_ssid.integration import evalscope_benchmark as eb\n"
        "out = {'evalscope_after_plugin': 'evalscope' in sys.modules, 'metric': 'ssid_recall' in eval_metrics_map}\n"
        "import evalscope\n"
        "from evalscope.api.registry import BENCHMARK_REGISTRY\n"
        "out['registered_by_plugin'] = BENCHMARK_REGISTRY.is_materialized('ssid_retrieval')\n"
        "out['registers_once_loaded'] = eb.register_if_evalscope_loaded()\n"
        "out['registered'] = BENCHMARK_REGISTRY.is_materialized('ssid_retrieval')\n"
        "from swift_ssid.integration.compat import applied_eval_shims\nout['shims'] = applied_eval_shims()\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.rsplit("RESULT ", 1)[1]) == {
        "evalscope_after_plugin": False,
        "metric": True,
        "registered_by_plugin": False,
        "registers_once_loaded": True,
        "registered": True,
        "shims": {"eval_type_service": True, "list_eval_dataset": True},
    }


def test_second_registration_fails_loudly(registered):
    with pytest.raises(ValueError, match="already registered"):
        eb.register_benchmark()


# ---------------------------------------------------------------- the adapter on real evalscope objects


def test_adapter_scores_k_answers_with_evaluate_run(registered, workdir, tmp_path, monkeypatch):
    from evalscope.api.evaluator import TaskState
    from evalscope.api.messages import ChatMessageAssistant
    from evalscope.api.model import ModelOutput
    from evalscope.api.model.model_output import ChatCompletionChoice
    from evalscope.api.registry import get_benchmark
    from evalscope.config import TaskConfig

    monkeypatch.setenv("SSID_INDEX", str(workdir / "index"))
    monkeypatch.setenv("SSID_INFER_REASON", "false")
    config = TaskConfig(
        model="tiny",
        eval_type="openai_api",
        api_url="http://127.0.0.1:9/v1",
        datasets=[eb.BENCHMARK_NAME],
        dataset_args={eb.BENCHMARK_NAME: {"local_path": str(workdir / "queries.jsonl"), "extra_params": {"k": 3}}},
        work_dir=str(tmp_path),
    )
    adapter = get_benchmark(eb.BENCHMARK_NAME, config)
    assert adapter.k == 3 and adapter.max_tokens == eb.DEFAULT_MAX_TOKENS
    samples = list(adapter.load_dataset()["default"])
    assert [s.metadata["query_id"] for s in samples] == ["q0", "q1", "q2"]
    answers = [  # gold at image rank 2, 4 (after the shared identifier's two images), none
        ["two men - street", "dog - park - ball", "cat - sofa"],
        ["dog - park - ball", "cat - sofa", "two men - street"],
        ["horse - field", "girl - red dress", "boy - swimming pool"],
    ]
    scores = []
    for sample, idents in zip(samples, answers, strict=True):
        choices = [ChatCompletionChoice(message=ChatMessageAssistant(content=f"identifier:{i}")) for i in idents]
        output = ModelOutput(model="tiny", choices=choices)
        state = TaskState(model="tiny", sample=sample, output=output, completed=True)
        scores.append(adapter.calculate_metrics(state))
    assert [s.score.value["recall"] for s in scores] == [0.0, 0.0, 0.0]
    assert [s.score.metadata["first_relevant_rank"] for s in scores] == [2, 4, None]

    agg = adapter.aggregate_subset("default", scores)
    rows = [RunRow.from_dict(s.score.metadata["run_row"]) for s in scores]
    expected = evaluate_run(rows).to_dict()
    recall = {a.dimensions["k"]: a.score for a in agg if a.metric_name == "recall"}
    assert recall == {k: expected[f"R@{k}"] for k in DEFAULT_KS} == {1: 0.0, 5: 2 / 3, 10: 2 / 3}
    assert all(a.aggregation == "mean" for a in agg)

    report = adapter.generate_report({"default": agg}, model_name="tiny", output_dir=str(tmp_path))
    assert report.primary_metric_identity.name == "recall"
    assert report.primary_metric_identity.dimensions == {"k": 1}
    run = read_run(tmp_path / "ssid_retrieval_default_run.jsonl")
    assert [r.to_dict() for r in run] == [r.to_dict() for r in rows]
    assert run[0].setting == {"reason": "train-only", "k": 3}


def test_adapter_rejects_repeats_and_a_missing_index(registered, workdir, tmp_path, monkeypatch):
    from evalscope.api.registry import get_benchmark
    from evalscope.config import TaskConfig

    def adapter(**kw):
        return get_benchmark(
            eb.BENCHMARK_NAME,
            TaskConfig(
                model="tiny",
                eval_type="openai_api",
                api_url="http://127.0.0.1:9/v1",
                datasets=[eb.BENCHMARK_NAME],
                dataset_args={eb.BENCHMARK_NAME: {"local_path": str(workdir / "queries.jsonl")}},
                work_dir=str(tmp_path),
                **kw,
            ),
        )

    monkeypatch.delenv("SSID_INDEX", raising=False)
    with pytest.raises(ValueError, match="SSID_INDEX"):
        adapter().load_dataset()
    monkeypatch.setenv("SSID_INDEX", str(workdir / "index"))
    with pytest.raises(ValueError, match="not repeats"):
        adapter(repeats=2).load_dataset()


# ---------------------------------------------------------------- compatibility shims


def test_shims_let_ms_swift_build_its_native_eval_task(registered, tmp_path):
    from evalscope.constants import EvalType
    from swift.arguments import EvalArguments
    from swift.pipelines.eval.eval import SwiftEval

    natives = EvalArguments.list_eval_dataset("Native")["Native"]
    assert eb.BENCHMARK_NAME in natives and "gsm8k" in natives
    with pytest.raises(ModuleNotFoundError):
        EvalArguments.list_eval_dataset("OpenCompass")  # that backend really needs opencompass

    pipeline = SwiftEval.__new__(SwiftEval)  # only get_native_task_cfg runs; it reads these EvalArguments fields
    pipeline.args = SimpleNamespace(
        model_suffix="tiny",
        api_key=None,
        eval_output_dir=str(tmp_path),
        eval_limit=2,
        eval_num_proc=1,
        eval_dataset_args={eb.BENCHMARK_NAME: {"extra_params": {"k": 4}}},
        eval_generation_config={},
        extra_eval_args={},
    )
    task = pipeline.get_native_task_cfg([eb.BENCHMARK_NAME], "http://127.0.0.1:8000/v1")
    assert task.eval_type == EvalType.OPENAI_API
    assert task.api_url == "http://127.0.0.1:8000/v1" and task.datasets == [eb.BENCHMARK_NAME]
    assert task.dataset_args[eb.BENCHMARK_NAME] == {"extra_params": {"k": 4}}


# ---------------------------------------------------------------- recipes


EVAL_RECIPES = sorted((REPO_ROOT / "recipes").glob("eval_*.yaml"))


@pytest.mark.parametrize("recipe", EVAL_RECIPES, ids=lambda p: p.name)
def test_eval_recipe_parses_as_swift_eval_arguments(recipe):
    """ms-swift's own YAML step and EvalArguments parser accept the recipe (no model is loaded)."""
    import dataclasses
    from unittest import mock

    import yaml
    from swift.arguments import EvalArguments
    from swift.cli.main import parse_yaml_args
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    from swift_ssid.integration import templates

    config = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    with _patch_get_type_hints():
        parser = HfArgumentParser([EvalArguments])
    fields = {f.name for f in dataclasses.fields(EvalArguments) if f.init}
    assert not set(config) - {"ENV"} - fields, f"not swift eval arguments: {set(config) - {'ENV'} - fields}"
    argv = [str(recipe)]
    with mock.patch.dict(os.environ, clear=True):
        parse_yaml_args(argv)
        env = {k: v for k, v in os.environ.items() if k != "SWIFT_CONFIG_FILE"}
    namespace, remaining = parser.parse_known_args(argv)
    assert remaining == []
    assert namespace.eval_dataset == [eb.BENCHMARK_NAME] and namespace.eval_backend == "Native"
    dataset_args = json.loads(namespace.eval_dataset_args)[eb.BENCHMARK_NAME]
    assert set(dataset_args["extra_params"]) <= set(eb.benchmark_meta().extra_params)
    assert dataset_args["extra_params"]["k"] == 10
    assert namespace.infer_backend == "transformers"  # beam search
    assert config["template"] in templates.DERIVED
    assert config["custom_register_path"] == ["templates/ssid_templates.py", "dataset_plugins/ssid_datasets.py"]
    settings = SSIDSettings.from_env(env, ignore=("index_dir",))
    assert settings.target == "reason" and settings.infer_reason
    assert env["SSID_INDEX"] and settings.collection  # index + ssid-query source


# ---------------------------------------------------------------- the real CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    return build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2"))


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


@pytest.mark.slow
def test_swift_eval_r_at_k_equals_retrieve_evaluate_and_the_sft_metric(model_dir, workdir):
    from swift.utils import Serializer
    from torch.nn.utils.rnn import pad_sequence

    from swift_ssid.integration.sft_metric import metrics_from_rows, rows_from_predictions

    env = {**os.environ, **OFFLINE, "SSID_INDEX": str(workdir / "index"), "SSID_INFER_REASON": "false"}
    model = ["--model", str(model_dir), "--model_type", "qwen2", "--template", "ssid_qwen2_5"]
    model += ["--torch_dtype", "float32"]
    params = {"k": K, "max_tokens": MAX_TOKENS}
    dataset_args = {eb.BENCHMARK_NAME: {"local_path": str(workdir / "queries.jsonl"), "extra_params": params}}
    out = workdir / "eval_out"
    run_cli(
        [str(BIN / "swift"), "eval", "--custom_register_path", str(PLUGIN), *model, "--eval_backend", "Native",
         "--eval_dataset", eb.BENCHMARK_NAME, "--eval_num_proc", "1", "--eval_dataset_args", json.dumps(dataset_args),
         "--eval_output_dir", str(out)],
        env, workdir,
    )  # fmt: skip
    (report_file,) = out.glob("native/*/reports/*/ssid_retrieval.json")
    report = json.loads(report_file.read_text())
    assert report["primary_metric_identity"] == {"name": "recall", "aggregation": "mean", "dimensions": {"k": 1}}
    recall = {m["identity"]["dimensions"]["k"]: m for m in report["metrics"] if m["identity"]["name"] == "recall"}
    assert sorted(recall) == [1, 5, 10]
    exact = {k: recall[k]["categories"][0]["subsets"][0]["metadata"][f"R@{k}"] for k in recall}
    assert all(recall[k]["score"] == round(exact[k], 4) for k in recall)  # evalscope rounds its own score field

    eval_run = read_run(report_file.with_name("ssid_retrieval_default_run.jsonl"))
    assert [r.query_id for r in eval_run] == ["q0", "q1", "q2"]
    assert all(len(r.identifiers) == K and not r.unknown_identifiers for r in eval_run)  # K beams, all in the index

    run_file = workdir / "run.jsonl"
    run_cli(
        [str(BIN / "swift-ssid"), "retrieve", *model, "--index", str(workdir / "index"), "--queries",
         str(workdir / "queries.jsonl"), "--k", str(K), "--batch-size", "1", "--max-new-tokens", str(MAX_TOKENS),
         "--out", str(run_file)],
        env, workdir,
    )  # fmt: skip
    retrieved = read_run(run_file)
    assert [r.identifiers for r in retrieved] == [r.identifiers for r in eval_run]

    evaluated = {}
    for name, path in (("eval", report_file.with_name("ssid_retrieval_default_run.jsonl")), ("retrieve", run_file)):
        run_cli([str(BIN / "swift-ssid"), "evaluate", str(path), "--json", str(workdir / f"{name}.json")], env, workdir)
        evaluated[name] = json.loads((workdir / f"{name}.json").read_text())

    # the sft metric's scoring of the same predictions, serialised as its prediction step does
    preds = pad_sequence([Serializer.to_tensor(r.to_dict()) for r in eval_run], batch_first=True, padding_value=0)
    sft = metrics_from_rows(rows_from_predictions(preds.numpy()))
    for k in DEFAULT_KS:
        key = f"R@{k}"
        assert exact[k] == evaluated["eval"][key] == evaluated["retrieve"][key] == sft[key], key
