"""The R@K evaluator in its hosts' own form: ``upstream/ms-swift/0002-add-ssid-recall-eval-metric.patch`` (the
``ssid_recall`` metric in ``swift/metrics/``) and ``upstream/evalscope/0001-add-ssid-retrieval-benchmark.patch``
(the ``ssid_retrieval`` benchmark in ``evalscope/benchmarks/``).

Each patch is applied with ``patch -p1`` to a temporary copy of the installed (pinned) package; one subprocess with
that copy first on ``PYTHONPATH`` then scores hand-made answers through the host's own registry
(``eval_metrics_map['ssid_recall']``, ``get_benchmark('ssid_retrieval')``) against an identifier index written by
:func:`swift_ssid.core.index.build_index`, and runs the unit tests the patch adds. The numbers must equal
:func:`swift_ssid.core.metrics.evaluate_run` on the same answers, and the hand-computed values below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swift_ssid.core.answers import parse_choice
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.metrics import evaluate_run
from swift_ssid.core.runs import RunRow, expand_identifiers

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = REPO_ROOT / "upstream"
MS_SWIFT_PATCHES = sorted((UPSTREAM / "ms-swift").glob("*.patch"))
METRIC_PATCH = UPSTREAM / "ms-swift" / "0002-add-ssid-recall-eval-metric.patch"
BENCHMARK_PATCH = UPSTREAM / "evalscope" / "0001-add-ssid-retrieval-benchmark.patch"

# image -> identifier (1 and 2 share one; 6 got no usable answer)
IDENTIFIERS = {
    "/imgs/1.jpg": "dog - park",
    "/imgs/2.jpg": "dog - park",
    "/imgs/3.jpg": "cat - sofa",
    "/imgs/4.jpg": "two men - street",
    "/imgs/5.jpg": "girl - red dress",
    "/imgs/6.jpg": None,
}
# query -> (K ranked answers, gold image, target answer); answers in the model's spellings
QUERIES = {
    "q1": (["identifier:Dog – Park\nreason:a dog", "identifier:cat - sofa", "identifier:bird"], "/imgs/2.jpg",
           "identifier:dog - park\nreason:a dog"),
    "q2": (["identifier:two men - street", "identifier:dog - park", "identifier:cat - sofa"], "/imgs/3.jpg",
           "identifier:cat - sofa"),
    "q3": (["identifier: **Girl - Red Dress.**"], "/imgs/5.jpg", "identifier:girl - red dress"),
    "q4": (["identifier:bird", "identifier:horse - field"], "/imgs/4.jpg", "identifier:two men - street"),
}  # fmt: skip


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An identifier index (our own ``index.jsonl`` format) of :data:`IDENTIFIERS`."""
    root = tmp_path_factory.mktemp("ssid-index")
    rows = [
        {"response": f"caption:c\nidentifier:{ident}\nreason:r" if ident else "I cannot tell.", "images": [image]}
        for image, ident in IDENTIFIERS.items()
    ]
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    build_index(root / "results.jsonl", root / "index", check_images=False)
    return root / "index"


def patched_package(package: str, dest: Path, *patches: Path) -> Path:
    """Copy the installed ``package`` into ``dest`` (its repository layout) and apply ``patches`` in order."""
    source = Path(__import__(package).__file__).parent
    shutil.copytree(source, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for patch in patches:
        proc = subprocess.run(
            ["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(patch)],
            cwd=dest,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{patch.name} does not apply to the installed {package}:\n{proc.stdout}"
    return dest


def run_in_copy(copy: Path, script: str, *args: str, **env: str) -> dict:
    """Run ``script`` with the patched copy first on PYTHONPATH, from the copy (its tests are relative)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(REPO_ROOT)]), "OMP_NUM_THREADS": "1"}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=copy, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected_rows(index: IdentifierIndex, gold_from_target: bool) -> list[RunRow]:
    """Our run rows for :data:`QUERIES` (the reference that the upstream versions must reproduce)."""
    rows = []
    for query_id, (answers, gold_image, target) in QUERIES.items():
        identifiers = [parse_choice(answer)[0] for answer in answers]
        images, unknown = expand_identifiers(identifiers, index.images_for)
        gold = index.images_for(parse_choice(target)[0]) if gold_from_target else [gold_image]
        rows.append(
            RunRow(
                query_id=query_id,
                query=query_id,
                gold_images=gold,
                identifiers=identifiers,
                scores=[0.0] * len(identifiers),
                reasons=[None] * len(identifiers),
                images=images,
                unknown_identifiers=unknown,
            )
        )
    return rows


def test_ms_swift_patches_apply_together(tmp_path):
    patched_package("swift", tmp_path, *MS_SWIFT_PATCHES)
    assert [p.name for p in MS_SWIFT_PATCHES] == [
        "0001-import-plugins-by-module-name.patch",
        "0002-add-ssid-recall-eval-metric.patch",
    ]


# ---------------------------------------------------------------- ms-swift: --eval_metric ssid_recall

SWIFT_SCRIPT = r"""
import json, sys, unittest
from torch.nn.utils.rnn import pad_sequence
from transformers import EvalPrediction
from swift.metrics import eval_metrics_map
from swift.utils import Serializer

case = json.loads(sys.argv[1])
def padded(objs):
    return pad_sequence([Serializer.to_tensor(o) for o in objs], batch_first=True, padding_value=0).numpy()
metric_cls = eval_metrics_map['ssid_recall']
metrics = metric_cls(None, None).compute_metrics(EvalPrediction(padded(case['predictions']), padded(case['labels'])))
suite = unittest.defaultTestLoader.discover('tests/metrics', 'test_ssid_metrics.py', top_level_dir='tests/metrics')
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
print(json.dumps({'metrics': metrics, 'module': sys.modules[metric_cls.__module__].__file__,
                  'unit_tests': [result.testsRun, result.wasSuccessful()]}))
"""


def test_ms_swift_ssid_recall_metric_matches_evaluate_run(tmp_path, index_dir):
    copy = patched_package("swift", tmp_path, METRIC_PATCH)
    # the greedy prediction step gives one string per query; a K-beam one gives a list: both forms are accepted
    predictions = [answers if len(answers) > 1 else answers[0] for answers, _, _ in QUERIES.values()]
    case = {"predictions": predictions, "labels": [target for _, _, target in QUERIES.values()]}
    out = run_in_copy(copy, SWIFT_SCRIPT, json.dumps(case), SSID_INDEX=str(index_dir))
    assert Path(out["module"]).is_relative_to(copy) and out["module"].endswith("swift/metrics/ssid.py")
    assert out["unit_tests"] == [4, True]

    expected = evaluate_run(expected_rows(IdentifierIndex.load(index_dir), gold_from_target=True)).to_dict()
    keys = ("R@1", "R@5", "R@10", "unknown_identifier_rate")
    assert out["metrics"] == {key: expected[key] for key in keys}
    # by hand: gold = the images of the target's identifier; q1 rank 1, q2 rank 4, q3 rank 1, q4 none;
    # 3 of the 9 generated identifiers (bird, bird, horse - field) are not in the index
    assert out["metrics"] == {"R@1": 2 / 4, "R@5": 3 / 4, "R@10": 3 / 4, "unknown_identifier_rate": 3 / 9}


# ---------------------------------------------------------------- evalscope: ssid_retrieval

EVALSCOPE_SCRIPT = r"""
import json, sys, unittest
from evalscope.api.evaluator import TaskState
from evalscope.api.messages import ChatMessageAssistant
from evalscope.api.model import ModelOutput
from evalscope.api.model.model_output import ChatCompletionChoice
from evalscope.api.registry import get_benchmark
from evalscope.config import TaskConfig

queries, index_path, answers = json.loads(sys.argv[1])
extra = {'index_path': index_path, 'k': 3}
adapter = get_benchmark('ssid_retrieval', TaskConfig(dataset_args={'ssid_retrieval': {
    'local_path': queries, 'extra_params': extra}}))
samples = list(adapter.load_dataset()['default'])
scores = []
for sample, texts in zip(samples, answers):
    choices = [ChatCompletionChoice(message=ChatMessageAssistant(content=t)) for t in texts]
    state = TaskState(model='m', sample=sample, output=ModelOutput(model='m', choices=choices))
    scores.append(adapter.calculate_metrics(state))
agg = adapter.aggregate_scores(scores)
unit = 'tests/benchmark'
suite = unittest.defaultTestLoader.discover(unit, 'test_ssid_retrieval.py', top_level_dir=unit)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
print(json.dumps({
    'module': sys.modules[type(adapter).__module__].__file__,
    'query_ids': [s.metadata['query_id'] for s in samples],
    'ranks': [s.score.metadata['first_relevant_rank'] for s in scores],
    'recall': {a.dimensions['k']: a.score for a in agg if a.metric_name == 'recall'},
    'unknown_identifier_rate': [a.score for a in agg if a.metric_name == 'unknown_identifier_rate'],
    'primary': [adapter.primary_metric.name, adapter.primary_metric.dimensions],
    'unit_tests': [result.testsRun, result.wasSuccessful()]}))
"""


def test_evalscope_ssid_retrieval_benchmark_scores_hand_made_answers(tmp_path, index_dir):
    copy = patched_package("evalscope", tmp_path / "copy", BENCHMARK_PATCH)
    queries = tmp_path / "queries.jsonl"
    rows = [{"query_id": q, "query": f"caption of {q}", "gold_images": [gold]} for q, (_, gold, _) in QUERIES.items()]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    answers = [answers for answers, _, _ in QUERIES.values()]
    out = run_in_copy(copy, EVALSCOPE_SCRIPT, json.dumps([str(queries), str(index_dir), answers]))
    assert Path(out["module"]).is_relative_to(copy)
    assert out["module"].endswith("evalscope/benchmarks/ssid_retrieval/ssid_retrieval_adapter.py")
    assert out["unit_tests"] == [3, True]
    assert out["query_ids"] == list(QUERIES)
    assert out["primary"] == ["recall", {"k": 1}]

    # by hand: q1's gold 2.jpg is the second image of the shared identifier (rank 2); q2: 4.jpg, 1.jpg, 2.jpg, then
    # 3.jpg (rank 4); q3 rank 1; q4 none. Unknown: bird, bird, horse - field of 9 identifiers.
    assert out["ranks"] == [2, 4, 1, None]
    assert out["recall"] == {"1": 1 / 4, "5": 3 / 4, "10": 3 / 4}
    assert out["unknown_identifier_rate"] == [3 / 9]
    expected = evaluate_run(expected_rows(IdentifierIndex.load(index_dir), gold_from_target=False)).to_dict()
    assert out["recall"] == {str(k): expected[f"R@{k}"] for k in (1, 5, 10)}
    assert out["unknown_identifier_rate"] == [expected["unknown_identifier_rate"]]
