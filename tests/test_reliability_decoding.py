"""Reliability of constrained decoding (issue 9): a damaged trie cache is rebuilt (class 3), identifiers that
cannot round-trip through the tokenizer are reported by image, not fatal (8), the trigger is found in every
context without a forced prefix (9, with a SentencePiece-style byte-fallback tokenizer and byte-level BPE),
and a budget too short for the longest identifier is refused (10)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.decoding import trie_cache
from swift_ssid.decoding.constrained import SEARCH, SPAN, SSIDConstrainedLogitsProcessor
from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie
from swift_ssid.decoding.trie_cache import trie_for_index

IDENTS = ["dog - ball", "two white males - bushes", "man - red shirt - bicycle", "girl - beach"]


def sentencepiece_bpe(corpus: list[str]):
    """A LLaMA-2-style tokenizer: SentencePiece BPE words (``\u2581`` marker), byte fallback (``<0x0A>``), and the
    legacy normalizer (prepend ``\u2581``, spaces to ``\u2581``, no pre-tokenizer), trained here on real captions."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.BPE(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    words.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>", "<s>", "</s>"]))
    model = json.loads(words.to_str())["model"]
    vocab = model["vocab"]
    for b in range(256):  # byte fallback pieces, as SentencePiece's: ordinary vocabulary entries
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>")])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", name_or_path="test-sp-bpe"
    )


@pytest.fixture(scope="module")
def sp_tokenizer(flickr_captions):
    return sentencepiece_bpe(flickr_captions[:3000])


LLAMA2_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / ".cache" / "assets" / "llama2-tokenizer"


@pytest.fixture(scope="module")
def llama2_tokenizer():
    """The real LLaMA-2 / Vicuna tokenizer (npm llama-tokenizer-js, converted by `make assets`)."""
    if not (LLAMA2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.fail(f"missing {LLAMA2_TOKENIZER_DIR}/tokenizer.json: run `make assets`")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(LLAMA2_TOKENIZER_DIR))
    assert tokenizer("Hello world")["input_ids"] == [1, 15043, 3186]  # LLaMA-2's own ids
    return tokenizer


def _index(tmp_path: Path, identifiers: dict[str, str]) -> Path:
    IdentifierIndex([IndexEntry(image, ident, "ok") for image, ident in identifiers.items()]).save(tmp_path / "idx")
    return tmp_path / "idx"


def _feed(processor, tokenizer, prompt: str, response: str) -> list[int]:
    """Run the processor over ``response`` token by token after ``prompt``; return the phases seen."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = torch.zeros(1, len(tokenizer))
    processor(torch.tensor([ids]), scores)
    phases = []
    for token in tokenizer(response, add_special_tokens=False)["input_ids"]:
        ids = [*ids, token]
        processor(torch.tensor([ids]), scores)
        phases.append(processor.phases[0])
    return phases


# ---------------------------------------------------------------- 3. a damaged cache is rebuilt


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_trie_cache_is_rebuilt_with_a_warning(tmp_path, byte_bpe_tokenizer, caplog, damage):
    index_dir = _index(tmp_path, {f"i{i}.jpg": ident for i, ident in enumerate(IDENTS)})
    first = trie_for_index(index_dir, byte_bpe_tokenizer)
    (cache,) = index_dir.glob("trie-*.npz")
    data = cache.read_bytes()
    cache.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"PK\x03\x04" + b"\0" * 50, "empty": b""}[damage])
    trie_cache._MEMO.clear()
    with caplog.at_level(logging.WARNING, logger=trie_cache.__name__):
        again = trie_for_index(index_dir, byte_bpe_tokenizer)
    assert "damaged trie cache" in caplog.text and cache.name in caplog.text
    assert sorted(again) == sorted(first)
    assert TokenTrie.load(cache).keys.tolist() == first.keys.tolist()  # the cache file is whole again


# ---------------------------------------------------------------- 8. identifiers that cannot round-trip


def test_unrepresentable_identifiers_are_reported_by_image_not_fatal(tmp_path, qwen2_tokenizer, caplog):
    """A hand-edited index: special-token text would stop generation inside the identifier."""
    images = {f"i{i}.jpg": ident for i, ident in enumerate(IDENTS)}
    images["bad.jpg"] = "dog <|im_end|> ball"
    index_dir = _index(tmp_path, images)
    trie_cache._MEMO.clear()
    with caplog.at_level(logging.WARNING, logger=trie_cache.__name__):
        trie = trie_for_index(
            index_dir, qwen2_tokenizer, eos_token_id=qwen2_tokenizer.convert_tokens_to_ids("<|im_end|>")
        )
    assert "bad.jpg" in caplog.text and "1 image(s) left out" in caplog.text
    assert len(trie) == len(IDENTS)
    assert trie_cache.dropped_images(trie, IdentifierIndex.load(index_dir)).keys() == {"bad.jpg"}


@pytest.mark.parametrize("tokenizer_name", ["sp_tokenizer", "llama2_tokenizer"])
def test_identifiers_that_tokenise_alike_drop_one_not_the_index(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    idents = [*IDENTS, "x\u2581y", "x y", "dog </s> ball"]
    with pytest.raises(ValueError, match=r"cannot round-trip.*'x y' tokenises exactly like 'x\u2581y'"):
        build_identifier_trie(tokenizer, idents)
    trie = build_identifier_trie(tokenizer, idents, drop_unrepresentable=True)
    assert len(trie) == len(idents) - 2 and list(trie.header.extra["dropped"]) == ["x y", "dog </s> ball"]


# ---------------------------------------------------------------- 9. the trigger in every context


@pytest.mark.parametrize(
    ("tokenizer_name", "response"),
    [
        ("sp_tokenizer", "caption: a dog runs.\nidentifier:"),  # SentencePiece: no \u2581 after a line break
        ("sp_tokenizer", "caption: a dog runs.\n\nidentifier:"),
        ("sp_tokenizer", "identifier:"),
        ("llama2_tokenizer", "caption: a dog runs.\nidentifier:"),  # the case seen: 'identifier' after <0x0A>
        ("llama2_tokenizer", "identifier:"),
        ("llama2_tokenizer", "caption: a dog runs. identifier:"),
        ("qwen2_tokenizer", "caption: a dog runs.\nidentifier:"),
        ("qwen2_tokenizer", "caption: a dog runs. identifier:"),  # byte-level BPE: ' identifier' is one token
    ],
)
def test_span_opens_after_every_tokenisation_of_the_trigger(request, tokenizer_name, response):
    tokenizer = request.getfixturevalue(tokenizer_name)
    trie = build_identifier_trie(tokenizer, IDENTS)
    assert not trie.header.extra.get("trigger_problem")
    processor = SSIDConstrainedLogitsProcessor(trie, force_prefix=False)
    phases = _feed(processor, tokenizer, "Describe the image.", response)
    assert phases[-1] == SPAN and SPAN not in phases[:-1]
    assert (
        _feed(SSIDConstrainedLogitsProcessor(trie, force_prefix=False), tokenizer, "Q", "caption: a dog")[-1] == SEARCH
    )


def test_force_prefix_false_is_refused_when_the_trigger_is_unreliable(sp_tokenizer):
    trie = build_identifier_trie(sp_tokenizer, IDENTS)
    trie.header.extra["trigger_problem"] = "after '\\n' the prefix does not start on a token boundary"
    with pytest.raises(ValueError, match="force_prefix=False cannot find the identifier span"):
        SSIDConstrainedLogitsProcessor(trie, force_prefix=False)
    SSIDConstrainedLogitsProcessor(trie, force_prefix=True)  # forcing the prefix needs no detection


# ---------------------------------------------------------------- 10. budgets that cut identifiers


def test_retriever_refuses_a_budget_shorter_than_the_longest_identifier(tmp_path):
    from swift.infer_engine import TransformersEngine

    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.integration.retrieval import Retriever
    from swift_ssid.integration.settings import SSIDSettings
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    long_one = "man - red shirt - bicycle - mountain road - sunset - helmet"
    index_dir = _index(tmp_path, {"a.jpg": "dog", "b.jpg": long_one})
    engine = TransformersEngine(
        str(build_tiny_qwen2_text(tmp_path / "model")),
        model_type="qwen2",
        template_type="ssid_qwen2_5",
        torch_dtype=torch.float32,
    )
    settings = SSIDSettings(index_dir=index_dir)
    trie = engine.template.ssid_trie(settings)
    needed = len(trie.header.trigger) + max(len(seq) for seq in trie)  # the prefix, the longest span, line end
    assert needed > 8
    with pytest.raises(ValueError, match=rf"max_new_tokens 8 cannot hold .*--max-new-tokens {needed} or more"):
        Retriever(engine, settings, k=2, max_new_tokens=8)
    Retriever(engine, settings, k=2, max_new_tokens=needed)
    # The template refuses it too, for every other caller (swift infer / deploy with SSID_INDEX, the sft metric).
    from swift.infer_engine import InferRequest, RequestConfig

    engine.template.set_ssid_settings(settings)
    request = InferRequest(messages=[{"role": "user", "content": "a dog"}])
    with pytest.raises(ValueError, match=rf"max_new_tokens {needed - 1} cannot hold .*--max_new_tokens {needed}"):
        engine.infer([request], RequestConfig(max_tokens=needed - 1, num_beams=2, n=2, temperature=0), use_tqdm=False)
    (response,) = engine.infer([request], RequestConfig(max_tokens=needed, temperature=0), use_tqdm=False)
    assert response.choices[0].message.content.startswith("identifier:")
