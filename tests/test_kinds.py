"""GRACE's identifier kinds: built by ``swift-ssid identifiers`` in build-index's format, checked kind by kind.

Every kind builds from the bundled demo collection and from a Karpathy-split file; ``structured`` clusters
embeddings of a tiny random CLIP built from config with the real scikit-learn code path. Decoding soundness per
kind uses the real Qwen2 tokenizer (atomic with its new tokens added as ms-swift adds them) and a tiny random LM.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from swift_ssid.cli import main
from swift_ssid.core import kinds
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex
from swift_ssid.testing.tiny_models import DEMO_DIR, build_tiny_clip
from swift_ssid.workflows.kinds import KindOptions

DEMO = DEMO_DIR / "collection.jsonl"
QWEN2_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / ".cache" / "assets" / "qwen2-tokenizer"
# (file name, split, captions): 3 training (1 restval), 1 val (never indexed), 2 test; two share a first caption.
KARPATHY = [
    ("1000.jpg", "train", ["A dog runs on grass.", "A brown dog plays outside."]),
    ("1001.jpg", "train", ["Two men talk.", "Men near a car."]),
    ("1002.jpg", "restval", ["A dog runs on grass.", "A red bus."]),
    ("1003.jpg", "val", ["A cat sleeps."]),
    ("1004.jpg", "test", ["A girl climbs a wall.", "A child on a rock."]),
    ("1005.jpg", "test", ["A man rides a bike."]),
]
INDEX_FILES = {"index.jsonl", "index_meta.json", "stats.json", "regenerate.jsonl"}


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory) -> tuple[Path, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("karpathy")
    images = root / "flickr30k-images"
    images.mkdir()
    rows = []
    for i, (name, split, captions) in enumerate(KARPATHY):
        Image.new("RGB", (40, 30), (40 * i, 100, 200 - 30 * i)).save(images / name)
        rows.append({"filename": name, "imgid": i, "split": split, "sentences": [{"raw": c} for c in captions]})
    path = root / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": rows, "dataset": "flickr30k"}))
    return path, images


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def build(kind: str, collection: Path, out: Path, *extra: str, image_root: Path | None = None) -> int:
    argv = ["identifiers", kind, "--collection", str(collection), "--out", str(out), *extra]
    return main(argv + (["--image-root", str(image_root)] if image_root else []))


def kind_args(kind: str, clip_dir: Path) -> list[str]:
    return ["--encoder", str(clip_dir), "--k", "2", "--c", "2", "--n-init", "3"] if kind == "structured" else []


@pytest.mark.parametrize("source", ["demo", "karpathy"])
@pytest.mark.parametrize("kind", kinds.BUILDABLE)
def test_every_kind_builds_an_index_the_datasets_read(kind, source, karpathy, clip_dir, tmp_path, capsys):
    from swift_ssid.integration.datasets import memorize_rows, retrieve_rows

    collection, root = (DEMO, None) if source == "demo" else karpathy
    out = tmp_path / kind
    assert build(kind, collection, out, *kind_args(kind, clip_dir), image_root=root) == 0
    assert f"{kind} identifiers for" in capsys.readouterr().out
    assert INDEX_FILES <= {p.name for p in out.iterdir()}
    items = load_collection(collection, root)
    expected = [item.image for item in items if item.split != "val"]  # val is in no dataset
    index = IdentifierIndex.load(out)
    assert [e.image for e in index.entries] == expected
    meta = json.loads((out / "index_meta.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert meta["kind"] == stats["kind"] == kind and meta["params"] == stats["params"]
    assert stats["images"] == len(expected) and stats["valid"] == len(expected) and stats["invalid"] == 0
    assert 0 < stats["distinct_ratio"] <= 1 and stats["new_tokens_added"] == (len(expected) if kind == "atomic" else 0)
    # the datasets take the index unchanged, with the no-reason target (baselines have no reason line)
    rows = memorize_rows(out, items, with_reason=False) + retrieve_rows(out, items, with_reason=False)
    targets = {row["messages"][-1]["content"] for row in rows}
    assert targets <= {f"identifier:{index.identifier_for(image)}" for image in expected}
    with pytest.raises(ValueError, match="no reason"):
        memorize_rows(out, items)


def test_numeric_string_atomic_follow_grace_and_are_unique(tmp_path):
    assert kinds.numeric_identifiers(13)[10:] == ["1 0", "1 1", "1 2"]  # GRACE: " ".join(list(str(n)))
    assert kinds.string_identifiers(13)[10:] == ["10", "11", "12"]  # GRACE: str(n)
    assert kinds.atomic_tokens(3) == ["img_000000", "img_000001", "img_000002"]
    assert kinds.atomic_tokens(1_234_568)[-1] == "img_1234567"
    for kind in ("numeric", "string", "atomic"):
        out = tmp_path / kind
        assert build(kind, DEMO, out) == 0
        ids = [e.identifier for e in IdentifierIndex.load(out).entries]
        assert len(set(ids)) == len(ids) == 12
    assert kinds.index_new_tokens(tmp_path / "atomic") == [f"img_{i:06d}" for i in range(12)]
    assert (tmp_path / "atomic" / "new_tokens.txt").read_text().split() == kinds.index_new_tokens(tmp_path / "atomic")
    assert kinds.index_new_tokens(tmp_path / "numeric") == [] and kinds.index_kind(tmp_path / "numeric") == "numeric"


def test_semantic_collisions_follow_the_policy_and_pseudo_captions_replace(karpathy, tmp_path):
    path, root = karpathy
    assert build("semantic", path, tmp_path / "shared", image_root=root) == 0
    shared = IdentifierIndex.load(tmp_path / "shared")
    assert shared.images_for("a dog runs on grass") == [str(root / "1000.jpg"), str(root / "1002.jpg")]
    stats = json.loads((tmp_path / "shared" / "stats.json").read_text())
    assert stats["collision_groups"] == 1 and stats["distinct_ratio"] == 0.8
    assert build("semantic", path, tmp_path / "dis", "--collisions", "disambiguate", image_root=root) == 0
    assert IdentifierIndex.load(tmp_path / "dis").identifier_for(str(root / "1002.jpg")) == "a dog runs on grass - 2"
    pseudo = tmp_path / "pseudo.jsonl"
    pseudo.write_text(json.dumps({"image": "1004.jpg", "caption": "A climber on a wall."}) + "\n")
    args = ["--pseudo-captions", str(pseudo), "--caption-index", "1"]
    assert build("semantic", path, tmp_path / "pseudo", *args, image_root=root) == 0
    index = IdentifierIndex.load(tmp_path / "pseudo")
    assert index.identifier_for(str(root / "1004.jpg")) == "a climber on a wall"
    assert index.identifier_for(str(root / "1000.jpg")) == "a brown dog plays outside"
    assert index.identifier_for(str(root / "1005.jpg")) == "a man rides a bike"  # one caption: the last one
    pseudo.write_text(json.dumps({"image": "missing.jpg", "caption": "x"}) + "\n")
    assert build("semantic", path, tmp_path / "bad", "--pseudo-captions", str(pseudo), image_root=root) == 2


def leaf_groups(paths: list[list[int]]) -> Counter:
    """Images per parent path of the leaves that carry a position level (clusters of 2..c images)."""
    return Counter(tuple(p[:-1]) for p in paths)


def test_hierarchical_kmeans_is_deterministic_and_bounded():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.3, size=(70, 8)) for m in (0, 3, 6)])
    a = kinds.hierarchical_kmeans(x, k=3, c=5, seed=7, n_init=2, minibatch_from=100)  # MiniBatchKMeans at the top
    b = kinds.hierarchical_kmeans(x, k=3, c=5, seed=7, n_init=2, minibatch_from=100)
    assert a == b
    ids = [kinds.structured_identifier(p) for p in a]
    assert len(set(ids)) == len(ids) == 210
    assert all(0 <= v < 5 for p in a for v in p) and min(map(len, a)) >= 2
    assert all(size <= 5 for size in leaf_groups(a).values())  # the leaf bound c
    assert kinds.structured_identifier([3, 17, 5]) == "0_3-1_17-2_5"
    # identical embeddings cannot be split by k-means: contiguous chunks keep the recursion finite and bounded
    same = kinds.hierarchical_kmeans(np.ones((40, 4)), k=3, c=4, n_init=1)
    assert len({tuple(p) for p in same}) == 40 and all(size <= 4 for size in leaf_groups(same).values())
    with pytest.raises(ValueError, match="k must be at least 2"):
        kinds.hierarchical_kmeans(x, k=1)


def test_structured_from_the_tiny_clip_is_deterministic_and_reuses_its_cache(clip_dir, tmp_path, capsys):
    args = ["--encoder", str(clip_dir), "--k", "2", "--c", "3", "--n-init", "4", "--seed", "1"]
    assert build("structured", DEMO, tmp_path / "a", *args) == 0
    cache = tmp_path / "a" / "image_embeddings.npz"
    assert build("structured", DEMO, tmp_path / "b", *args, "--embeddings-cache", str(cache)) == 0
    a, b = (IdentifierIndex.load(tmp_path / n) for n in ("a", "b"))
    assert [e.identifier for e in a.entries] == [e.identifier for e in b.entries]
    paths = [[int(part.split("_")[1]) for part in e.identifier.split("-")] for e in a.entries]
    assert all(size <= 3 for size in leaf_groups(paths).values()) and all(p[0] in (0, 1) for p in paths)
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["params"]["k"] == 2 and stats["params"]["c"] == 3 and len(stats["params"]["encoder_fingerprint"]) == 16
    assert build("structured", DEMO, tmp_path / "c") == 2
    assert "pass --encoder" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert build("numeric", tmp_path / "missing.jsonl", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert err.startswith("swift-ssid identifiers: error:") and "missing.jsonl" in err and len(err.splitlines()) == 1
    assert build("semantic", DEMO, tmp_path / "x", "--caption-index", "-1") == 2
    assert "--caption-index -1" in capsys.readouterr().err


# ---------------------------------------------------------------- tokens and decoding with the real Qwen2 tokenizer


@pytest.fixture(scope="module")
def demo_indexes(tmp_path_factory, clip_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("indexes")
    out = {}
    for kind in kinds.BUILDABLE:
        extra = [*kind_args(kind, clip_dir), "--tokenizer", str(QWEN2_TOKENIZER_DIR)]
        assert build(kind, DEMO, root / kind, *extra) == 0
        out[kind] = root / kind
    return out


def test_token_statistics_explain_the_kinds(demo_indexes):
    tokens = {k: json.loads((p / "stats.json").read_text())["tokens"] for k, p in demo_indexes.items()}
    assert tokens["atomic"]["tokens_per_identifier"] == {"min": 1, "median": 1, "mean": 1.0, "max": 1}
    assert tokens["atomic"]["new_tokens_added"] == 12 and tokens["atomic"]["vocab_growth"] > 0
    assert tokens["atomic"]["trie_root_fanout"] == 12  # every image one step from the root
    assert tokens["numeric"]["tokens_per_identifier"]["max"] == 3  # "1 1": digit, space, digit
    assert tokens["string"]["tokens_per_identifier"]["max"] == 2  # "11": Qwen2 splits digits
    assert (
        tokens["semantic"]["tokens_per_identifier"]["mean"] > tokens["caption-derived"]["tokens_per_identifier"]["mean"]
    )
    for kind, t in tokens.items():
        assert t["base_vocab"] == tokens["numeric"]["base_vocab"] > 150_000 and (t["new_tokens_added"] == 0) == (
            kind != "atomic"
        )
        assert t["trie_nodes"] > 12 and t["trie_max_fanout"] >= t["trie_root_fanout"] >= 1


def tiny_lm(vocab_size: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 2.0)  # peaked random logits: the mask really matters
    return model


@pytest.mark.parametrize("kind", kinds.BUILDABLE)
def test_constrained_decoding_is_sound_and_complete_per_kind(kind, demo_indexes, qwen2_tokenizer):
    """Beam search under the trie writes only this kind's identifiers, kept as text (special tokens too)."""
    import copy

    from transformers import LogitsProcessorList

    from swift_ssid.core.answers import parse_choice
    from swift_ssid.decoding.constrained import SSIDConstrainedLogitsProcessor
    from swift_ssid.decoding.trie import build_identifier_trie, identifier_token_sequences

    tokenizer = copy.deepcopy(qwen2_tokenizer)
    new = kinds.index_new_tokens(demo_indexes[kind])
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})
    index = IdentifierIndex.load(demo_indexes[kind])
    identifiers = index.identifiers()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trie = build_identifier_trie(tokenizer, identifiers, end="eos", eos_token_id=eos)
    trigger, seqs = identifier_token_sequences(tokenizer, identifiers, end="eos", eos_token_id=eos)
    for seq in seqs:  # complete: every identifier's tokens lead to a leaf
        node = trie.walk(seq)
        assert node >= 0 and trie.is_leaf(node)
    model = tiny_lm(len(tokenizer), seed=len(kind))
    beams = 4
    prompt = tokenizer("Which image matches this caption? A dog.", add_special_tokens=False)["input_ids"]
    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        logits_processor=LogitsProcessorList([SSIDConstrainedLogitsProcessor(trie, num_beams=beams, reason=False)]),
        max_new_tokens=len(trigger) + max(map(len, seqs)) + 2,
        num_beams=beams,
        num_return_sequences=beams,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    texts = tokenizer.batch_decode(out[:, len(prompt) :], skip_special_tokens=False)
    found = [parse_choice(t.replace("<|im_end|>", "").replace("<|endoftext|>", ""))[0] for t in texts]
    assert len(set(found)) == beams and set(found) <= set(identifiers), texts
    if kind == "atomic":  # one new token per identifier, kept by decoding without skip_special_tokens
        assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in found)


# ---------------------------------------------------------------- recipes, protocol checks, tables


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava1_6_vicuna"])
def test_kind_recipes_change_only_the_index_and_atomic_adds_its_tokens(family):
    import yaml

    recipes = Path(__file__).resolve().parents[1] / "recipes"

    def load(name: str) -> dict:
        config = yaml.safe_load((recipes / name).read_text())
        config["ENV"].pop("SSID_INDEX")
        config.pop("output_dir")
        return config

    noreason = load(f"train_{family}_noreason.yaml")
    kind = load(f"train_{family}_kind_noreason.yaml")
    atomic = load(f"train_{family}_kind_atomic_noreason.yaml")
    assert kind == noreason  # same model, data, targets and training: only SSID_INDEX (and the output) differ
    assert atomic.pop("modules_to_save") == ["embed_tokens", "lm_head"]
    assert atomic.pop("new_special_tokens") == ["runs/flickr30k/index_atomic/new_tokens.txt"]
    assert atomic == noreason and kind["dataset"] == ["ssid-memorize-noreason", "ssid-retrieve-noreason"]


def test_identifiers_protocol_checks_its_arguments_before_running(tmp_path, capsys):
    from swift_ssid.workflows.protocols import RetrieveOptions, run_identifiers

    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query": "a dog", "gold_images": ["x.jpg"]}) + "\n")
    opts = RetrieveOptions("m", "ssid_qwen2_5", tmp_path)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "train_qwen2_5_vl_kind_noreason.yaml"
    with pytest.raises(ValueError, match="give distinct kinds"):
        run_identifiers(opts, queries, tmp_path / "out", DEMO, recipe, kinds=["numeric", "numeric"])
    with pytest.raises(ValueError, match="pass --encoder"):
        run_identifiers(opts, queries, tmp_path / "out", DEMO, recipe, kinds=["structured"])
    with pytest.raises(FileNotFoundError, match="recipe"):
        run_identifiers(opts, queries, tmp_path / "out", DEMO, tmp_path / "none.yaml", kinds=["numeric"])
    with pytest.raises(ValueError, match="gold image"):  # x.jpg is in no index: refused before any training
        run_identifiers(opts, queries, tmp_path / "out", DEMO, recipe, kinds=["numeric"])
    assert not (tmp_path / "out" / "sft_numeric").exists()
    argv = ["protocol", "identifiers", "--model", "m", "--template", "ssid_qwen2_5", "--queries", str(queries)]
    assert main([*argv, "--collection", str(DEMO), "--out", str(tmp_path / "o2"), "--kinds", "structured"]) == 2
    assert "pass --encoder" in capsys.readouterr().err


def test_kind_tables_follow_the_papers_layout():
    from swift_ssid.core.metrics import RunMetrics
    from swift_ssid.reporting.tables import TableRow, kind_tables, kind_tables_csv

    def row(name: str, r1: float, r5: float, r10: float) -> TableRow:
        return TableRow(name, RunMetrics({1: r1, 5: r5, 10: r10}, n_queries=20), name)

    table = [row("numeric", 0.1, 0.2, 0.3), row("ssid", 0.4, 0.5, 0.55), row("atomic", 0.6, 0.7, 0.8)]
    text = kind_tables(table, model="qwen", collection="flickr")
    first, second = text.split("Table II")[0], text.split("Table II")[1].split("Reference")[0]
    assert "| Numeric Identifier | 10.0 | 20.0 | 30.0 | 20 |" in first
    assert "| Structured Semantic Identifier (SSID) | **40.0** | **50.0** | **55.0** | 20 |" in first
    assert "| Atomic Identifier | qwen | **60.0** | **70.0** | **80.0** | 20 |" in second and "SSID" in second
    assert "| Image tokenization | flamingo | 50.4 | 73.2 | 76.9 |" in text
    assert "Reference" not in kind_tables(table, reference=False)
    csv_lines = kind_tables_csv(table, reference=False).splitlines()
    assert csv_lines[1:] == [
        "I,numeric,Numeric Identifier,this run,this model,,10.0,20.0,30.0,20",
        "I,ssid,Structured Semantic Identifier (SSID),this run,this model,,40.0,50.0,55.0,20",
        "II,atomic,Atomic Identifier,this run,this model,,60.0,70.0,80.0,20",
    ]


# ---------------------------------------------------------------- one folder format, one options type


def test_a_kind_index_is_read_through_the_one_reader_with_its_checksums(tmp_path):
    from swift_ssid.core.index import file_sha256, index_kind, read_manifest, read_stats

    assert build("atomic", DEMO, tmp_path / "atomic") == 0
    meta = read_manifest(tmp_path / "atomic")
    assert meta["kind"] == index_kind(tmp_path / "atomic") == "atomic" and meta["new_tokens_file"] == "new_tokens.txt"
    names = ("index.jsonl", "stats.json", "regenerate.jsonl", "new_tokens.txt")
    assert meta["sha256"] == {name: file_sha256(tmp_path / "atomic" / name) for name in names}
    assert read_stats(tmp_path / "atomic") == json.loads((tmp_path / "atomic" / "stats.json").read_text())
    (tmp_path / "atomic" / "new_tokens.txt").write_text("img_000000\n")  # a hand edit, or another build's list
    with pytest.raises(ValueError, match="mixes two builds"):
        kinds.index_new_tokens(tmp_path / "atomic")


def test_kind_flags_have_one_name_in_both_commands_and_old_spellings_still_parse():
    import argparse

    from swift_ssid.cli import identifiers, protocol

    parser = argparse.ArgumentParser()
    identifiers.add_arguments(parser)
    base = ["structured", "--collection", "c.jsonl", "--out", "o", "--encoder", "e"]
    new = ["--cluster-k", "4", "--cluster-c", "5", "--cluster-seed", "1", "--encoder-device", "cuda"]
    new += ["--encoder-dtype", "float16", "--encoder-batch-size", "3"]
    old = ["--k", "4", "--c", "5", "--seed", "1", "--device", "cuda", "--dtype", "float16", "--batch-size", "3"]
    a = identifiers.kind_options(parser.parse_args(base + new))
    assert a == identifiers.kind_options(parser.parse_args(base + old))
    assert (a.kind, a.k, a.c, a.seed, a.device, a.dtype, a.batch_size) == ("structured", 4, 5, 1, "cuda", "float16", 3)
    assert "--cluster-k" in parser.format_help() and "--k " not in parser.format_help()  # the alias is hidden
    assert identifiers.kind_options(parser.parse_args(base)) == KindOptions(kind="structured", encoder="e")

    parser = argparse.ArgumentParser()
    protocol.add_arguments(parser)
    args = parser.parse_args(
        ["identifiers", "--model", "m", "--template", "t", "--out", "o", "--queries", "q", "--collection", "c"]
        + ["--k", "7", *new]  # --k is the beam count here
    )
    assert args.k == 7 and identifiers.kind_options(args) == KindOptions(
        encoder=None, k=4, c=5, seed=1, device="cuda", dtype="float16", batch_size=3
    )
    assert KindOptions().spec("numeric").kind == "numeric"
    with pytest.raises(ValueError, match="pass --encoder"):
        KindOptions().spec("structured")
