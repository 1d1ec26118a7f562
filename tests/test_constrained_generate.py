"""Property tests: real ``model.generate`` under the processor only ever writes identifiers from the set.

Tiny random Qwen2 causal LMs (built from config, random weights per example) with two real
tokenizers: a byte-level BPE trained here and the real Qwen2 tokenizer (151k vocabulary).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

from swift_ssid.decoding.constrained import SSIDConstrainedLogitsProcessor
from swift_ssid.decoding.trie import build_identifier_trie, identifier_token_sequences

PREFIX = "identifier:"


@pytest.fixture(scope="module")
def caption_words(flickr_captions) -> list[str]:
    words = sorted({w.strip(".,;!?\"'").lower() for c in flickr_captions[:2000] for w in c.split()})
    return [w for w in words if w.isalpha()][:600]


def identifier_sets(words: list[str]):
    phrase = st.lists(st.sampled_from(words), min_size=1, max_size=3).map(" ".join)
    ident = st.lists(phrase, min_size=1, max_size=3).map(" - ".join)
    return st.lists(ident, min_size=3, max_size=25, unique=True)


def tiny_lm(vocab_size: int, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    # Larger random logits make the unconstrained choice far from uniform, so the mask really matters.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 2.0)
    return model


def generated_identifiers(tokenizer, model, trie, prompts: list[list[int]], num_beams: int, max_new: int):
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    eos = trie.header.eos_token_id
    proc = SSIDConstrainedLogitsProcessor(trie, num_beams=num_beams)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        logits_processor=LogitsProcessorList([proc]),
        max_new_tokens=max_new,
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    found = []
    for text in texts:
        assert text.startswith(PREFIX), f"response does not open with the forced prefix: {text!r}"
        body = text[len(PREFIX) :]
        assert "\n" in body, f"identifier line not closed within {max_new} tokens: {text!r}"
        found.append(body.split("\n", 1)[0])
    return found


def check_generation(tokenizer, words_sets, seed, num_beams):
    trie = build_identifier_trie(tokenizer, words_sets)
    model = tiny_lm(max(trie.vocab_size, len(tokenizer)), seed)
    _, seqs = identifier_token_sequences(tokenizer, words_sets)
    max_new = len(trie.header.trigger) + max(map(len, seqs)) + 3
    prompts = [tokenizer("A photo of", add_special_tokens=False)["input_ids"], [tokenizer.pad_token_id or 0, 5, 7, 9]]
    found = generated_identifiers(tokenizer, model, trie, prompts, num_beams, max_new)
    assert len(found) == len(prompts) * num_beams
    assert set(found) <= set(words_sets), f"generated identifiers outside the set: {set(found) - set(words_sets)}"


SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_only_known_identifiers_byte_bpe(byte_bpe_tokenizer, caption_words, num_beams):
    @SETTINGS
    @given(identifier_sets(caption_words), st.integers(0, 10_000))
    def prop(idents, seed):
        check_generation(byte_bpe_tokenizer, idents, seed, num_beams)

    prop()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_only_known_identifiers_qwen2(qwen2_tokenizer, caption_words, num_beams):
    @settings(max_examples=4, deadline=None)
    @given(identifier_sets(caption_words), st.integers(0, 10_000))
    def prop(idents, seed):
        check_generation(qwen2_tokenizer, idents, seed, num_beams)

    prop()


@pytest.mark.parametrize("tok_fixture", ["byte_bpe_tokenizer", "qwen2_tokenizer"])
def test_every_identifier_is_reachable(request, tok_fixture, flickr_captions):
    """Teacher-force every identifier's tokens through the processor (a batch of rows): each must be allowed."""
    tokenizer = request.getfixturevalue(tok_fixture)
    idents = sorted({" - ".join(c.lower().rstrip(" .").split()[1:4:2]) for c in flickr_captions[:1500]})[:300]
    trie = build_identifier_trie(tokenizer, idents)
    trigger, seqs = identifier_token_sequences(tokenizer, idents)
    width = max(trie.vocab_size, len(tokenizer))
    for start in range(0, len(seqs), 50):
        chunk = [list(trigger) + s for s in seqs[start : start + 50]]
        longest = max(map(len, chunk))
        # Rows shorter than the longest continue with free text (token 0) after their line end.
        forced = torch.tensor([s + [0] * (longest - len(s)) for s in chunk])
        proc = SSIDConstrainedLogitsProcessor(trie)
        ids = torch.ones(len(chunk), 3, dtype=torch.long)
        for t in range(longest):
            out = proc(ids, torch.zeros(len(chunk), width))
            ok = torch.isfinite(out.gather(1, forced[:, t : t + 1])).squeeze(1)
            assert ok.all(), f"step {t}: masked for {[idents[start + i] for i in (~ok).nonzero().flatten()]}"
            ids = torch.cat([ids, forced[:, t : t + 1]], dim=1)
        proc(ids, torch.zeros(len(chunk), width))
        assert proc.phases == [3] * len(chunk), "after the line end every row must be free (reason line)"
