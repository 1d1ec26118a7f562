"""Tiny random models (swift_ssid.testing.tiny_models) and the bundled demo collection.

Fast tests check each model's config/tokenizer invariants and run a forward/backward pass on a batch built by
ms-swift's own template encode. The slow tests run the real `swift infer` / `swift sft` CLI on each family.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swift_ssid.testing import tiny_models as tm

DEMO_IMAGES = tm.DEMO_DIR / "images"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: each tiny model is built once per session
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def qwen2_5_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tm.build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.fixture(scope="session")
def llava_next_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tm.build_tiny_llava_next(tmp_path_factory.mktemp("tiny") / "llava_next")


@pytest.fixture(scope="session")
def qwen2_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tm.build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny") / "qwen2_text")


@pytest.fixture(scope="session")
def paligemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tm.build_tiny_paligemma(tmp_path_factory.mktemp("tiny") / "paligemma")


def _model_dir(request: pytest.FixtureRequest, key: str) -> Path:
    return request.getfixturevalue(f"{key}_dir")


def _flag(key: str, name: str) -> str | None:
    """Value of flag ``name`` in ``SWIFT_FLAGS[key]`` (None when absent)."""
    flags = tm.SWIFT_FLAGS[key]
    return flags[flags.index(name) + 1] if name in flags else None


def _safetensors_numel(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


# ---------------------------------------------------------------------------------------------------------------
# Qwen2.5-VL
# ---------------------------------------------------------------------------------------------------------------


def test_qwen2_5_vl_special_ids_match_the_real_model(qwen2_5_vl_dir: Path) -> None:
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    processor = AutoProcessor.from_pretrained(str(qwen2_5_vl_dir))
    tokenizer = processor.tokenizer
    for token, want in tm.QWEN2_SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == want, token
    # ms-swift's Qwen2VLTemplate hard-codes these two ids.
    from swift.template.templates.qwen import Qwen2_5VLTemplate

    assert Qwen2_5VLTemplate.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert Qwen2_5VLTemplate.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")

    config = AutoConfig.from_pretrained(str(qwen2_5_vl_dir))
    assert (config.image_token_id, config.video_token_id) == (151655, 151656)
    assert (config.vision_start_token_id, config.vision_end_token_id) == (151652, 151653)
    assert config.text_config.vocab_size == tm.QWEN2_5_VL_VOCAB_SIZE >= len(tokenizer)
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert GenerationConfig.from_pretrained(str(qwen2_5_vl_dir)).eos_token_id == [151645, 151643]
    assert processor.image_processor.size["longest_edge"] == 112 * 112
    assert processor.video_processor is not None
    assert 5_000_000 < _safetensors_numel(qwen2_5_vl_dir) < 15_000_000


def test_qwen2_5_vl_without_tokenizer_names_make_assets(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make assets"):
        tm.build_tiny_qwen2_5_vl(tmp_path / "model", tokenizer_dir=tmp_path / "missing")


def test_qwen2_5_vl_rejects_a_tokenizer_with_other_special_ids(tmp_path: Path, qwen2_text_dir: Path) -> None:
    # The small text tokenizer has <|im_start|> etc. but at ids ~1.8k, not Qwen2's 151644.
    with pytest.raises(ValueError, match=r"<\|image_pad\|>=\S+ \(want 151655\)"):
        tm.build_tiny_qwen2_5_vl(tmp_path / "model", tokenizer_dir=qwen2_text_dir)
    assert not (tmp_path / "model" / "config.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# LLaVA-NeXT
# ---------------------------------------------------------------------------------------------------------------


def test_llava_next_tokenizer_is_llama_style(llava_next_dir: Path) -> None:
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(llava_next_dir))
    tokenizer = processor.tokenizer
    config = AutoConfig.from_pretrained(str(llava_next_dir))
    assert [tokenizer.convert_tokens_to_ids(t) for t in ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]] == [
        0,
        1,
        2,
        3,
        258,
    ]
    assert processor.image_token == "<image>"
    assert tokenizer.convert_tokens_to_ids("<image>") == processor.image_token_id == config.image_token_index
    assert tokenizer.pad_token_id == config.text_config.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) <= config.text_config.vocab_size
    # BOS is prepended like LLaMA's; characters outside the training text fall back to bytes and round-trip.
    text = "A cat naps in a café 🐱"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 1 and tokenizer.unk_token_id not in ids
    assert "<0xF0>" in tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert processor.patch_size == config.vision_config.patch_size
    assert processor.image_processor.crop_size["height"] == config.vision_config.image_size


# ---------------------------------------------------------------------------------------------------------------
# Real LM, random vision (LLaVA-NeXT around the real SmolLM2-135M-Instruct)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_lm_llava_dir(tmp_path_factory: pytest.TempPathFactory, real_lm_dir: Path) -> Path:
    return tm.build_real_lm_llava_next(tmp_path_factory.mktemp("real_lm_llava") / "model", lm_dir=real_lm_dir)


def test_real_lm_llava_carries_the_real_lm_unchanged(real_lm_llava_dir: Path, real_lm_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    real = load_file(str(real_lm_dir / "model.safetensors"))
    built = load_file(str(real_lm_llava_dir / "model.safetensors"))
    real_tokenizer = AutoTokenizer.from_pretrained(str(real_lm_dir))
    rows = len(real_tokenizer)
    prefix = "language_model."  # transformers saves LLaVA-NeXT in the original checkpoints' key layout
    assert {k for k in built if k.startswith(prefix)} == {prefix + k for k in real}
    for key, weight in real.items():
        mine = built[prefix + key]
        assert torch.equal(mine[:rows] if key.endswith("embed_tokens.weight") else mine, weight), key
    assert "lm_head.weight" not in built  # tied to the embeddings, as in SmolLM2

    config = AutoConfig.from_pretrained(str(real_lm_llava_dir))
    processor = AutoProcessor.from_pretrained(str(real_lm_llava_dir))
    tokenizer = processor.tokenizer
    assert config.tie_word_embeddings and config.text_config.tie_word_embeddings
    assert tokenizer.convert_tokens_to_ids("<image>") == config.image_token_index == rows
    assert len(tokenizer) == rows + 1 <= config.text_config.vocab_size
    caption = "Two dogs run on the beach; identifier: dog - beach"
    assert tokenizer(caption)["input_ids"] == real_tokenizer(caption)["input_ids"]
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert processor.patch_size == config.vision_config.patch_size


def test_real_lm_llava_encodes_chatml_with_image_tokens_through_swift(real_lm_llava_dir: Path) -> None:
    import torch
    from swift.model import get_model_processor
    from swift.template import get_template

    model, processor = get_model_processor(
        str(real_lm_llava_dir), model_type=_flag("real_lm_llava", "--model_type"), torch_dtype=torch.float32,
        device_map="cpu",
    )  # fmt: skip
    template = get_template(processor, template_type=_flag("real_lm_llava", "--template"))
    template.set_mode("train")
    batch = template.data_collator([template.encode(row) for row in _train_rows(with_images=True)])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>user\n<image>") and "<|im_start|>assistant\nidentifier:" in text
    image_id = model.config.image_token_index
    assert ((batch["input_ids"] == image_id).sum(dim=1) > 0).all()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_real_lm_llava_demo_family_is_wired_and_leaves_the_default_family_alone(
    tmp_path: Path, real_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swift_ssid.workflows import demo

    monkeypatch.setenv("SWIFT_SSID_ASSETS", str(real_lm_dir.parent))
    assert demo.resolve_inputs(demo.REAL_LM_FAMILY)["real_lm"] == str(real_lm_dir)
    assert demo.TEMPLATES[demo.REAL_LM_FAMILY] == "ssid_" + _flag(demo.REAL_LM_FAMILY, "--template")
    real = demo.demo_config(tmp_path, demo.REAL_LM_FAMILY, tmp_path / "model")
    tiny = demo.demo_config(tmp_path, demo.DEFAULT_FAMILY, tmp_path / "model")

    def value(flags: list[str], name: str) -> str:
        return flags[flags.index(name) + 1]

    assert value(real.sft_flags, "--learning_rate") == "1e-4" and value(tiny.sft_flags, "--learning_rate") == "1e-2"
    assert value(tiny.sft_flags, "--max_steps") == str(demo.DEMO_STEPS) and tiny.memorisation_images == 8
    assert value(real.sft_flags, "--max_steps") == str(demo.default_steps(demo.REAL_LM_FAMILY))
    assert "--template" not in real.model_flags and real.template == "ssid_llava1_6_yi_hf"


# ---------------------------------------------------------------------------------------------------------------
# Qwen2 text
# ---------------------------------------------------------------------------------------------------------------


def test_qwen2_text_tokenizer_is_small_chatml_and_lossless(qwen2_text_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen2_text_dir))
    config = AutoConfig.from_pretrained(str(qwen2_text_dir))
    assert 1_500 <= len(tokenizer) <= 4_096 and len(tokenizer) <= config.vocab_size
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}
    assert sorted(special.values()) == list(range(len(tokenizer) - 3, len(tokenizer)))
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (special["<|im_end|>"], special["<|endoftext|>"])
    assert config.eos_token_id == special["<|im_end|>"]
    # Special tokens are atomic inside text; any text round-trips (byte-level BPE).
    ids = tokenizer("<|im_start|>user\nDas Café — 🐱<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == special["<|im_start|>"] and ids[-1] == special["<|im_end|>"]
    assert tokenizer.decode(ids) == "<|im_start|>user\nDas Café — 🐱<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("key", ["qwen2_text", "llava_next", "paligemma"])
def test_builds_are_deterministic_per_seed(tmp_path: Path, key: str) -> None:
    build = tm.BUILDERS[key]
    first, again, other = build(tmp_path / "a", seed=0), build(tmp_path / "b", seed=0), build(tmp_path / "c", seed=1)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_swift_flags_cover_every_builder() -> None:
    assert tm.SWIFT_FLAGS.keys() == tm.BUILDERS.keys()
    for key in tm.SWIFT_FLAGS:
        assert _flag(key, "--model_type") and _flag(key, "--template") and _flag(key, "--torch_dtype") == "float32"


# ---------------------------------------------------------------------------------------------------------------
# Forward pass on batches encoded by ms-swift's own template (the path `swift sft` takes)
# ---------------------------------------------------------------------------------------------------------------


def _train_rows(with_images: bool) -> list[dict[str, Any]]:
    rows = []
    for name in ["astronaut", "coffee"]:
        row: dict[str, Any] = {
            "messages": [
                {"role": "user", "content": ("<image>" if with_images else "") + "Describe."},
                {"role": "assistant", "content": f"identifier:{name}"},
            ]
        }
        if with_images:
            row["images"] = [str(DEMO_IMAGES / f"{name}.jpg")]
        rows.append(row)
    return rows


@pytest.mark.parametrize("key", ["qwen2_5_vl", "llava_next", "qwen2_text", "paligemma"])
def test_forward_backward_on_swift_template_batch(request: pytest.FixtureRequest, key: str) -> None:
    import torch
    from swift.model import get_model_processor
    from swift.template import get_template

    model_dir = _model_dir(request, key)
    model, processor = get_model_processor(
        str(model_dir), model_type=_flag(key, "--model_type"), torch_dtype=torch.float32, device_map="cpu"
    )
    max_pixels = _flag(key, "--max_pixels")
    template = get_template(
        processor, template_type=_flag(key, "--template"), max_pixels=int(max_pixels) if max_pixels else None
    )
    template.set_mode("train")
    with_images = key != "qwen2_text"
    batch = template.data_collator([template.encode(row) for row in _train_rows(with_images)])

    out = model(**batch)
    assert torch.isfinite(out.loss)
    # The response tokens are supervised; the prompt (and image) tokens are not.
    supervised = (batch["labels"] != -100).sum(dim=1)
    assert (supervised > 0).all() and (supervised < batch["attention_mask"].sum(dim=1)).all()
    if with_images:
        image_id = getattr(model.config, "image_token_id", None) or model.config.image_token_index
        per_row = (batch["input_ids"] == image_id).sum(dim=1)
        assert (per_row > 0).all()
        if max_pixels:  # 12544 px = at most 16 merged 28x28 patches
            assert (per_row <= int(max_pixels) // (28 * 28)).all()
        # Gradient reaches the vision tower's patch embedding: the image features feed the loss.
        out.loss.backward()
        patch_embed = next(p for n, p in model.named_parameters() if "patch_embed" in n or "patch_embedding" in n)
        assert patch_embed.grad is not None and patch_embed.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# The bundled demo collection
# ---------------------------------------------------------------------------------------------------------------


def test_demo_collection_is_complete_and_small() -> None:
    from PIL import Image

    rows = [json.loads(line) for line in (tm.DEMO_DIR / "collection.jsonl").read_text("utf-8").splitlines() if line]
    assert len(rows) == 12
    assert sorted(r["split"] for r in rows).count("test") == 4 and {r["split"] for r in rows} == {"train", "test"}
    readme = (tm.DEMO_DIR / "README.md").read_text("utf-8")
    total = 0
    for row in rows:
        path = tm.DEMO_DIR / row["image"]
        assert row["image"].startswith("images/") and path.is_file(), row["image"]
        with Image.open(path) as image:
            assert image.format == "JPEG" and max(image.size) <= 256, row["image"]
        total += path.stat().st_size
        captions = row["captions"]
        assert len(captions) == 5 and len(set(captions)) == 5 and all(c.strip() == c and c for c in captions)
        assert path.stem in readme, f"README.md gives no licence for {path.name}"
    assert total < 500_000
    assert len({c for r in rows for c in r["captions"]}) == 60


# ---------------------------------------------------------------------------------------------------------------
# Slow: the real swift CLI
# ---------------------------------------------------------------------------------------------------------------


def _swift(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    swift = Path(sys.executable).with_name("swift")
    if not swift.is_file():
        pytest.fail(f"swift CLI not found next to {sys.executable}: install ms-swift into this environment")
    env = {**os.environ, **tm.OFFLINE_ENV}
    proc = subprocess.run([str(swift), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"swift {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["qwen2_5_vl", "llava_next"])
def test_swift_infer_cli_on_images(request: pytest.FixtureRequest, tmp_path: Path, key: str) -> None:
    images = [str(DEMO_IMAGES / "chelsea.jpg"), str(DEMO_IMAGES / "rocket.jpg")]
    rows = [{"messages": [{"role": "user", "content": "<image>Describe."}], "images": [img]} for img in images]
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    result = tmp_path / "out.jsonl"
    model_dir = _model_dir(request, key)
    _swift(
        ["infer", "--model", str(model_dir), *tm.SWIFT_FLAGS[key], "--val_dataset", str(data),
         "--result_path", str(result), "--max_new_tokens", "8"],
        cwd=tmp_path,
    )  # fmt: skip
    out = _read_jsonl(result)
    assert [row["images"][0]["path"] for row in out] == images
    for row in out:
        assert isinstance(row["response"], str) and row["response"]
        assert row["messages"][-1] == {"role": "assistant", "content": row["response"]}


@pytest.mark.slow
def test_swift_infer_answers_on_an_image_with_the_real_lm_llava(real_lm_llava_dir: Path, tmp_path: Path) -> None:
    image = str(DEMO_IMAGES / "chelsea.jpg")
    rows = [{"messages": [{"role": "user", "content": "<image>What is the capital of France?"}], "images": [image]}]
    result = tmp_path / "out.jsonl"
    _swift(
        ["infer", "--model", str(real_lm_llava_dir), *tm.SWIFT_FLAGS["real_lm_llava"],
         "--val_dataset", str(_write_jsonl(tmp_path / "rows.jsonl", rows)), "--result_path", str(result),
         "--max_new_tokens", "12", "--temperature", "0"],
        cwd=tmp_path,
    )  # fmt: skip
    (out,) = _read_jsonl(result)
    assert out["images"][0]["path"] == image
    assert "Paris" in out["response"], out["response"]  # the real LM answers through the random image tokens


@pytest.mark.slow
def test_swift_sft_lora_then_infer_with_adapters_qwen2_text(qwen2_text_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pairs = [("A dog runs on the beach.", "dog - beach"), ("Two men play chess.", "two men - chess board")]
    train = [
        {"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": f"identifier:{i}"}]}
        for c, i in pairs * 2
    ]
    data = _write_jsonl(tmp_path / "train.jsonl", train)
    out_dir = tmp_path / "sft"
    _swift(
        ["sft", "--model", str(qwen2_text_dir), *tm.SWIFT_FLAGS["qwen2_text"], *tm.SFT_CPU_FLAGS,
         "--dataset", str(data), "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_steps", "2",
         "--learning_rate", "1e-3", "--output_dir", str(out_dir)],
        cwd=tmp_path,
    )  # fmt: skip
    ckpt = out_dir / "checkpoint-2"  # --add_version false: no vX-<timestamp> folder
    weights = load_file(str(ckpt / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero; training must move it"

    queries = _write_jsonl(tmp_path / "rows.jsonl", [{"messages": [{"role": "user", "content": c}]} for c, _ in pairs])
    greedy = ["--val_dataset", str(queries), "--max_new_tokens", "8", "--temperature", "0", "--logprobs", "true"]
    # --adapters alone: model dir, model_type and template come back from the checkpoint's args.json.
    _swift(["infer", "--adapters", str(ckpt), *greedy, "--result_path", str(tmp_path / "tuned.jsonl")], cwd=tmp_path)
    base = ["infer", "--model", str(qwen2_text_dir), *tm.SWIFT_FLAGS["qwen2_text"]]
    _swift([*base, *greedy, "--result_path", str(tmp_path / "base.jsonl")], cwd=tmp_path)
    tuned, untuned = _read_jsonl(tmp_path / "tuned.jsonl"), _read_jsonl(tmp_path / "base.jsonl")
    assert [row["messages"][0]["content"] for row in tuned] == [c for c, _ in pairs]
    for row in tuned:  # the response is the greedy tokens the log-probabilities list
        assert row["response"] == "".join(t["token"] for t in row["logprobs"]["content"])
    # the adapters were loaded: the first token's log-probability moved away from the base model's
    first = [[row["logprobs"]["content"][0]["logprob"] for row in rows] for rows in (tuned, untuned)]
    assert first[0] != first[1], first
