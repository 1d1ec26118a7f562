"""Tiny random models built from config, loadable offline by the real ms-swift 4.6.0 CLI.

The builders write a complete model directory (weights, config, tokenizer, processor) in seconds:

| key | builder | architecture and tokenizer |
| --- | --- | --- |
| ``qwen2_5_vl`` | :func:`build_tiny_qwen2_5_vl` | ``Qwen2_5_VLForConditionalGeneration``, the real Qwen2 tokenizer |
| ``llava_next`` | :func:`build_tiny_llava_next` | ``LlavaNextForConditionalGeneration``, Llama-style BPE trained here |
| ``qwen2_text`` | :func:`build_tiny_qwen2_text` | ``Qwen2ForCausalLM``, byte-level BPE trained here (~1.8k ids) |
| ``paligemma`` | :func:`build_tiny_paligemma` | ``PaliGemmaForConditionalGeneration``, Gemma-style BPE trained here |
| ``real_lm_llava`` | :func:`build_real_lm_llava_next` | ``LlavaNextForConditionalGeneration``: the real SmolLM2-135M |
| | | language model and tokenizer, a tiny random vision tower ("real LM, random vision") |
| (dense) | :func:`build_tiny_clip` | ``CLIPModel`` for the dense baseline's dual encoder (not an ms-swift model) |

Use them as ``swift infer --model DIR *SWIFT_FLAGS[key] ...`` and ``swift sft --model DIR *SWIFT_FLAGS[key]
*SFT_CPU_FLAGS ...`` with ``HF_HUB_OFFLINE=1 MODELSCOPE_OFFLINE=1`` (see :data:`OFFLINE_ENV`).

Example:
    >>> from swift_ssid.testing.tiny_models import SWIFT_FLAGS, build_tiny_qwen2_text
    >>> model_dir = build_tiny_qwen2_text("/tmp/tiny-qwen2")
    >>> ["swift", "infer", "--model", str(model_dir), *SWIFT_FLAGS["qwen2_text"]]  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEMO_DIR = DATA_DIR / "demo"

OFFLINE_ENV: dict[str, str] = {"HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Environment every swift call on a tiny model needs (no hub is reachable)."""

SWIFT_FLAGS: dict[str, list[str]] = {
    # `--max_pixels` matters: ms-swift resizes Qwen images with qwen_vl_utils (default up to 16,384 image tokens)
    # and then calls the HF image processor with do_resize=False, so the processor's own max_pixels is ignored.
    # 12544 = 112*112 pixels keeps a 256-px photo at about 20 image tokens.
    "qwen2_5_vl": [
        "--model_type", "qwen2_5_vl", "--template", "qwen2_5_vl", "--torch_dtype", "float32",
        "--max_pixels", "12544",
    ],
    "llava_next": [
        "--model_type", "llava1_6_vicuna_hf", "--template", "llava1_6_vicuna_hf", "--torch_dtype", "float32",
    ],
    # `qwen` is the text twin of `qwen2_5_vl` (same ChatML format and default system prompt); `qwen2_5` works too
    # but adds the longer "You are Qwen, created by Alibaba Cloud..." system prompt.
    "qwen2_text": ["--model_type", "qwen2", "--template", "qwen", "--torch_dtype", "float32"],
    "paligemma": ["--model_type", "paligemma", "--template", "paligemma", "--torch_dtype", "float32"],
    # ms-swift's LLaVA-NeXT with ChatML turns (registered for LLaVA-1.6-34B): SmolLM2-Instruct's own chat format.
    "real_lm_llava": [
        "--model_type", "llava1_6_yi_hf", "--template", "llava1_6_yi_hf", "--torch_dtype", "float32",
    ],
}  # fmt: skip
"""swift CLI flags (infer, sft, deploy, ...) that each tiny model needs, keyed like :data:`BUILDERS`."""

SFT_CPU_FLAGS: list[str] = [
    "--tuner_type", "lora",  # 4.6.0 renamed --train_type; `--train_type lora` fails with "remaining_argv"
    "--check_model", "false",  # skip the hub look-up of the model id (sft only; infer rejects this flag)
    "--gradient_accumulation_steps", "1",  # default is 16 / (batch * world): 8 micro-batches per step at batch 2
    "--dataloader_num_workers", "0",  # default 1 forks a worker process per run
    "--report_to", "none",  # default tensorboard also plots PNGs at the end
    "--add_version", "false",  # checkpoints land in OUTPUT_DIR/checkpoint-N instead of OUTPUT_DIR/vX-<time>/
    "--save_only_model", "true",  # no optimizer.pt / rng state in checkpoints
]  # fmt: skip
"""Extra `swift sft` flags that make a short LoRA run on CPU fast and its output path predictable."""

QWEN2_SPECIAL_IDS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
"""Special-token ids of Qwen2.5-VL; ms-swift's template hard-codes the image (151655) and video (151656) ids."""

QWEN2_5_VL_VOCAB_SIZE = 151936

# Pre-tokenizer split of the Qwen2 tokenizer (copied from its tokenizer.json).
_QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{ ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] + '</s>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Template text that every chat prompt of the tiny models contains, so the trained tokenizers cover it.
_TEMPLATE_TEXT = (
    "system\nYou are a helpful assistant.\nuser\nassistant\n"
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.\n"
    "USER: Describe. ASSISTANT: caption: identifier: reason:\n"
)


def tokenizer_corpus() -> list[str]:
    """The fixed, bundled text the small tokenizers are trained on (deterministic and offline).

    Returns:
        Lines from the demo captions, the SSID prompt (`data/ssid_prompt.txt`), the chat-template text
        and the word list `data/demo/tokenizer_words.txt`.
    """
    lines: list[str] = []
    for row in _read_jsonl(DEMO_DIR / "collection.jsonl"):
        lines.extend(row["captions"])
    lines.extend((DATA_DIR / "ssid_prompt.txt").read_text(encoding="utf-8").splitlines())
    lines.extend(_TEMPLATE_TEXT.splitlines())
    lines.extend((DEMO_DIR / "tokenizer_words.txt").read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line.strip()]


def build_tiny_qwen2_5_vl(out_dir: str | Path, tokenizer_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL (~10M parameters, hidden 64, 2 layers, vision depth 2) to ``out_dir``.

    The tokenizer is the real Qwen2-family one, so every special token sits at its Qwen2.5-VL id (ms-swift's
    ``qwen2_5_vl`` template hard-codes 151655/151656). Word embeddings are tied, as in Qwen2.5-VL-3B.
    Load with ``SWIFT_FLAGS["qwen2_5_vl"]``.

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        tokenizer_dir: Folder with the Qwen2 ``tokenizer.json`` and ``tokenizer_config.json``; None looks it up
            with :func:`swift_ssid.testing.assets.qwen2_tokenizer_dir` (``swift-ssid fetch-assets`` puts it there).
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from swift_ssid.testing.assets import qwen2_tokenizer_dir

    tokenizer_dir = qwen2_tokenizer_dir(tokenizer_dir)  # AssetNotFoundError (a FileNotFoundError) names the fix
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    _check_special_ids(tokenizer, QWEN2_SPECIAL_IDS, source=str(tokenizer_dir))
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = _QWEN2_VL_TEMPLATE

    ids = QWEN2_SPECIAL_IDS
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": QWEN2_5_VL_VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "max_window_layers": 2,
            # mrope_section splits head_dim / 2 = 8 rotary pairs over (temporal, height, width).
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = _seeded_init(Qwen2_5_VLForConditionalGeneration, config, seed)
    _set_generation_ids(model, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"], bos=None)

    # Small pixel budgets: 3136..12544 pixels = 4..16 image tokens when the HF processor resizes (ms-swift resizes
    # itself: pass --max_pixels, see SWIFT_FLAGS).
    pixels = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=_QWEN2_VL_TEMPLATE,
    )
    return _save(out_dir, model, processor)


# The sizes every tiny vision tower and language model shares (the vocabulary and special ids are each model's own).
_TINY_VISION: dict[str, int] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
_TINY_TEXT: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
}


# LLaVA-NeXT's tiny vision: CLIP on 32-px tiles with 8-px patches, any-resolution grid up to 64x64 px.
_LLAVA_TILE, _LLAVA_PATCH = 32, 8
_LLAVA_PINPOINTS = [[_LLAVA_TILE, 2 * _LLAVA_TILE], [2 * _LLAVA_TILE, _LLAVA_TILE], [2 * _LLAVA_TILE, 2 * _LLAVA_TILE]]


def _llava_next_processor(tokenizer: Any, chat_template: str) -> Any:
    """The LLaVA-NeXT processor of the tiny vision tower (``<image>`` placeholder, one CLS feature dropped)."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tile = _LLAVA_TILE
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=_LLAVA_PINPOINTS,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_LLAVA_PATCH,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )


def build_tiny_llava_next(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA-NeXT (LLaVA-1.6-vicuna layout: CLIP vision tower, Llama text model) to ``out_dir``.

    Vision: CLIP with 32-px tiles and 8-px patches (16 patches + CLS per tile), any-resolution grid up to 64x64 px.
    Text: Llama, hidden 64, 2 layers. Tokenizer: Llama-style (SentencePiece-like BPE with byte fallback,
    ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<0x00>``..``<0xFF>``=3..258, then merges, then ``<image>`` and ``<pad>``)
    trained on :func:`tokenizer_corpus`. Load with ``SWIFT_FLAGS["llava_next"]``.

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    tokenizer = _llama_style_tokenizer(vocab_size=2048)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    pad_id = tokenizer.convert_tokens_to_ids("<pad>")
    tile, patch, pinpoints = _LLAVA_TILE, _LLAVA_PATCH, _LLAVA_PINPOINTS
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_TINY_VISION, image_size=tile, patch_size=patch, projection_dim=32),
        text_config=LlamaConfig(
            **_TINY_TEXT,
            vocab_size=_round_up(len(tokenizer), 64),
            num_key_value_heads=4,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=pad_id,
        ),
        image_token_index=image_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    model = _seeded_init(LlavaNextForConditionalGeneration, config, seed)
    _set_generation_ids(model, eos=2, pad=pad_id, bos=1)

    return _save(out_dir, model, _llava_next_processor(tokenizer, _VICUNA_TEMPLATE))


REAL_LM_LLAVA_LABEL = "real LM, random vision"
"""How results of :func:`build_real_lm_llava_next`'s model are labelled everywhere: the language model is the real
SmolLM2-135M-Instruct (4-bit weights dequantised), the vision tower and projector are tiny and random."""

_CHATML_IMAGE_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_real_lm_llava_next(out_dir: str | Path, lm_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write a LLaVA-NeXT whose language model is the real SmolLM2-135M-Instruct and whose vision is tiny and random.

    "Real LM, random vision" (:data:`REAL_LM_LLAVA_LABEL`): the language model's weights are copied unchanged from
    the real LM's folder (4-bit Q4_1 weights dequantised; word embeddings stay tied); the CLIP vision tower (the
    32-px tiles and 8-px patches of :func:`build_tiny_llava_next`), the projector and the image-newline vector are
    random from ``seed``. The tokenizer is the real LM's (byte-level BPE, ChatML) plus one special token ``<image>``
    (id 49152); the vocabulary is padded to 49,216 rows, the new rows set to the mean embedding. ms-swift loads it
    with ``SWIFT_FLAGS["real_lm_llava"]``: model type and template ``llava1_6_yi_hf``, ms-swift's LLaVA-NeXT with
    ChatML turns, the chat format SmolLM2-Instruct was tuned on (no default system prompt).

    Args:
        out_dir: Directory to write (created; existing files are overwritten); about 0.55 GB of float32 weights.
        lm_dir: The real LM's folder; None looks it up with :func:`swift_ssid.testing.assets.real_lm_dir`
            (``swift-ssid fetch-assets --real-lm`` puts it there).
        seed: Seed for the random vision tower and projector.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlamaForCausalLM,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    from swift_ssid.testing.assets import real_lm_dir

    lm_dir = real_lm_dir(lm_dir)  # AssetNotFoundError (a FileNotFoundError) names the fix
    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    lm = LlamaForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
    text_config = LlamaConfig(**{**lm.config.to_dict(), "vocab_size": _round_up(len(tokenizer), 64)})
    tile, patch, pinpoints = _LLAVA_TILE, _LLAVA_PATCH, _LLAVA_PINPOINTS
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_TINY_VISION, image_size=tile, patch_size=patch, projection_dim=32),
        text_config=text_config,
        image_token_index=image_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    model = _seeded_init(LlavaNextForConditionalGeneration, config, seed)
    old_rows = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(config.text_config.vocab_size, mean_resizing=False)
    with torch.no_grad():  # deterministic new rows (mean_resizing samples from the global RNG)
        rows = lm.get_input_embeddings().weight
        rows[old_rows:] = rows[:old_rows].mean(dim=0)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    model.tie_weights()
    gen = lm.generation_config
    _set_generation_ids(model, eos=gen.eos_token_id, pad=gen.pad_token_id, bos=gen.bos_token_id)

    return _save(out_dir, model, _llava_next_processor(tokenizer, _CHATML_IMAGE_TEMPLATE))


def build_tiny_qwen2_text(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random text-only Qwen2ForCausalLM with a small (~2k) byte-level BPE vocabulary to ``out_dir``.

    For fast tests where images do not matter. The tokenizer splits text like Qwen2's (same pre-tokenizer regex,
    NFC, byte-level BPE), so every string is encodable; ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` are
    special tokens after the BPE ids. eos is ``<|im_end|>`` and pad ``<|endoftext|>``, as in Qwen2.5-Instruct.
    ms-swift 4.6.0 loads it with ``--model_type qwen2 --template qwen`` (``SWIFT_FLAGS["qwen2_text"]``): a local
    Qwen2ForCausalLM folder needs ``--model_type`` (several model types share that architecture) and
    ``--template`` (model type ``qwen2`` pairs with both ``qwen`` and ``qwen2_5``).

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _byte_level_tokenizer(vocab_size=2048)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        max_window_layers=2,
        bos_token_id=eot,
        eos_token_id=im_end,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )
    model = _seeded_init(Qwen2ForCausalLM, config, seed)
    _set_generation_ids(model, eos=[im_end, eot], pad=eot, bos=None)
    return _save(out_dir, model, tokenizer)


def build_tiny_paligemma(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random PaliGemma (SigLIP vision tower, Gemma text model) to ``out_dir``.

    Vision: SigLIP with 32-px images and 8-px patches (16 image tokens). Text: Gemma, hidden 64, 2 layers.
    Tokenizer: Gemma-style (Metaspace BPE with byte fallback, punctuation split off, ``<pad>``=0, ``<eos>``=1,
    ``<bos>``=2, ``<unk>``=3,
    then ``<0x00>``..``<0xFF>``, merges, ``<image>``) trained on :func:`tokenizer_corpus`; the PaliGemma
    processor appends its 1,152 ``<locNNNN>`` / ``<segNNN>`` tokens (about 3.2k ids in all). ms-swift's
    ``paligemma`` template names no token ids, so the vocabulary stays small. Load with
    ``SWIFT_FLAGS["paligemma"]``.

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    image_size, patch = 32, 8
    image_seq_length = (image_size // patch) ** 2
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = image_seq_length
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=_gemma_style_tokenizer(vocab_size=2048))
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**_TINY_VISION, image_size=image_size, patch_size=patch, projection_dim=64),
        text_config=GemmaConfig(
            **_TINY_TEXT,
            vocab_size=_round_up(len(tokenizer), 64),
            num_key_value_heads=1,
            head_dim=16,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        ),
        image_token_index=image_id,
        projection_dim=64,
        hidden_size=64,
    )
    model = _seeded_init(PaliGemmaForConditionalGeneration, config, seed)
    _set_generation_ids(model, eos=1, pad=0, bos=2)
    return _save(out_dir, model, processor)


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random CLIPModel (hidden 32, 2 layers, 32-px images, 8-px patches) for :class:`DualEncoder`.

    The text side uses a byte-level BPE trained on :func:`tokenizer_corpus` wrapped as a CLIP tokenizer
    (``<|startoftext|>``/``<|endoftext|>``, lower-casing), the image side a ``CLIPImageProcessor`` that resizes and
    crops to 32 px. Loads offline with ``AutoModel`` + ``AutoTokenizer`` + ``AutoImageProcessor``.

    Args:
        out_dir: Directory to write (created; existing files are overwritten).
        seed: Seed for the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ["<|startoftext|>", "<|endoftext|>"]]
    )
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=64,
        clean_up_tokenization_spaces=False,
    )
    image_size, patch = 32, 8
    config = CLIPConfig(
        text_config={
            "vocab_size": _round_up(len(tokenizer), 64),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
        },
        projection_dim=32,
    )
    model = _seeded_init(CLIPModel, config, seed)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    out = _save(out_dir, model, tokenizer)
    image_processor.save_pretrained(str(out))
    return out


BUILDERS = {
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "llava_next": build_tiny_llava_next,
    "qwen2_text": build_tiny_qwen2_text,
    "paligemma": build_tiny_paligemma,
    "real_lm_llava": build_real_lm_llava_next,
}
"""Builder per model key (the keys of :data:`SWIFT_FLAGS`): the tiny random models, and ``real_lm_llava`` (real LM,
random vision; it reads the real LM's folder)."""


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers trained here
# ---------------------------------------------------------------------------------------------------------------


def _byte_level_tokenizer(vocab_size: int) -> Any:
    """Train a Qwen2-style byte-level BPE on :func:`tokenizer_corpus` and wrap it as a transformers tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 3,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        chat_template=_CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def _byte_tokens_as_vocabulary(tok: Any, trainer: Any, byte_tokens: list[str]) -> Any:
    """Train ``tok`` on :func:`tokenizer_corpus`, keeping the ``<0xNN>`` tokens as plain vocabulary entries.

    The trainer registers them as added (special) tokens; in Llama and Gemma tokenizers they are vocabulary
    entries reached only through byte fallback, so they leave the added-token list.
    """
    from tokenizers import Tokenizer

    tok.train_from_iterator(tokenizer_corpus(), trainer)
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in set(byte_tokens)]
    return Tokenizer.from_str(json.dumps(spec))


def _llama_style_tokenizer(vocab_size: int) -> Any:
    """Train a Llama-style BPE (Metaspace, byte fallback, ``<s>``/``</s>``) plus ``<image>`` and ``<pad>``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,
        special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        show_progress=False,
    )
    tok = _byte_tokens_as_vocabulary(tok, trainer, byte_tokens)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<image>", "<pad>"]])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        add_bos_token=True,
        add_eos_token=False,
        chat_template=_VICUNA_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def _gemma_style_tokenizer(vocab_size: int) -> Any:
    """Train a Gemma-style BPE (Metaspace, byte fallback, <pad> <eos> <bos> <unk> = 0..3, then <image>)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # Punctuation is split off, so "identifier:" ends at a token boundary whatever follows it.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True),
        ]
    )
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", *byte_tokens],
        show_progress=False,
    )
    tok = _byte_tokens_as_vocabulary(tok, trainer, byte_tokens)
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _check_special_ids(tokenizer: Any, expected: dict[str, int], source: str) -> None:
    """Raise ValueError unless every special token of ``expected`` maps to its id in ``tokenizer``."""
    wrong = {tok: tokenizer.convert_tokens_to_ids(tok) for tok, want in expected.items()}
    wrong = {tok: got for tok, got in wrong.items() if got != expected[tok]}
    if wrong:
        seen = ", ".join(f"{tok}={got} (want {expected[tok]})" for tok, got in wrong.items())
        raise ValueError(
            f"tokenizer at {source} is not a Qwen2-family tokenizer: {seen}. "
            "Use the Qwen2 tokenizer fetched by `swift-ssid fetch-assets` (or `make assets` in a checkout)."
        )


def _seeded_init(model_cls: Any, config: Any, seed: int) -> Any:
    """Instantiate ``model_cls(config)`` with weights drawn from ``seed``, leaving the global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def _set_generation_ids(model: Any, eos: int | list[int], pad: int, bos: int | None) -> None:
    """Set the special ids of ``model.generation_config`` (saved as generation_config.json)."""
    gen = model.generation_config
    gen.eos_token_id = eos
    gen.pad_token_id = pad
    gen.bos_token_id = bos


def _save(out_dir: str | Path, model: Any, processor: Any) -> Path:
    """Save the model (float32 safetensors) and its processor or tokenizer to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def _round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line of a JSON Lines file."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
