"""Every recipe parses through ms-swift's own YAML handling and argument classes, without loading a model.

``swift sft x.yaml`` turns the YAML into flags with ``swift.cli.main.parse_yaml_args`` (setting the ``ENV:``
block) and parses them with ``HfArgumentParser`` over ``SftArguments`` / ``InferArguments``. Here the same two
steps run, but argparse stops before the dataclass is built (``__post_init__`` would load the model), so a key
that is not an argument, a value of the wrong type or a choice that does not exist fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from swift_ssid.integration.settings import ENV_KEYS, SSIDSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"
RECIPES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("eval_"))  # eval_*: test_swift_eval
COMMANDS = {"generate": "infer", "train": "sft", "retrieve": "infer"}  # file-name prefix -> swift command
PLUGINS = ["templates/ssid_templates.py", "dataset_plugins/ssid_datasets.py"]


def command_of(recipe: Path) -> str:
    return COMMANDS[recipe.name.split("_", 1)[0]]


def read(recipe: Path) -> dict:
    return yaml.safe_load(recipe.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def parsers():
    """ms-swift's argument parsers, built exactly as ``swift.utils.parse_args`` builds them."""
    from swift.arguments import InferArguments, SftArguments
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    out = {}
    for command, cls in (("sft", SftArguments), ("infer", InferArguments)):
        with _patch_get_type_hints():
            out[command] = (HfArgumentParser([cls]), {f.name for f in dataclasses.fields(cls) if f.init})
    return out


def parse_recipe(recipe: Path) -> tuple[list[str], dict[str, str]]:
    """Run ms-swift's YAML step; return the flags and the environment it would set (os.environ restored)."""
    from swift.cli.main import parse_yaml_args

    argv = [str(recipe)]
    with mock.patch.dict(os.environ, clear=True):
        parse_yaml_args(argv)
        env = {k: v for k, v in os.environ.items() if k != "SWIFT_CONFIG_FILE"}
    return argv, env


def test_there_is_a_recipe_per_stage_family_and_variant():
    assert RECIPES, "no recipes found"
    stems = {r.stem for r in RECIPES}
    for family in ("qwen2_5_vl", "llava1_6_vicuna"):
        for stem in (
            "generate_{}",
            "generate_{}_vllm",
            "train_{}",
            "train_{}_noreason",
            "retrieve_{}",
            "retrieve_{}_noreason",
            "retrieve_{}_reason_train_only",
        ):
            assert stem.format(family) in stems
    assert "train_qwen2_5_vl_zeroshot" in stems
    assert all(r.name.split("_", 1)[0] in COMMANDS for r in RECIPES), "recipe names start with generate/train/retrieve"
    assert not list(RECIPES_DIR.glob("*.yml")), "use the .yaml extension"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_as_the_commands_arguments(recipe, parsers):
    parser, fields = parsers[command_of(recipe)]
    config = read(recipe)
    unknown = sorted(set(config) - {"ENV"} - fields)
    assert not unknown, f"{recipe.name}: {unknown} are not `swift {command_of(recipe)}` arguments"
    argv, _ = parse_recipe(recipe)
    try:
        namespace, remaining = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse reports a bad type or choice on stderr and exits
        pytest.fail(f"{recipe.name}: ms-swift's parser rejected a value (see stderr): exit {e.code}")
    assert remaining == [], f"{recipe.name}: left unparsed: {remaining}"
    for key, value in config.items():
        if key == "ENV":
            continue
        parsed = getattr(namespace, key)
        if isinstance(parsed, list):  # nargs="+" fields take a YAML list or a single value
            value = value if isinstance(value, list) else [value]
            assert [str(v) for v in parsed] == [str(v) for v in value], key
        elif isinstance(value, bool | int | float):
            assert parsed == value and type(parsed) in (type(value), float), f"{key}: {parsed!r} != {value!r}"
        else:
            assert str(parsed) == str(value), f"{key}: {parsed!r} != {value!r}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_env_and_names_are_ours(recipe):
    from swift.model import MODEL_MAPPING
    from swift.template import TEMPLATE_MAPPING

    from swift_ssid.integration import datasets, templates

    config = read(recipe)
    _, env = parse_recipe(recipe)
    documented = set(ENV_KEYS) | {
        SSIDSettings.env_var("index_dir"),
        SSIDSettings.env_var("target"),
        SSIDSettings.env_var("infer_reason"),
    }
    assert set(env) <= documented, f"{recipe.name}: undocumented ENV keys {set(env) - documented}"
    settings = SSIDSettings.from_env(env, ignore=("index_dir",))  # validates every value but the index path
    assert settings.collection, f"{recipe.name}: every stage reads the collection; set SSID_COLLECTION"
    assert config["custom_register_path"] == PLUGINS
    assert all((REPO_ROOT / p).is_file() for p in PLUGINS)
    assert config["model_type"] in MODEL_MAPPING
    assert config["template"] in TEMPLATE_MAPPING or config["template"] in templates.DERIVED
    names = config.get("dataset", []) + config.get("val_dataset", [])
    assert names and set(names) <= set(datasets.DATASET_NAMES), f"{recipe.name}: {names}"

    stage = recipe.name.split("_", 1)[0]
    if stage == "generate":
        # Stage 1 uses ms-swift's own template, so a stray SSID_INDEX can never constrain it.
        assert config["template"] in TEMPLATE_MAPPING and config["val_dataset"] == ["ssid-generate"]
        assert "SSID_INDEX" not in env
    elif stage == "train":
        assert config["template"] in templates.DERIVED and env.get("SSID_INDEX")
        suffix = "-noreason" if "noreason" in recipe.stem else ""
        assert config["dataset"] == [f"ssid-memorize{suffix}", f"ssid-retrieve{suffix}"]
        assert config["dataset_shuffle"] is True  # the two sets interleave
        assert settings.protocol == ("zeroshot" if "zeroshot" in recipe.stem else "standard")
    else:
        assert config["template"] in templates.DERIVED and env.get("SSID_INDEX")
        assert config["val_dataset"] == ["ssid-query"]
        # False would hand query_id/gold_images to model.generate, which raises (transformers backend).
        assert config.get("remove_unused_columns", True) is True
        assert config["num_beams"] == 10
        target = SSIDSettings.from_env(env, ignore=("index_dir",))
        assert target.target == ("noreason" if "noreason" in recipe.stem else "reason")
        assert target.infer_reason is ("reason_train_only" not in recipe.stem and "noreason" not in recipe.stem)
    if command_of(recipe) == "infer":
        # `swift infer --dataset X` with no split ratio has no eval set and drops into the interactive prompt.
        assert "dataset" not in config and config["val_dataset"]
        # Results in dataset order (they are matched to queries/images by position); first-N sampling.
        assert config["val_dataset_shuffle"] is False and config["dataset_shuffle"] is False


def test_readme_runs_every_recipe_and_only_existing_ones():
    readme = (RECIPES_DIR / "README.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"recipes/([\w.]+\.yaml)", readme))
    assert mentioned == {r.name for r in RECIPES}
    for variable in ("SSID_COLLECTION", "SSID_IMAGE_ROOT", "SSID_INDEX", "SSID_PROTOCOL", "SSID_TRAIN_SIZE"):
        assert variable in readme


def test_deepspeed_configs_named_in_the_docs_are_shipped_by_ms_swift():
    import swift

    docs = (RECIPES_DIR / "README.md").read_text(encoding="utf-8") + "".join(r.read_text() for r in RECIPES)
    names = set(re.findall(r"--deepspeed (\w+)", docs))
    assert names == {"zero2", "zero3"}
    for name in names:
        config = json.loads((Path(swift.__file__).parent / "config" / f"{name}.json").read_text())
        assert config["zero_optimization"]["stage"] == int(name[-1])


def test_plugin_files_load_by_path_and_a_package_name_does_not(monkeypatch):
    """ms-swift 4.6.0 imports --custom_register_path entries as files; registering happens once."""
    from swift.dataset import DATASET_MAPPING
    from swift.utils.utils import import_external_file

    import swift_ssid.integration.register  # noqa: F401

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(REPO_ROOT)
    for plugin in PLUGINS:
        import_external_file(plugin)  # already registered: importing the thin file again must not re-register
    assert "ssid-memorize" in DATASET_MAPPING
    with pytest.raises(ImportError, match="Cannot import external file"):
        import_external_file("swift_ssid")
