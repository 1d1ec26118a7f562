"""A collection the project has never seen, through every documented route (issue 20).

Drawn here: clip-art stamps with transparency of every PIL kind (RGBA, LA, a palette with a transparent
colour), an SVG, a 39x7 image, English captions with German and Spanish translations as extra captions, and
real photos from the demo for the train/test split. ``check``, ``check --skip-invalid``, ``identifiers`` (with
and without ``--skip-invalid``), the recipes written for a kind index and ``run --index`` of every kind must
take the same path: the same problem lines, the identifier-only target for an index without reasons.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_helpers import SSID_KEYS, read_jsonl, subprocess_env, write_jsonl
from PIL import Image

from swift_ssid.core.kinds import BUILDABLE
from swift_ssid.workflows.demo import DEMO_COLLECTION

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = {8: "svg", 9: "tiny-image"}  # collection line -> problem code


def draw_collection(root: Path) -> Path:
    """The awkward collection (see the module docstring); returns the collection file."""
    images = root / "stamps"
    images.mkdir(parents=True)
    rows = []
    demo = [json.loads(line) for line in DEMO_COLLECTION.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(demo[:4]):  # 3 train, 1 test photos
        shutil.copy(DEMO_COLLECTION.parent / row["image"], images / f"photo{i}.jpg")
        rows.append(
            {"image": f"stamps/photo{i}.jpg", "captions": row["captions"][:2], "split": "train" if i else "test"}
        )
    rgba = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (12, 12, 36, 36))
    rgba.save(images / "rgba.png")
    la = Image.new("LA", (40, 30), (0, 0))
    la.paste((90, 255), (10, 5, 30, 25))
    la.save(images / "la.png")
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 0, 0, 200] + [0] * 762)  # the transparent colour is black
    palette.paste(1, (8, 8, 24, 24))
    palette.save(images / "palette.png", transparency=0)
    captions = {
        "rgba": ["A red square stamp.", "Ein roter quadratischer Stempel.", "Un sello cuadrado rojo."],
        "la": ["A grey block.", "Ein grauer Block.", "Un bloque gris."],
        "palette": ["A blue stamp.", "Ein blauer Stempel.", "Un sello azul."],
    }
    rows += [{"image": f"stamps/{n}.png", "captions": c, "split": "train"} for n, c in captions.items()]
    (images / "star.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><path/></svg>')
    rows.append({"image": "stamps/star.svg", "captions": ["A star.", "Ein Stern.", "Una estrella."], "split": "train"})
    Image.new("RGB", (39, 7), (0, 120, 0)).save(images / "strip.png")
    rows.append({"image": "stamps/strip.png", "captions": ["A thin green strip."], "split": "train"})
    return write_jsonl(root / "stamps.jsonl", rows)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_collection(tmp_path_factory.mktemp("stamps"))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "swift_ssid.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def problem_lines(collection: Path, text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{collection}:") and ": [" in line]


def test_check_and_identifiers_list_the_same_problems(collection: Path, tmp_path: Path) -> None:
    check = cli("check", str(collection))
    assert check.returncode == 2
    lines = problem_lines(collection, check.stdout)
    assert [line.split(": [")[1].split("]")[0] for line in lines] == list(PROBLEMS.values())
    assert all(f"{collection}:{n}: [{code}]" in check.stdout for n, code in PROBLEMS.items())
    assert cli("check", str(collection), "--skip-invalid", "--out", str(tmp_path / "checked")).returncode == 0

    stopped = cli("identifiers", "numeric", "--collection", str(collection), "--out", str(tmp_path / "no"))
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert problem_lines(collection, stopped.stderr) == lines and "--skip-invalid" in stopped.stderr
    assert not (tmp_path / "no" / "index.jsonl").exists()

    out = tmp_path / "numeric"
    skipped = cli("identifiers", "numeric", "--collection", str(collection), "--out", str(out), "--skip-invalid")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    indexed = [row["image"] for row in read_jsonl(out / "index.jsonl")]
    assert len(indexed) == 7 and not any(i.endswith(("star.svg", "strip.png")) for i in indexed)
    assert [row["code"] for row in read_jsonl(out / "skipped.jsonl")] == list(PROBLEMS.values())


def test_dense_fuse_and_quality_apply_the_same_check(collection: Path, tmp_path: Path) -> None:
    """Every command that reads a collection stops on the rows `check` flags, with the same lines, before any work."""
    lines = problem_lines(collection, cli("check", str(collection)).stdout)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query_id": "q", "query": "a stamp", "gold_images": ["x"]}\n')
    run = tmp_path / "run.jsonl"
    run.write_text(
        '{"query_id": "q", "query": "a stamp", "gold_images": ["x"], "identifiers": ["x"], "scores": [0.0], '
        '"reasons": [null], "images": ["x"]}\n'
    )
    commands = {
        "dense": ["dense", "--encoder", str(tmp_path / "no-encoder"), "--queries", str(queries)],
        "fuse": ["fuse", str(run), "--rerank", "--encoder", str(tmp_path / "no-encoder")],
        "quality": ["quality", str(tmp_path / "index")],
    }
    index = cli(
        "identifiers", "numeric", "--collection", str(collection), "--out", str(tmp_path / "index"), "--skip-invalid"
    )
    assert index.returncode == 0, index.stderr[-2000:]
    for name, args in commands.items():
        out = tmp_path / f"{name}.json"
        stopped = cli(*args, "--collection", str(collection), "--out", str(out))
        assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, (name, stopped.stderr[-2000:])
        assert problem_lines(collection, stopped.stderr) == lines and "--skip-invalid" in stopped.stderr, name
        assert not out.exists() and not out.with_suffix(".skipped.jsonl").exists(), name


def test_a_kind_index_trains_and_retrieves_without_reasons(collection: Path, tmp_path: Path, monkeypatch) -> None:
    """The pipeline and the written recipes switch to the -noreason datasets; sft runs with --check_model false."""
    from swift_ssid.workflows.pipeline import Pipeline, PipelineConfig, format_summary, index_target

    index = tmp_path / "index"
    assert (
        cli("identifiers", "string", "--collection", str(collection), "--out", str(index), "--skip-invalid").returncode
        == 0
    )
    assert index_target(index) == "noreason"
    config = PipelineConfig(
        workdir=tmp_path / "work", collection=collection, model="m", template="t", index=index, skip_invalid=True
    )
    pipeline = Pipeline(config)
    calls: list[list[str]] = []

    def fake_swift(command: str, args: list[str], log: str, **env: str) -> float:
        calls.append([command, *args, f"SSID_TARGET={env.get('SSID_TARGET')}"])
        (tmp_path / "work" / "sft" / "checkpoint-1").mkdir(parents=True)
        return 0.0

    monkeypatch.setattr(pipeline, "_swift", fake_swift)
    pipeline.build_index()
    pipeline.train()
    sft = calls[0]
    datasets = sft[sft.index("--dataset") + 1 : sft.index("--dataset") + 3]
    assert datasets == ["ssid-memorize-noreason", "ssid-retrieve-noreason"]
    assert sft[sft.index("--check_model") + 1] == "false" and sft[-1] == "SSID_TARGET=noreason"
    assert pipeline.summary["target"] == "noreason" and "no reasons" in pipeline.summary["target_why"]
    block = format_summary({**pipeline.summary, "metrics": {"n_queries": 2, "R@1": 0.5}, "chance": {"R@1": 0.125}}, "t")
    assert "training target     : identifier only" in block and "R@1 50.0% (chance 12.5%)" in block

    for name, key in (("train_qwen2_5_vl", "dataset"), ("retrieve_qwen2_5_vl", "ENV")):
        out = tmp_path / f"{name}.yaml"
        args = ["recipe", name, "--collection", str(collection), "--index", str(index), "--out", str(out)]
        proc = cli(*args, "--torch-dtype", "float32", "--max-pixels", "50176")
        assert proc.returncode == 0 and "has no reasons" in proc.stdout, proc.stderr
        recipe = yaml.safe_load(out.read_text())
        assert recipe["torch_dtype"] == "float32" and recipe["max_pixels"] == 50176
        assert recipe["ENV"]["SSID_TARGET"] == "noreason"
        if key == "dataset":
            assert recipe["dataset"] == ["ssid-memorize-noreason", "ssid-retrieve-noreason"]


def test_stage_1_by_recipe_composites_transparency_as_documented(collection: Path, tmp_path: Path) -> None:
    """The written generate recipe's stock template drops alpha (transparent turns black); the documented route,
    the same recipe with ``--template ssid_<its template>``, composites onto white, pixel by pixel."""
    import os
    from unittest import mock

    from swift.model import get_processor
    from swift.template import get_template

    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.testing.tiny_models import build_tiny_llava_next

    out = tmp_path / "generate.yaml"
    assert cli("recipe", "generate_llava1_6_vicuna", "--collection", str(collection), "--out", str(out)).returncode == 0
    recipe = yaml.safe_load(out.read_text())
    assert "SSID_INDEX" not in recipe["ENV"]  # no index yet: the SSID template generates unconstrained
    processor = get_processor(str(build_tiny_llava_next(tmp_path / "tiny")), model_type=recipe["model_type"])
    images = collection.parent / "stamps"
    messages = [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}]

    def pixels(template_type: str, image: Path):
        template = get_template(processor, template_type=template_type)
        return template.encode({"messages": messages, "images": [str(image)]})["pixel_values"]

    with mock.patch.dict(os.environ, {k: str(v) for k, v in recipe["ENV"].items()}):
        for name in ("rgba", "la", "palette"):
            source = Image.open(images / f"{name}.png")
            white = Image.new("RGBA", source.size, (255, 255, 255, 255))
            flat = tmp_path / f"{name}_on_white.png"
            Image.alpha_composite(white, source.convert("RGBA")).convert("RGB").save(flat)
            dropped = tmp_path / f"{name}_dropped.png"
            source.convert("RGB").save(dropped)  # what ms-swift's own loading makes of it
            assert (pixels(recipe["template"], images / f"{name}.png") == pixels(recipe["template"], dropped)).all()
            assert (
                pixels(f"ssid_{recipe['template']}", images / f"{name}.png")
                == pixels("ssid_" + recipe["template"], flat)
            ).all()
            assert not (pixels(recipe["template"], dropped) == pixels(recipe["template"], flat)).all()


def test_progress_is_the_log_s_latest_line(tmp_path: Path) -> None:
    from swift_ssid.reporting.tables import format_metrics
    from swift_ssid.workflows.pipeline import last_log_line, run_logged

    log = tmp_path / "x.log"
    log.write_text("loading\nTrain:  10%|#   | 1/10\rTrain:  50%|#####   | 5/10\r\n\n")
    assert last_log_line(log) == "Train:  50%|#####   | 5/10"
    script = "import time\nfor i in range(3):\n    print(f'step {i}', flush=True); time.sleep(0.3)\n"
    with pytest.MonkeyPatch.context() as mp:
        seen: list[str] = []
        mp.setattr("swift_ssid.workflows.pipeline.logger.info", lambda msg, *a: seen.append(msg % a))
        run_logged([sys.executable, "-c", script], log, subprocess_env(), heartbeat_s=0.2)
    assert any("step" in line for line in seen)
    from swift_ssid.core.metrics import evaluate_run
    from swift_ssid.core.runs import RunRow

    metrics = evaluate_run([RunRow("q", "x", ["a"], ["i"], [0.0], [None], ["a"])])
    assert "R@1    100.0%\nR@5    100.0%" in format_metrics(metrics, "run.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("kind", BUILDABLE)
def test_every_kind_goes_through_run_index_end_to_end(
    kind: str, collection: Path, tiny: dict, tmp_path: Path, capsys, caplog, monkeypatch
) -> None:
    """``swift-ssid identifiers KIND --skip-invalid`` then ``swift-ssid run --index DIR --skip-invalid`` (in-process;
    ``swift sft`` and ``swift-ssid retrieve`` are the pipeline's subprocesses)."""
    from swift_ssid.cli.main import main

    for key in SSID_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in subprocess_env().items():
        monkeypatch.setenv(key, value)
    index = tmp_path / "index"
    extra = ["--encoder", str(tiny["clip"]), "--cluster-k", "2", "--cluster-c", "3", "--n-init", "1"]
    args = ["identifiers", kind, "--collection", str(collection), "--out", str(index), "--skip-invalid"]
    assert main([*args, *(extra if kind == "structured" else [])]) == 0, capsys.readouterr().err[-2000:]
    work = tmp_path / "work"
    caplog.set_level("INFO", logger="swift_ssid.workflows.pipeline")
    code = main(["run", str(collection), "--config", str(tiny["config"]), "--index", str(index), "--out", str(work),
                 "--skip-invalid"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["target"] == "noreason" and summary["stages"]["train"]["datasets"][0] == "ssid-memorize-noreason"
    assert "training target     : identifier only" in printed.out and "%" in printed.out
    assert all(row["setting"]["reason"] == "none" for row in read_jsonl(work / "run.jsonl"))
    sft_log = (work / "logs" / "3_sft.log").read_text()
    assert "--check_model false" in sft_log.splitlines()[0]
    # atomic identifiers are new tokens: ms-swift adds them to the tokenizer and the checkpoint remembers them
    assert ("--new_special_tokens" in sft_log.splitlines()[0]) == (kind == "atomic")
    if kind == "atomic":
        args_json = json.loads((Path(summary["stages"]["train"]["checkpoint"]) / "args.json").read_text())
        tokens = (index / "new_tokens.txt").read_text().split()
        assert tokens and args_json["new_special_tokens"] == tokens
    assert "Retrying" not in sft_log and "modelscope.cn" not in sft_log  # no hub call offline
    assert "[retrieve] test captions: 2 queries" in caplog.text  # retrieval says what it does


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny LLaVA-NeXT and tiny CLIP for every kind, and the run settings (one training step, K=2)."""
    from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS, build_tiny_clip, build_tiny_llava_next

    root = tmp_path_factory.mktemp("tiny")
    model = build_tiny_llava_next(root / "llava")
    cpu = list(SFT_CPU_FLAGS)
    for flag in ("--tuner_type", "--check_model"):  # the run sets these; --check_model false is its own default
        del cpu[cpu.index(flag) : cpu.index(flag) + 2]
    config = root / "settings.yaml"
    config.write_text(
        f"model: {model}\ntemplate: ssid_llava1_6_vicuna_hf\nmodel-type: llava1_6_vicuna_hf\ntorch_dtype: float32\n"
        f"tuner: full\nmax_steps: 1\nbatch_size: 2\nsft_args: {' '.join(cpu)}\n"
        "k: 2\nretrieve_max_new_tokens: 24\nmemorisation_images: 0\n",
        encoding="utf-8",
    )
    return {"config": config, "clip": build_tiny_clip(root / "clip")}
