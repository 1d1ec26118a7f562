"""The paper's protocols (Table III ablation, Fig. 3 zero-shot curve, Table IV multilingual), end to end.

The fast tests check the pieces on real files: ``--setting`` labels, what a checkpoint's ``args.json`` says it
was trained on, the recipes' three reason settings, query-file checks, and tables/plots by a setting. The slow
ones run the real ``swift sft`` (on the shipped recipes, overridden to a tiny random Qwen2 text model trained on
retrieve rows only) and ``swift-ssid protocol ...`` (which runs ``swift-ssid retrieve`` once per setting) on a
collection of 8 Pillow-made JPEGs (6 training, 2 test images), and check the run files' settings and the
tables. R@K values of a random tiny model mean nothing; each run's images are checked against its identifiers
expanded through the index, and its R@K against a count by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_helpers import check_run_against_index

from swift_ssid.cli import main
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.metrics import evaluate_run
from swift_ssid.core.queries import check_aligned, check_gold_in_index, load_queries, queries_language
from swift_ssid.core.runs import RunRow, parse_labels, read_run, write_run
from swift_ssid.integration.checkpoints import checkpoint_training_target, datasets_target
from swift_ssid.integration.retrieval import done_query_ids
from swift_ssid.reporting.tables import plot_table, summarize_run_files, summarize_runs
from swift_ssid.testing.tiny_models import OFFLINE_ENV
from swift_ssid.workflows.protocols import (
    REASON_SETTINGS,
    RetrieveOptions,
    Training,
    run_ablation,
    run_zeroshot,
    train_zeroshot,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"
SWIFT = Path(sys.executable).with_name("swift")
OFFLINE = OFFLINE_ENV  # the environment every swift call on a tiny model needs
K = 4
# name -> (split, captions, identifier)
COLLECTION = {
    "dog": ("train", ["A dog runs in the park.", "A brown dog chases a ball."], "dog - park - ball"),
    "men": ("train", ["Two men walk down a street.", "Two men talk on a street."], "two men - street"),
    "girl": ("train", ["A girl in a red dress.", "A young girl wears red."], "girl - red dress"),
    "bike": ("train", ["A man rides a bicycle on a road.", "A cyclist on the road."], "man - bicycle - road"),
    "cat": ("train", ["A cat sleeps on a sofa.", "A grey cat on a couch."], "cat - sofa"),
    "boat": ("train", ["A boat on a lake.", "A small boat sails."], "boat - lake"),
    "beach": ("test", ["Children play on the beach.", "Kids build a sand castle."], "children - beach"),
    "kitchen": ("test", ["A woman cooks in a kitchen.", "A woman at the stove."], "woman - kitchen"),
}
GERMAN = {  # hand-written translations of the test captions: same query ids and gold images
    "beach#0": "Kinder spielen am Strand.",
    "beach#1": "Kinder bauen eine Sandburg.",
    "kitchen#0": "Eine Frau kocht in einer Küche.",
    "kitchen#1": "Eine Frau steht am Herd.",
}
SFT_FLAGS = [
    "--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2", "--dataset_num_proc", "1",
    "--dataloader_num_workers", "0", "--gradient_accumulation_steps", "1", "--check_model", "false",
    "--report_to", "none", "--save_only_model", "true", "--seed", "0",
]  # fmt: skip
MODEL_FLAGS = ["--model_type", "qwen2", "--template", "ssid_qwen2_5", "--torch-dtype", "float32"]
RETRIEVE_FLAGS = ["--k", str(K), "--max-new-tokens", "24", "--batch-size", "4"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without any caller SSID_* settings, plus the offline flags and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSID_")}
    return {**env, **OFFLINE, **extra}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A collection of 8 JPEGs, its identifier index, the English and German query files."""
    from PIL import Image

    from swift_ssid.core.collection import load_collection
    from swift_ssid.integration.datasets import write_dataset_files

    root = tmp_path_factory.mktemp("protocols")
    (root / "images").mkdir()
    rows, results = [], []
    for i, (name, (split, captions, identifier)) in enumerate(COLLECTION.items()):
        path = root / "images" / f"{name}.jpg"
        Image.new("RGB", (32, 32), (30 * i, 120, 240 - 30 * i)).save(path)
        rows.append({"image": f"images/{name}.jpg", "captions": captions, "split": split})
        response = f"caption:{captions[0]}\nidentifier:{identifier}\nreason:It shows {identifier}."
        results.append({"response": response, "images": [{"bytes": None, "path": str(path)}], "messages": []})
    collection = write_jsonl(root / "collection.jsonl", rows)
    build_index(write_jsonl(root / "results.jsonl", results), root / "index")
    queries = write_dataset_files(root / "datasets", load_collection(collection), names=["ssid-query"])["ssid-query"]
    german = [
        {"query_id": row["query_id"], "query": GERMAN[row["query_id"]], "gold_images": row["gold_images"]}
        for row in map(json.loads, queries.read_text().splitlines())
    ]
    de = write_jsonl(root / "queries_de.jsonl", [{**row, "language": "de"} for row in german])
    return {"root": root, "collection": collection, "index": root / "index", "en": queries, "de": de}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    return build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2"))


def opts_for(model_dir: Path, world: dict) -> RetrieveOptions:
    return RetrieveOptions(str(model_dir), "ssid_qwen2_5", world["index"], "qwen2", "float32", K, 4, 24)


def fake_checkpoint(path: Path, datasets: list[str]) -> Path:
    """A directory with the ``args.json`` ``swift sft`` writes (only its ``dataset`` list matters here)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "args.json").write_text(json.dumps({"dataset": datasets, "model": "m"}))
    (path / "adapter_config.json").write_text("{}")
    return path


def check_r_at_k(rows: list[RunRow], index: IdentifierIndex) -> dict:
    """The run's images are its identifiers expanded through the index, and R@K is their hit rate by hand."""
    check_run_against_index(rows, index)
    return evaluate_run(rows).to_dict()


# ---------------------------------------------------------------- labels and checkpoints


def test_parse_labels_keeps_numbers_numeric_and_rejects_bad_items():
    assert parse_labels(["language=zh", "n_train=1000", "lr=0.5", "protocol=zeroshot"]) == {
        "language": "zh",
        "n_train": 1000,
        "lr": 0.5,
        "protocol": "zeroshot",
    }
    assert parse_labels([]) == {}
    for items, message in [
        (["language"], "not KEY=VALUE"),
        (["=zh"], "not KEY=VALUE"),
        (["language="], "empty value"),
        (["reason=none"], "written by retrieve itself"),
        (["k=3"], "written by retrieve itself"),
        (["language=zh", "language=de"], "names 'language' twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_labels(items)


def test_training_target_comes_from_the_datasets_in_args_json(tmp_path):
    assert datasets_target(["ssid-memorize", "ssid-retrieve#200"]) == "reason"
    assert datasets_target(["ssid-memorize-noreason", "ssid-retrieve-noreason"]) == "noreason"
    assert datasets_target(["train.jsonl"]) is None
    with pytest.raises(ValueError, match="mixes reason datasets"):
        datasets_target(["ssid-retrieve", "ssid-memorize-noreason"])
    assert checkpoint_training_target(fake_checkpoint(tmp_path / "r", ["ssid-retrieve"])) == "reason"
    assert checkpoint_training_target(fake_checkpoint(tmp_path / "n", ["ssid-retrieve-noreason"])) == "noreason"
    assert checkpoint_training_target(tmp_path / "no-args") is None


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava1_6_vicuna"])
def test_recipe_variants_produce_the_three_reason_settings(family):
    """train_*.yaml / train_*_noreason.yaml teach the two targets; the three retrieve recipes are Table III's rows."""
    from swift_ssid.integration.settings import SSIDSettings

    def env_of(recipe: str) -> dict[str, str]:
        env = yaml.safe_load((RECIPES_DIR / recipe).read_text())["ENV"]
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items() if k != "SSID_INDEX"}

    def datasets_of(recipe: str) -> list[str]:
        return yaml.safe_load((RECIPES_DIR / recipe).read_text())["dataset"]

    assert datasets_target(datasets_of(f"train_{family}.yaml")) == "reason"
    assert datasets_target(datasets_of(f"train_{family}_noreason.yaml")) == "noreason"
    rows = {
        suffix: SSIDSettings.from_env(env_of(f"retrieve_{family}{suffix}.yaml")).reason_label
        for suffix in ("", "_reason_train_only", "_noreason")
    }
    assert rows == {"": "train+infer", "_reason_train_only": "train-only", "_noreason": "none"}
    assert tuple(rows.values()) == REASON_SETTINGS


def test_ablation_refuses_a_checkpoint_trained_on_the_other_target(world, tmp_path):
    reason = fake_checkpoint(tmp_path / "reason", ["ssid-memorize", "ssid-retrieve"])
    noreason = fake_checkpoint(tmp_path / "noreason", ["ssid-memorize-noreason", "ssid-retrieve-noreason"])
    opts = RetrieveOptions("m", "ssid_qwen2_5", world["index"])
    with pytest.raises(ValueError, match="trained on the noreason datasets"):
        run_ablation(opts, world["en"], tmp_path / "out", noreason, reason)
    with pytest.raises(ValueError, match="needs the checkpoint trained with target noreason: pass --noreason-adapter"):
        run_ablation(opts, world["en"], tmp_path / "out", reason, None)
    assert not (tmp_path / "out").exists()  # refused before any run


def test_retrieve_command_checks_labels_language_and_adapter_target_before_loading_a_model(world, tmp_path, capsys):
    base = ["retrieve", "--model", "m", "--template", "ssid_qwen2_5", "--index", str(world["index"])]
    base += ["--out", str(tmp_path / "run.jsonl")]
    assert main([*base, "--queries", str(world["en"]), "--setting", "k=3"]) == 2
    assert "'k' is written by retrieve itself" in capsys.readouterr().err
    assert main([*base, "--queries", str(world["de"]), "--setting", "language=fr"]) == 2
    assert "--setting language=fr but" in capsys.readouterr().err
    noreason = fake_checkpoint(tmp_path / "ckpt", ["ssid-retrieve-noreason"])
    assert main([*base, "--queries", str(world["en"]), "--adapters", str(noreason), "--target", "reason"]) == 2
    assert "was trained on the noreason datasets" in capsys.readouterr().err
    assert not (tmp_path / "run.jsonl").exists()


# ---------------------------------------------------------------- query files


def test_query_files_language_alignment_and_gold_images(world, tmp_path):
    en, de = load_queries(world["en"]), load_queries(world["de"])
    assert queries_language(en, "en") is None and queries_language(de, "de") == "de"
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"query": "a", "gold_images": ["x"], "language": "de"}, {
        "query": "b", "gold_images": ["x"], "language": "fr"}])  # fmt: skip
    with pytest.raises(ValueError, match="mix languages"):
        queries_language(load_queries(mixed), "mixed.jsonl")

    assert check_aligned({"en": en, "de": de}) == []
    assert check_aligned({"en": en, "de": de[:3]}) == ["de: 1 of 4 query ids are missing (its rows are scored alone)"]
    swapped = write_jsonl(tmp_path / "swapped.jsonl", [{"query_id": "beach#0", "query": "x", "gold_images": ["k.jpg"]}])
    with pytest.raises(ValueError, match="query 'beach#0' has gold images"):
        check_aligned({"en": en, "xx": load_queries(swapped)})

    index = IdentifierIndex.load(world["index"])
    check_gold_in_index(en, index, "en")
    with pytest.raises(ValueError, match=r"1 gold image\(s\) have no identifier in the index"):
        check_gold_in_index(load_queries(swapped), index, "swapped")


# ---------------------------------------------------------------- tables by a setting


def ranked(query_id: str, hit: int | None, setting: dict) -> RunRow:
    images = [f"o{i}.jpg" for i in range(10)]
    if hit is not None:
        images[hit - 1] = f"{query_id}.jpg"
    return RunRow(query_id, "q", [f"{query_id}.jpg"], images, [0.0] * 10, [None] * 10, images, [], setting)


def test_tables_label_rows_by_value_across_run_files_and_sort_numbers(tmp_path):
    n1000 = [ranked("a", 1, {"n_train": 1000}), ranked("b", None, {"n_train": 1000})]
    n0 = [ranked("a", 7, {"n_train": 0}), ranked("b", None, {"n_train": 0})]
    n100 = [ranked("a", 3, {"n_train": 100}), ranked("b", 2, {"n_train": 100})]
    table = summarize_runs([("run_n1000", n1000), ("run_n0", n0), ("run_n100", n100)], by="n_train")
    assert [(row.name, row.metrics.r_at(1), row.metrics.r_at(5), row.metrics.r_at(10)) for row in table] == [
        ("0", 0.0, 0.0, 0.5),
        ("100", 0.0, 1.0, 1.0),
        ("1000", 0.5, 0.5, 0.5),
    ]
    languages = [("run_en", [ranked("a", 1, {"language": "en"})]), ("run_zh", [ranked("a", 2, {"language": "zh"})])]
    assert [row.name for row in summarize_runs(languages, by="language")] == ["en", "zh"]  # file order kept

    for name, rows in [("run_n1000", n1000), ("run_n0", n0), ("run_n100", n100)]:
        write_run(tmp_path / f"{name}.jsonl", rows)
    files = sorted(tmp_path.glob("run_n*.jsonl"))  # a shell glob: run_n0, run_n100, run_n1000
    png, csv = tmp_path / "plots" / "zs.png", tmp_path / "zs.csv"
    argv = ["table", *map(str, files), "--by", "n_train", "--plot", str(png), "--csv", str(csv), "--title", "ZS"]
    assert main(argv) == 0
    assert csv.read_text().splitlines() == [
        "n_train,R@1,R@5,R@10,n_queries",
        "0,0.0,0.0,50.0,2",
        "100,0.0,100.0,100.0,2",
        "1000,50.0,50.0,50.0,2",
    ]
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (640, 400)
    categorical = plot_table(summarize_runs(languages, by="language"), tmp_path / "lang.png", x_label="language")
    assert categorical.stat().st_size > 1000


# ---------------------------------------------------------------- end to end on a tiny model


def sft(recipe: str, out: Path, world: dict, model_dir: Path, dataset: str, **env: str) -> Path:
    """``swift sft recipes/<recipe>`` from the repository root, on the tiny text model's retrieve rows."""
    cmd = [str(SWIFT), "sft", str(RECIPES_DIR / recipe), "--model", str(model_dir), "--model_type", "qwen2"]
    cmd += ["--template", "ssid_qwen2_5", "--torch_dtype", "float32", "--dataset", dataset, "--output_dir", str(out)]
    cmd += SFT_FLAGS
    ssid = {"SSID_COLLECTION": str(world["collection"]), "SSID_IMAGE_ROOT": "", "SSID_INDEX": str(world["index"])}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=clean_env(**ssid, **env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out / "checkpoint-2"


@pytest.fixture(scope="module")
def checkpoints(world, model_dir, tmp_path_factory) -> dict[str, Path]:
    """The two trainings of the ablation, from the shipped recipes (reason and no-reason targets)."""
    root = tmp_path_factory.mktemp("sft")
    return {
        "reason": sft("train_qwen2_5_vl.yaml", root / "reason", world, model_dir, "ssid-retrieve"),
        "noreason": sft(
            "train_qwen2_5_vl_noreason.yaml", root / "noreason", world, model_dir, "ssid-retrieve-noreason"
        ),
    }


def protocol_cli(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "swift_ssid.cli", "protocol", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def table_rows(markdown: str) -> list[str]:
    return [line.split("|")[1].strip() for line in markdown.splitlines()[4:]]


@pytest.mark.slow
def test_ablation_protocol_end_to_end(world, model_dir, checkpoints, tmp_path):
    assert checkpoint_training_target(checkpoints["reason"]) == "reason"
    assert checkpoint_training_target(checkpoints["noreason"]) == "noreason"
    out = tmp_path / "ablation"
    args = ["ablation", "--model", str(model_dir), *MODEL_FLAGS, "--index", str(world["index"])]
    args += ["--queries", str(world["en"]), "--out", str(out), *RETRIEVE_FLAGS]
    args += ["--reason-adapter", str(checkpoints["reason"]), "--noreason-adapter", str(checkpoints["noreason"])]
    proc = protocol_cli(args)

    index = IdentifierIndex.load(world["index"])
    files = {"train+infer": "run_reason_train_infer", "train-only": "run_reason_train_only", "none": "run_noreason"}
    for reason, stem in files.items():
        rows = read_run(out / f"{stem}.jsonl")
        assert [r.query_id for r in rows] == ["beach#0", "beach#1", "kitchen#0", "kitchen#1"]
        assert all(r.setting == {"reason": reason, "k": K, "protocol": "ablation"} for r in rows)
        assert all(len(r.identifiers) == K and all(i in index for i in r.identifiers) for r in rows)
        if reason != "train+infer":  # the response ends after the identifier line
            assert all(r.reasons == [None] * K for r in rows)
        check_r_at_k(rows, index)
    # the run command logged which adapter each run used and with which target
    log = (out / "logs" / "run_noreason.log").read_text()
    assert f"--adapters {checkpoints['noreason']}" in log and "--target noreason" in log
    markdown = (out / "table.md").read_text()
    assert markdown.startswith("Reason ablation (Table III)\n\n| reason | R@1 | R@5 | R@10 | n |")
    assert table_rows(markdown) == ["train+infer", "train-only", "none"] and markdown in proc.stdout
    assert [line.split(",")[0] for line in (out / "table.csv").read_text().splitlines()] == [
        "reason",
        "train+infer",
        "train-only",
        "none",
    ]
    # resuming a run file with other labels is refused
    with pytest.raises(ValueError, match="made with setting"):
        done_query_ids(out / "run_noreason.jsonl", {"reason": "none", "k": K, "protocol": "zeroshot"})


@pytest.mark.slow
def test_zeroshot_protocol_end_to_end(world, model_dir, tmp_path):
    out = tmp_path / "zeroshot"
    args = ["zeroshot", "--ns", "4", "0", "--model", str(model_dir), *MODEL_FLAGS, "--index", str(world["index"])]
    args += ["--queries", str(world["en"]), "--out", str(out), *RETRIEVE_FLAGS]
    args += ["--recipe", "recipes/train_qwen2_5_vl_zeroshot.yaml", "--collection", str(world["collection"])]
    args += ["--sft-args", " ".join(["--dataset", "ssid-retrieve", *SFT_FLAGS])]
    protocol_cli(args)
    index = IdentifierIndex.load(world["index"])

    sft_log = (out / "logs" / "sft_n4.log").read_text()  # swift sft saw the first 4 training images only
    assert "ssid-retrieve: 8 rows (protocol zeroshot, 4 training / 2 test / 4 memorised images" in sft_log
    marker = json.loads((out / "sft_n4" / "ssid_protocol.json").read_text())
    assert marker["n_train"] == 4 and Path(marker["checkpoint"]).name == "checkpoint-2"
    assert not (out / "sft_n0").exists()  # N = 0 is the base model
    for n in (0, 4):
        rows = read_run(out / f"run_n{n}.jsonl")
        assert len(rows) == 4
        assert all(r.setting == {"reason": "train+infer", "k": K, "protocol": "zeroshot", "n_train": n} for r in rows)
        check_r_at_k(rows, index)
    assert "--adapters" not in (out / "logs" / "run_n0.log").read_text().splitlines()[0]
    assert f"--adapters {marker['checkpoint']}" in (out / "logs" / "run_n4.log").read_text().splitlines()[0]
    assert table_rows((out / "table.md").read_text()) == ["0", "4"]
    assert (out / "table.csv").read_text().splitlines()[0] == "n_train,R@1,R@5,R@10,n_queries"
    assert (out / "zeroshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = summarize_run_files([out / "run_n4.jsonl", out / "run_n0.jsonl"], by="n_train")
    assert [row.name for row in table] == ["0", "4"]

    # a second run finds the training done and does not call swift sft again (it would write the log)
    opts = opts_for(model_dir, world)
    recipe = RECIPES_DIR / "train_qwen2_5_vl_zeroshot.yaml"
    again = train_zeroshot(4, Training(recipe, world["collection"]), opts, out / "sft_n4", out / "logs" / "again.log")
    assert str(again) == marker["checkpoint"] and not (out / "logs" / "again.log").exists()
    with pytest.raises(ValueError, match="distinct whole numbers"):
        run_zeroshot(opts, world["en"], out, [4, 4], recipe, world["collection"])


@pytest.mark.slow
def test_multilingual_protocol_end_to_end(world, model_dir, checkpoints, tmp_path):
    out = tmp_path / "multilingual"
    args = ["multilingual", "--queries", f"en={world['en']}", f"de={world['de']}", "--adapters"]
    args += [str(checkpoints["reason"]), "--model", str(model_dir), *MODEL_FLAGS, "--index", str(world["index"])]
    args += ["--out", str(out), *RETRIEVE_FLAGS]
    protocol_cli(args)
    index = IdentifierIndex.load(world["index"])

    runs = {language: read_run(out / f"run_{language}.jsonl") for language in ("en", "de")}
    assert [r.query_id for r in runs["de"]] == [r.query_id for r in runs["en"]]
    assert [r.query for r in runs["de"]] == list(GERMAN.values())
    for language, rows in runs.items():
        assert all(r.setting == {"reason": "train+infer", "k": K, "protocol": "multilingual", "language": language}
                   for r in rows)  # fmt: skip
        check_r_at_k(rows, index)
    markdown = (out / "table.md").read_text()
    assert markdown.startswith("Multilingual retrieval (Table IV)\n\n| language | R@1 | R@5 | R@10 | n |")
    assert table_rows(markdown) == ["en", "de"]
    csv = (out / "table.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv] == ["language", "en", "de"]
    assert all(line.endswith(",4") for line in csv[1:])  # 4 queries per language
