"""Collections, dataset rows per protocol, exact prompts/targets, errors, and loading through ms-swift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from swift_ssid.core.answers import format_target
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.jsonl import read_jsonl
from swift_ssid.core.prompt import MEMORIZE_PROMPT, load_prompt, render_prompt, retrieve_prompt
from swift_ssid.integration.datasets import (
    DATASET_NAMES,
    build_rows,
    generate_rows,
    memorize_rows,
    query_rows,
    retrieve_rows,
    split_collection,
    write_dataset_files,
)
from swift_ssid.integration.settings import SSIDSettings

# (file name, split, captions): 2 train + 1 restval (training), 1 val (unused), 2 test.
IMAGES = [
    ("1000.jpg", "train", ["A dog runs on grass.", "A brown dog\nplays outside."]),
    ("1001.jpg", "train", ["Two men talk.", "Men near a car.", "Two people chat."]),
    ("1002.jpg", "restval", ["A red bus."]),
    ("1003.jpg", "val", ["A cat sleeps."]),
    ("1004.jpg", "test", ["A girl climbs a wall.", "A child on a rock."]),
    ("1005.jpg", "test", ["A man rides a bike."]),
]


def make_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, _, _) in enumerate(IMAGES):
        Image.new("RGB", (8, 6), (40 * i, 100, 200 - 30 * i)).save(folder / name, format="JPEG")


def write_karpathy(path: Path, images=IMAGES) -> Path:
    rows = [
        {"filename": n, "imgid": i, "split": s, "sentences": [{"raw": c, "tokens": c.split()} for c in caps]}
        for i, (n, s, caps) in enumerate(images)
    ]
    path.write_text(json.dumps({"images": rows, "dataset": "flickr30k"}), encoding="utf-8")
    return path


@pytest.fixture
def karpathy(tmp_path: Path) -> tuple[Path, Path]:
    """A Karpathy-split JSON and its image root (images in a separate folder)."""
    make_images(tmp_path / "flickr30k-images")
    return write_karpathy(tmp_path / "dataset_flickr30k.json"), tmp_path / "flickr30k-images"


@pytest.fixture
def collection(karpathy):
    return load_collection(*karpathy)


def fake_results(path: Path, collection, skip=(), invalid=(), no_reason=()) -> Path:
    """A `swift infer --result_path` file for the generation stage, one answer per image."""
    with path.open("w", encoding="utf-8") as f:
        for i, item in enumerate(collection):
            name = Path(item.image).name
            if name in skip:
                continue
            if name in invalid:
                response = "I cannot help with that."
            elif name in no_reason:
                response = f"caption:{item.captions[0]}\nidentifier:thing {i} - place"
            else:
                response = f"caption:{item.captions[0]}\nidentifier:Thing {i} - Place\nreason:Both show thing {i}."
            row = {"response": response, "messages": [], "images": [{"bytes": None, "path": item.image}]}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def index_dir(tmp_path: Path, collection) -> Path:
    build_index(fake_results(tmp_path / "generate.jsonl", collection), tmp_path / "index")
    return tmp_path / "index"


def names(rows) -> list[str]:
    return [Path(row["images"][0]).name for row in rows]


# ---------------------------------------------------------------- collections


def test_karpathy_collection_resolves_paths_and_normalises_captions(karpathy):
    path, root = karpathy
    items = load_collection(path, root)
    assert [Path(i.image).name for i in items] == [n for n, _, _ in IMAGES]
    assert all(Path(i.image).is_absolute() and Path(i.image).parent == root.resolve() for i in items)
    assert [i.split for i in items] == [s for _, s, _ in IMAGES]
    assert items[0].captions == ("A dog runs on grass.", "A brown dog plays outside.")


def test_karpathy_filepath_joins_under_root(tmp_path):
    make_images(tmp_path / "coco" / "val2014")
    rows = [{"filepath": "val2014", "filename": "1000.jpg", "split": "test", "sentences": [{"raw": "A dog."}]}]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": rows}), encoding="utf-8")
    (item,) = load_collection(tmp_path / "dataset_coco.json", tmp_path / "coco")
    assert item.image == str((tmp_path / "coco" / "val2014" / "1000.jpg").resolve())


def test_jsonl_collection_paths_resolve_against_its_folder_or_the_root(tmp_path):
    make_images(tmp_path / "data" / "img")
    lines = [
        {"image": "img/1000.jpg", "captions": ["A dog."], "split": "train"},
        {"image": str(tmp_path / "data" / "img" / "1004.jpg"), "captions": ["A girl."], "split": "test"},
    ]
    path = tmp_path / "data" / "collection.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    items = load_collection(path)
    assert [i.image for i in items] == [str(tmp_path / "data" / "img" / n) for n in ("1000.jpg", "1004.jpg")]
    assert [i.split for i in items] == ["train", "test"]
    # With an image root, relative paths resolve against it instead.
    (tmp_path / "other" / "img").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "other" / "img" / "1000.jpg")
    assert load_collection(path, tmp_path / "other")[0].image == str(tmp_path / "other" / "img" / "1000.jpg")


def test_missing_image_error_names_row_path_and_fix(karpathy):
    path, root = karpathy
    (root / "1004.jpg").unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_collection(path, root)
    msg = str(e.value)
    assert "1 of 6 images" in msg and f"first: images[4]: {root / '1004.jpg'}." in msg
    assert "--image-root" in msg


def test_wrong_image_root_reports_every_image_missing(karpathy, tmp_path):
    path, _ = karpathy
    with pytest.raises(FileNotFoundError, match=r"6 of 6 images .* are missing \(looked under the default root"):
        load_collection(path)


def test_unknown_split_error_names_row_and_value(tmp_path):
    make_images(tmp_path)
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"image": "1000.jpg", "captions": ["A dog."], "split": "train"})
        + "\n"
        + json.dumps({"image": "1001.jpg", "captions": ["Men."], "split": "testing"})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"c\.jsonl:2 \(1001\.jpg\): unknown split 'testing'; use one of train"):
        load_collection(path)


@pytest.mark.parametrize(
    ("captions", "match"),
    [
        ([], "'captions' must be a non-empty list"),
        (["A dog.", "  "], "caption 1 is empty"),
        ("A dog.", "'captions' must be a non-empty list"),
    ],
)
def test_empty_captions_are_errors(tmp_path, captions, match):
    make_images(tmp_path)
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"image": "1000.jpg", "captions": captions, "split": "test"}) + "\n")
    with pytest.raises(ValueError, match=match) as e:
        load_collection(path)
    assert "c.jsonl:1" in str(e.value)


def test_karpathy_image_without_sentences_is_an_error(tmp_path):
    make_images(tmp_path)
    write_karpathy(tmp_path / "k.json", [("1000.jpg", "test", [])])
    with pytest.raises(ValueError, match=r"images\[0\] \(1000\.jpg\): 'sentences' must be a non-empty list"):
        load_collection(tmp_path / "k.json")


def test_image_listed_twice_and_unknown_format_are_errors(tmp_path):
    make_images(tmp_path)
    path = tmp_path / "c.jsonl"
    row = json.dumps({"image": "1000.jpg", "captions": ["A dog."], "split": "test"})
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: image .*1000\.jpg is already listed at .*c\.jsonl:1"):
        load_collection(path)
    (tmp_path / "c.csv").write_text("image,caption\n")
    with pytest.raises(ValueError, match="unknown format '.csv'"):
        load_collection(tmp_path / "c.csv")


# ---------------------------------------------------------------- rows per protocol


def test_standard_protocol_memorises_training_and_test_images(collection, index_dir):
    rows = memorize_rows(index_dir, collection, protocol="standard")
    assert names(rows) == ["1000.jpg", "1001.jpg", "1002.jpg", "1004.jpg", "1005.jpg"]  # val left out


def test_zeroshot_protocol_leaves_test_images_out_of_training(collection, index_dir):
    memorised = names(memorize_rows(index_dir, collection, protocol="zeroshot"))
    assert memorised == ["1000.jpg", "1001.jpg", "1002.jpg"]
    retrieve = retrieve_rows(index_dir, collection)
    test_queries = {r["query"] for r in query_rows(collection)}
    assert not test_queries & {r["messages"][0]["content"].split("? ", 1)[1] for r in retrieve}


def test_retrieve_rows_are_every_training_caption(collection, index_dir):
    rows = retrieve_rows(index_dir, collection)
    assert len(rows) == 2 + 3 + 1  # captions of 1000, 1001, 1002 (restval counts as training)
    assert [r["messages"][0]["content"] for r in rows[:2]] == [
        "Which image matches this caption? A dog runs on grass.",
        "Which image matches this caption? A brown dog plays outside.",
    ]
    assert all("images" not in r for r in rows)


def test_train_size_keeps_the_first_training_images_under_both_protocols(collection, index_dir):
    assert names(memorize_rows(index_dir, collection, protocol="standard", train_size=1)) == [
        "1000.jpg",
        "1004.jpg",
        "1005.jpg",
    ]
    assert names(memorize_rows(index_dir, collection, protocol="zeroshot", train_size=2)) == ["1000.jpg", "1001.jpg"]
    assert len(retrieve_rows(index_dir, collection, train_size=2)) == 5
    split = split_collection(collection, "zeroshot", 2)
    assert [Path(i.image).name for i in split.generate] == ["1000.jpg", "1001.jpg", "1004.jpg", "1005.jpg"]


def test_memorise_and_retrieve_targets_exact(collection, index_dir):
    index = IdentifierIndex.load(index_dir)
    memo = memorize_rows(index, collection)[0]
    assert memo == {
        "messages": [
            {"role": "user", "content": "<image>Which identifier does this image have?"},
            {"role": "assistant", "content": "identifier:thing 0 - place\nreason:Both show thing 0."},
        ],
        "images": [collection[0].image],
    }
    assert MEMORIZE_PROMPT == "<image>Which identifier does this image have?"
    retr = retrieve_rows(index, collection)[0]
    assert retr["messages"][1] == memo["messages"][1]
    noreason = memorize_rows(index, collection, with_reason=False)[0]
    assert noreason["messages"][1]["content"] == "identifier:thing 0 - place"
    assert retrieve_rows(index, collection, with_reason=False)[2]["messages"][1]["content"] == (
        "identifier:thing 1 - place"
    )


def test_format_target_keeps_each_value_on_its_line():
    assert format_target("a - b", "one\ntwo  three") == "identifier:a - b\nreason:one two three"
    assert format_target("a - b", None, with_reason=False) == "identifier:a - b"
    with pytest.raises(ValueError, match="has no reason"):
        format_target("a - b", " ")


def test_query_rows_use_the_retrieve_prompt_and_keep_gold_images(collection):
    rows = query_rows(collection)
    assert [r["query_id"] for r in rows] == ["1004#0", "1004#1", "1005#0"]
    assert rows[0] == {
        "messages": [{"role": "user", "content": "Which image matches this caption? A girl climbs a wall."}],
        "query_id": "1004#0",
        "query": "A girl climbs a wall.",
        "gold_images": [collection[4].image],
    }
    assert rows[0]["messages"][0]["content"] == retrieve_prompt(rows[0]["query"])


def test_generate_rows_render_the_paper_prompt_with_or_without_caption(collection):
    with_caption = generate_rows(collection[:1], with_caption=True)[0]
    assert with_caption == {
        "messages": [{"role": "user", "content": "<image>" + render_prompt("A dog runs on grass.")}],
        "images": [collection[0].image],
    }
    assert with_caption["messages"][0]["content"].splitlines()[-3] == "caption:A dog runs on grass."
    without = generate_rows(collection[:1], with_caption=False)[0]
    assert without["messages"][0]["content"] == "<image>" + load_prompt()
    assert all(len(r["messages"]) == 1 for r in generate_rows(collection))


# ---------------------------------------------------------------- missing identifiers


def test_image_missing_from_the_index_is_an_error_naming_it(tmp_path, collection):
    build_index(fake_results(tmp_path / "r.jsonl", collection, skip={"1005.jpg"}), tmp_path / "idx")
    with pytest.raises(ValueError) as e:
        memorize_rows(tmp_path / "idx", collection)
    msg = str(e.value)
    assert "1 image(s)" in msg and f"{collection[5].image} (not in the index)" in msg and "build-index" in msg
    # The zero-shot protocol does not memorise test images, so it does not need that identifier.
    assert len(memorize_rows(tmp_path / "idx", collection, protocol="zeroshot")) == 3


def test_invalid_identifier_error_points_at_regenerate_file(tmp_path, collection):
    build_index(fake_results(tmp_path / "r.jsonl", collection, invalid={"1001.jpg"}), tmp_path / "idx")
    with pytest.raises(ValueError) as e:
        retrieve_rows(tmp_path / "idx", collection)
    assert f"{collection[1].image} (invalid:" in str(e.value) and "regenerate.jsonl" in str(e.value)


def test_missing_reason_blocks_reason_targets_only(tmp_path, collection):
    build_index(fake_results(tmp_path / "r.jsonl", collection, no_reason={"1002.jpg"}), tmp_path / "idx")
    with pytest.raises(ValueError, match=r"1002\.jpg \(no reason\)"):
        memorize_rows(tmp_path / "idx", collection)
    rows = memorize_rows(tmp_path / "idx", collection, with_reason=False)
    assert rows[2]["messages"][1]["content"] == "identifier:thing 2 - place"


# ---------------------------------------------------------------- settings and files


def test_settings_from_env_and_their_errors(tmp_path):
    env = {
        "SSID_COLLECTION": "c.json",
        "SSID_INDEX": " idx ",
        "SSID_PROTOCOL": "zeroshot",
        "SSID_TRAIN_SIZE": "100",
        "SSID_IMAGE_ROOT": "",
    }
    expected = SSIDSettings(collection="c.json", protocol="zeroshot", train_size=100)
    assert SSIDSettings.from_env(env, ignore=("index_dir",)) == expected
    assert SSIDSettings.from_env({}) == SSIDSettings()
    with pytest.raises(ValueError, match="SSID_INDEX='idx' is not an identifier index directory"):
        SSIDSettings.from_env(env)
    with pytest.raises(ValueError, match="SSID_PROTOCOL='fewshot' is not a protocol; use one of standard, zeroshot"):
        SSIDSettings.from_env({"SSID_PROTOCOL": "fewshot"})
    with pytest.raises(ValueError, match="SSID_TRAIN_SIZE='1k' is not a whole number"):
        SSIDSettings.from_env({"SSID_TRAIN_SIZE": "1k"})
    with pytest.raises(ValueError, match="SSID_TRAIN_SIZE=-1 must be a whole number >= 0"):
        SSIDSettings.from_env({"SSID_TRAIN_SIZE": "-1"})
    with pytest.raises(ValueError, match="SSID_COLLECTION is not set"):
        build_rows("ssid-query", SSIDSettings())


def test_build_rows_needs_the_index_and_refuses_empty_datasets(karpathy, index_dir):
    path, root = karpathy
    with pytest.raises(ValueError, match="SSID_INDEX is not set"):
        build_rows("ssid-memorize", SSIDSettings(collection=str(path), image_root=str(root)))
    empty = SSIDSettings(
        index_dir=index_dir, collection=str(path), image_root=str(root), protocol="zeroshot", train_size=0
    )
    with pytest.raises(ValueError, match="ssid-retrieve has no rows .* SSID_TRAIN_SIZE=0 is the zero-data point"):
        build_rows("ssid-retrieve", empty)
    assert len(build_rows("ssid-query", empty)) == 3
    assert len(build_rows("ssid-generate", empty)) == 2  # the test images still need identifiers


def test_write_dataset_files_writes_every_dataset(tmp_path, collection, index_dir):
    written = write_dataset_files(tmp_path / "ds", collection, index_dir, protocol="standard")
    assert sorted(written) == sorted(DATASET_NAMES)
    counts = {name: len(read_jsonl(path)) for name, path in written.items()}
    assert counts == {
        "ssid-generate": 5,
        "ssid-generate-nocaption": 5,
        "ssid-memorize": 5,
        "ssid-retrieve": 6,
        "ssid-memorize-noreason": 5,
        "ssid-retrieve-noreason": 6,
        "ssid-query": 3,
    }
    assert read_jsonl(written["ssid-memorize"]) == memorize_rows(index_dir, collection)
    without_index = write_dataset_files(tmp_path / "ds2", collection)
    assert sorted(without_index) == ["ssid-generate", "ssid-generate-nocaption", "ssid-query"]


# ---------------------------------------------------------------- through ms-swift


def test_ms_swift_loads_the_registered_datasets(monkeypatch, karpathy, index_dir, collection):
    from swift.dataset import DATASET_MAPPING, load_dataset

    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.integration import datasets

    path, root = karpathy
    monkeypatch.setenv("SSID_COLLECTION", str(path))
    monkeypatch.setenv("SSID_IMAGE_ROOT", str(root))
    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    monkeypatch.setenv("SSID_PROTOCOL", "standard")
    monkeypatch.delenv("SSID_TRAIN_SIZE", raising=False)
    assert set(DATASET_NAMES) <= set(DATASET_MAPPING)
    with pytest.raises(ValueError, match="already been registered"):
        datasets.register(DATASET_MAPPING["ssid-memorize"])

    train, _ = load_dataset(["ssid-memorize", "ssid-retrieve"], shuffle=False)
    assert len(train) == 5 + 6
    assert train[0]["messages"] == memorize_rows(index_dir, collection)[0]["messages"]
    assert train[0]["images"] == [{"bytes": None, "path": collection[0].image}]
    assert train[5]["messages"] == retrieve_rows(index_dir, collection)[0]["messages"] and train[5]["images"] is None
    assert train["dataset"] == ["ssid-memorize"] * 5 + ["ssid-retrieve"] * 6

    sampled, _ = load_dataset(["ssid-memorize#2", "ssid-retrieve#9"], shuffle=True, seed=0)
    assert sampled["dataset"].count("ssid-memorize") == 2 and sampled["dataset"].count("ssid-retrieve") == 9

    _, queries = load_dataset(["ssid-query"], split_dataset_ratio=1.0, remove_unused_columns=False)
    assert queries["query_id"] == ["1004#0", "1004#1", "1005#0"]
    assert queries["gold_images"][2] == [collection[5].image]
    _, stripped = load_dataset(["ssid-query"], split_dataset_ratio=1.0)
    assert "gold_images" not in stripped.column_names

    monkeypatch.setenv("SSID_PROTOCOL", "zeroshot")
    zeroshot, _ = load_dataset(["ssid-memorize"])
    assert len(zeroshot) == 3


def test_module_command_writes_the_files_the_settings_select(monkeypatch, tmp_path, karpathy, index_dir, capsys):
    from swift_ssid.integration.datasets import main

    path, root = karpathy
    monkeypatch.setenv("SSID_COLLECTION", str(path))
    monkeypatch.setenv("SSID_IMAGE_ROOT", str(root))
    monkeypatch.delenv("SSID_INDEX", raising=False)
    monkeypatch.setenv("SSID_PROTOCOL", "zeroshot")
    assert main(["--out", str(tmp_path / "q"), "ssid-query"]) == 0
    assert [r["query_id"] for r in read_jsonl(tmp_path / "q" / "ssid-query.jsonl")] == ["1004#0", "1004#1", "1005#0"]
    assert main(["--out", str(tmp_path / "q"), "ssid-memorize"]) == 2
    assert "cannot write ssid-memorize: it needs the index (set SSID_INDEX)" in capsys.readouterr().err
    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    assert main(["--out", str(tmp_path / "all")]) == 0
    assert len(read_jsonl(tmp_path / "all" / "ssid-memorize.jsonl")) == 3  # zeroshot: training images only


def test_split_collection_names_a_bad_protocol_or_train_size(collection):
    with pytest.raises(ValueError, match="protocol 'fewshot' is not a protocol; use one of standard, zeroshot"):
        split_collection(collection, "fewshot")
    with pytest.raises(ValueError, match="train_size -1 must be a whole number >= 0"):
        split_collection(collection, "standard", -1)
