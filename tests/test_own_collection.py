"""A user's own collection with awkward properties, from images to an R@K report.

The collection is built here: six real photos under a folder whose name has spaces and non-ASCII letters
(4 train, 2 test), a transparent RGBA PNG (a black square on transparency), an SVG, a missing file, a row
with an empty caption list and a very tall image. ``swift-ssid check`` must list each problem with its
``file:line``; ``swift-ssid run --skip-invalid`` with a tiny LLaVA-NeXT (small vocabulary: the cheapest tiny
model that still takes images through an SSID template) must reach metrics and a report; transparency must be
composited onto the documented background by the SSID template (what ms-swift feeds the model) and the report.
Recipes written by ``swift-ssid recipe`` must parse with ms-swift's own argument classes from outside the
checkout.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from e2e_helpers import read_jsonl, subprocess_env, write_jsonl
from PIL import Image

from swift_ssid.core.checks import check_collection
from swift_ssid.core.images import composite_alpha
from swift_ssid.workflows.demo import DEMO_COLLECTION

REPO_ROOT = Path(__file__).resolve().parents[1]
FOLDER = "my stamps/über ß"  # spaces and non-ASCII letters in the path
PROBLEMS = {  # collection line -> problem code
    8: "svg",
    9: "missing-file",
    10: "bad-row",
    11: "extreme-aspect",
}


def stamp_rgba() -> Image.Image:
    """64x64, transparent except a black 32x32 square in the middle (invisible if alpha is dropped)."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (16, 16, 48, 48))
    return image


def build_collection(root: Path) -> Path:
    """The awkward collection (see the module docstring); returns the collection file."""
    images = root / FOLDER
    images.mkdir(parents=True)
    demo = [json.loads(line) for line in DEMO_COLLECTION.read_text(encoding="utf-8").splitlines()]
    rows = []
    for i, row in enumerate(demo[:6]):  # 4 train + 2 test, with their real captions
        name = f"photo {i} é.jpg"
        shutil.copy(DEMO_COLLECTION.parent / row["image"], images / name)
        split = "train" if i < 4 else "test"
        rows.append({"image": f"{FOLDER}/{name}", "captions": row["captions"][:2], "split": split})
    stamp_rgba().save(images / "stamp.png")
    rows.append({"image": f"{FOLDER}/stamp.png", "captions": ["A black square stamp."], "split": "train"})
    (images / "tux.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect/></svg>')
    rows.append({"image": f"{FOLDER}/tux.svg", "captions": ["A vector penguin."], "split": "train"})
    rows.append({"image": f"{FOLDER}/gone.png", "captions": ["A file that is not there."], "split": "train"})
    Image.new("RGB", (40, 40), (200, 0, 0)).save(images / "red.png")
    rows.append({"image": f"{FOLDER}/red.png", "captions": [], "split": "train"})
    Image.new("RGB", (10, 800), (0, 0, 200)).save(images / "tall.png")
    rows.append({"image": f"{FOLDER}/tall.png", "captions": ["A very tall blue strip."], "split": "train"})
    return write_jsonl(root / "collection.jsonl", rows)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_collection(tmp_path_factory.mktemp("own"))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "swift_ssid.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


# ---------------------------------------------------------------- swift-ssid check


def test_check_lists_each_problem_with_file_line_and_fix(collection: Path) -> None:
    proc = cli("check", str(collection))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(str(collection))]
    found = {}
    for line in lines[:-1]:  # the last one is the summary
        m = re.match(rf"{re.escape(str(collection))}:(\d+): \[([\w-]+)\] (.+); (.+)$", line)
        assert m, line
        found[int(m.group(1))] = m.group(2)
    assert found == PROBLEMS, proc.stdout
    assert "11 rows, 7 usable, 4 problem(s)" in proc.stdout
    assert "--skip-invalid" in proc.stderr


def test_check_skip_invalid_lists_rows_and_writes_the_usable_collection(collection: Path, tmp_path: Path) -> None:
    proc = cli("check", str(collection), "--skip-invalid", "--out", str(tmp_path / "checked"))
    assert proc.returncode == 0, proc.stderr
    skipped = read_jsonl(tmp_path / "checked" / "skipped.jsonl")
    assert {int(row["where"].rsplit(":", 1)[1]): row["code"] for row in skipped} == PROBLEMS
    assert all(row["fix"] for row in skipped)
    usable = read_jsonl(tmp_path / "checked" / "collection.jsonl")
    assert len(usable) == 7 and all(Path(row["image"]).is_absolute() for row in usable)
    assert any(row["image"].endswith("stamp.png") for row in usable)  # transparency is not a problem


def test_check_decodes_images_and_finds_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "b.png")
    shutil.copy(tmp_path / "b.png", tmp_path / "c.png")
    rows = [{"image": name, "captions": ["x"], "split": "test"} for name in ("a.png", "b.png", "c.png", "b.png")]
    report = check_collection(write_jsonl(tmp_path / "c.jsonl", rows))
    assert [(p.where.rsplit(":", 1)[1], p.code) for p in report.problems] == [
        ("1", "unreadable"),
        ("3", "duplicate-image"),
        ("4", "duplicate-path"),
    ]
    assert [Path(it.image).name for it in report.items] == ["b.png"]


# ---------------------------------------------------------------- transparency


def test_alpha_is_composited_onto_the_documented_background(tmp_path: Path) -> None:
    """Through the real SSID template ms-swift uses (what the model sees) and in the report's thumbnails."""
    from swift.template import get_template
    from swift.template.template_inputs import StdTemplateInputs
    from swift.template.vision_utils import load_image

    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.testing.tiny_models import build_tiny_llava_next

    path = tmp_path / "stamp.png"
    stamp_rgba().save(path)
    assert load_image(str(path)).getpixel((0, 0)) == (0, 0, 0)  # ms-swift alone: transparency turns black

    from swift.model import get_processor

    processor = get_processor(str(build_tiny_llava_next(tmp_path / "tiny")), model_type="llava1_6_vicuna_hf")
    template = get_template(processor, template_type="ssid_llava1_6_vicuna_hf")
    for background, rgb in ((None, (255, 255, 255)), ("#ff0000", (255, 0, 0))):
        env = {} if background is None else {"SSID_ALPHA_BACKGROUND": background}
        with mock.patch.dict(os.environ, env):
            if background is None:
                os.environ.pop("SSID_ALPHA_BACKGROUND", None)
            inputs = StdTemplateInputs(messages=[{"role": "user", "content": "<image>x"}], images=[str(path)])
            template._preprocess_inputs(inputs)
        seen = inputs.images[0]
        assert seen.mode == "RGB" and seen.getpixel((0, 0)) == rgb and seen.getpixel((32, 32)) == (0, 0, 0)

    # The model's pixel values equal those of the same picture pre-composited onto white by hand.
    flat = tmp_path / "flat.png"
    canvas = Image.new("RGB", (64, 64), (255, 255, 255))
    canvas.paste((0, 0, 0), (16, 16, 48, 48))
    canvas.save(flat)
    messages = [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}]

    def encode(image: str):
        return template.encode({"messages": messages, "images": [image]})["pixel_values"]

    with mock.patch.dict(os.environ):
        os.environ.pop("SSID_ALPHA_BACKGROUND", None)
        assert (encode(str(path)) == encode(str(flat))).all()
        # An undecodable file is named (ms-swift alone says "cannot identify image file <_io.BytesIO ...>").
        broken = tmp_path / "broken photo é.jpg"
        broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        with pytest.raises(ValueError, match=re.escape(str(broken))):
            encode(str(broken))


def test_report_thumbnail_composites_alpha_like_the_model(tmp_path: Path) -> None:
    from swift_ssid.core.index import IdentifierIndex, IndexEntry
    from swift_ssid.core.runs import RunRow
    from swift_ssid.reporting.report import render_report

    path = tmp_path / "stamp.png"
    stamp_rgba().save(path)
    index = IdentifierIndex([IndexEntry(str(path), "black square", "ok", reason="r")])
    row = RunRow("q", "a black square", [str(path)], ["black square"], [0.0], [None], [str(path)])
    page, _ = render_report([row], index, thumb_size=64)
    uri = re.search(r'src="data:image/jpeg;base64,([^"]+)"', page).group(1)
    thumb = Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")
    corner, centre = thumb.getpixel((2, 2)), thumb.getpixel((32, 32))
    assert min(corner) > 240 and max(centre) < 15  # white background, black square (JPEG rounding aside)
    assert composite_alpha(stamp_rgba()).getpixel((2, 2)) == (255, 255, 255)


# ---------------------------------------------------------------- recipes from any folder


@pytest.mark.parametrize("name,command", [("train_qwen2_5_vl", "sft"), ("retrieve_llava1_6_vicuna", "infer")])
def test_recipe_written_for_a_collection_parses_outside_the_checkout(
    name: str, command: str, collection: Path, tmp_path: Path
) -> None:
    import dataclasses

    from swift.arguments import InferArguments, SftArguments
    from swift.cli.main import parse_yaml_args
    from swift.utils.utils import _patch_get_type_hints, import_external_file
    from transformers import HfArgumentParser

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("recipe", name, "--collection", str(collection), "--out", "my.yaml", "--skip-invalid", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    recipe = elsewhere / "my.yaml"
    text = recipe.read_text(encoding="utf-8")
    assert "flickr30k" not in text.lower()
    cls = SftArguments if command == "sft" else InferArguments
    with _patch_get_type_hints():
        parser = HfArgumentParser([cls])
    argv = [str(recipe)]
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        with mock.patch.dict(os.environ, clear=True):
            parse_yaml_args(argv)
            env = {k: v for k, v in os.environ.items() if k.startswith("SSID_")}
        namespace, remaining = parser.parse_known_args(argv)
        assert remaining == []
        (plugin,) = namespace.custom_register_path
        assert Path(plugin).is_absolute() and Path(plugin).is_file()
        import_external_file(plugin)  # what ms-swift does with it, from this folder
    finally:
        os.chdir(cwd)
    assert {f.name for f in dataclasses.fields(cls)} >= set(vars(namespace)) - {"ENV"}
    assert env["SSID_COLLECTION"] == str(collection.resolve())
    assert env["SSID_IMAGE_ROOT"] == "" and env["SSID_SKIP_INVALID"] == "true"
    assert Path(env["SSID_INDEX"]).is_absolute()
    for key in ("output_dir", "result_path"):
        if getattr(namespace, key, None):
            assert str(getattr(namespace, key)).startswith(str(elsewhere))


def test_recipe_names_the_known_recipes_for_an_unknown_one(collection: Path, tmp_path: Path) -> None:
    proc = cli("recipe", "nonsense", "--collection", str(collection), "--out", str(tmp_path / "x.yaml"))
    assert proc.returncode == 2 and "train_qwen2_5_vl" in proc.stderr


# ---------------------------------------------------------------- build-index: the weak-model path


def test_build_index_exits_2_below_min_usable_and_stats_describe_the_latest_answers(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(image)
    first = {"response": "I cannot see anything.", "images": [{"path": str(image), "bytes": None}]}
    results = write_jsonl(tmp_path / "results.jsonl", [first])
    proc = cli("build-index", str(results), "--out", str(tmp_path / "index"))
    assert proc.returncode == 2
    assert "0 of 1 images" in proc.stderr and "swift-ssid identifiers caption-derived" in proc.stderr
    first_reasons = json.loads((tmp_path / "index" / "stats.json").read_text())["invalid_by_reason"]
    # A retry appended another unusable answer: the stats now describe that one.
    retry = {"response": "caption:x\nidentifier:<identifier>\nreason:y", "images": [str(image)]}
    write_jsonl(results, [first, retry])
    proc = cli("build-index", str(results), "--out", str(tmp_path / "index"), "--min-usable", "0")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "index" / "stats.json").read_text())
    assert stats["invalid_by_reason"] != first_reasons and "placeholder_identifier" in stats["invalid_by_reason"]
    assert stats["usable_share"] == 0.0


# ---------------------------------------------------------------- swift-ssid run, end to end


@pytest.mark.slow
def test_run_skip_invalid_reaches_metrics_and_a_report(collection: Path, tmp_path: Path) -> None:
    """``swift-ssid run --skip-invalid`` on the awkward collection, tiny LLaVA-NeXT, settings from a YAML file."""
    from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS, build_tiny_llava_next

    model = build_tiny_llava_next(tmp_path / "tiny")
    cpu = list(SFT_CPU_FLAGS)
    del cpu[cpu.index("--tuner_type") : cpu.index("--tuner_type") + 2]
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"model: {model}\ntemplate: ssid_llava1_6_vicuna_hf\nmodel-type: llava1_6_vicuna_hf\ntorch_dtype: float32\n"
        f"tuner: full\nmax_steps: 4\nbatch_size: 4\nlearning_rate: 1e-3\nsft_args: {' '.join(cpu)}\n"
        "k: 3\ngenerate_max_new_tokens: 8\nretrieve_max_new_tokens: 16\nmemorisation_images: 2\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    proc = cli("run", str(collection), "--config", str(config), "--out", str(work), "--skip-invalid")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["collection_check"] == {
        "rows": 11,
        "usable": 7,
        "skipped": 4,
        "skipped_file": str(work / "skipped.jsonl"),
    }
    assert len(read_jsonl(work / "skipped.jsonl")) == 4
    # stage 1 ran on every usable image, the transparent one and the unicode paths included
    answered = {row["images"][0]["path"] for row in read_jsonl(work / "generate" / "results.jsonl")}
    assert len(answered) == 7 and any(path.endswith("stamp.png") for path in answered)
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["n_queries"] == 4 and 0 <= metrics["R@1"] <= 1  # 2 test images x 2 captions
    assert summary["chance"]["R@1"] == round(1 / 7, 4)
    assert summary["memorisation"]["n_queries"] == 4  # 2 training images x 2 captions
    page = (work / "report.html").read_text(encoding="utf-8")
    assert FOLDER in page or "über" in page
    assert "held-out test" in proc.stdout and "memorisation check" in proc.stdout
    assert "(a random ranking of the 7 indexed images): R@1 14.3" in page  # chance beside the metrics


def test_dataset_setting_skip_invalid_leaves_out_the_flagged_rows(collection: Path, caplog) -> None:
    """``SSID_SKIP_INVALID=true``: the registered datasets read only the usable rows, each left-out row logged."""
    from swift_ssid.integration.datasets import query_rows
    from swift_ssid.integration.settings import SSIDSettings

    with pytest.raises(ValueError, match=rf"{re.escape(str(collection))}:10"):
        SSIDSettings.from_env({"SSID_COLLECTION": str(collection)}).load_collection()
    settings = SSIDSettings.from_env({"SSID_COLLECTION": str(collection), "SSID_SKIP_INVALID": "true"})
    with caplog.at_level("WARNING"):
        items = settings.load_collection()
    assert len(items) == 7 and len(query_rows(items)) == 4
    logged = caplog.text
    assert all(f"{collection}:{line}: [{code}]" in logged for line, code in PROBLEMS.items())
    assert settings.to_env()["SSID_SKIP_INVALID"] == "true"
    with pytest.raises(ValueError, match="SSID_SKIP_INVALID"):
        SSIDSettings.from_env({"SSID_SKIP_INVALID": "maybe"})
    with pytest.raises(ValueError, match="SSID_ALPHA_BACKGROUND"):
        SSIDSettings.from_env({"SSID_ALPHA_BACKGROUND": "not-a-colour"})


def test_run_accepts_a_prebuilt_index_of_any_kind(tmp_path: Path) -> None:
    """``--index DIR`` (e.g. ``swift-ssid identifiers KIND``) replaces stages 1 and 2; it must name every image."""
    from swift_ssid.core.caption_identifiers import write_caption_results
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.index import build_index
    from swift_ssid.workflows.pipeline import Pipeline, PipelineConfig, StageError

    items = load_collection(DEMO_COLLECTION)
    for name, subset in (("full", items), ("partial", items[:-1])):
        write_caption_results(((it.image, it.captions[0]) for it in subset), tmp_path / f"{name}.jsonl")
        build_index(tmp_path / f"{name}.jsonl", tmp_path / name)
    config = PipelineConfig(
        workdir=tmp_path / "work",
        collection=DEMO_COLLECTION,
        model="unused",
        template="unused",
        index=tmp_path / "full",
    )
    assert config.identifier_source == "index"
    pipeline = Pipeline(config)
    pipeline.build_index()
    assert pipeline.index_dir == tmp_path / "full"
    assert pipeline.summary["identifier_source"] == f"prebuilt index {tmp_path / 'full'}"
    with pytest.raises(StageError, match=r"no usable identifier for 1 of 12 images"):
        Pipeline(PipelineConfig(**{**vars(config), "index": tmp_path / "partial"})).build_index()


def test_run_stops_before_stage_1_listing_every_problem_without_skip_invalid(collection: Path, tmp_path: Path) -> None:
    proc = cli("run", str(collection), "--model", "unused", "--template", "unused", "--out", str(tmp_path / "work"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    for line, code in PROBLEMS.items():
        assert f"{collection}:{line}: [{code}]" in proc.stderr
    assert "--skip-invalid" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "work" / "generate").exists()
