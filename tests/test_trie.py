"""TokenTrie: structure, persistence, and in-context tokenisation with real tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swift_ssid.decoding.tokenisation import identifier_token_sequences, tokenizer_fingerprint
from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie

sequences_strategy = st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=6), min_size=1, max_size=40)


def prefix_free(seqs: list[list[int]]) -> list[list[int]]:
    """Drop sequences that are proper prefixes of others (identifier sequences never are)."""
    uniq = sorted({tuple(s) for s in seqs})
    return [list(s) for s in uniq if not any(o != s and o[: len(s)] == s for o in uniq)]


def test_small_trie_structure():
    trie = TokenTrie.from_sequences([[5, 1], [5, 2, 1], [7, 1]], vocab_size=8)
    assert trie.num_nodes == 7
    assert trie.children(TokenTrie.ROOT).tolist() == [5, 7]
    assert trie.allowed([5]) == [1, 2]
    assert trie.allowed([5, 2]) == [1]
    assert trie.allowed([5, 2, 1]) == []
    assert trie.allowed([6]) == []
    assert [5, 2, 1] in trie and [5, 2] not in trie and [9] not in trie
    assert len(trie) == 3
    assert list(trie) == [[5, 1], [5, 2, 1], [7, 1]]
    assert trie.max_fanout() == 2
    assert np.all(np.diff(trie.keys) > 0), "keys must be strictly ascending (breadth-first numbering)"


def test_duplicates_collapse_and_errors():
    trie = TokenTrie.from_sequences([[1, 2], [1, 2], [3]], vocab_size=4)
    assert len(trie) == 2
    with pytest.raises(ValueError, match="vocab_size"):
        TokenTrie.from_sequences([[1, 9]], vocab_size=4)
    with pytest.raises(ValueError, match="empty token sequence"):
        TokenTrie.from_sequences([[1], []], vocab_size=4)


@settings(max_examples=60, deadline=None)
@given(sequences_strategy)
def test_trie_matches_brute_force(raw):
    seqs = prefix_free(raw)
    trie = TokenTrie.from_sequences(seqs, vocab_size=10)
    assert list(trie) == seqs
    assert len(trie) == len(seqs)
    # Every prefix of every sequence allows exactly the brute-force next tokens.
    for s in seqs:
        for i in range(len(s)):
            expected = sorted({o[i] for o in seqs if len(o) > i and o[:i] == s[:i]})
            assert trie.allowed(s[:i]) == expected


def test_save_load_roundtrip_and_tokenizer_check(tmp_path, qwen2_tokenizer, byte_bpe_tokenizer):
    idents = ["two white males - bushes", "a dog - frisbee - park", "2 cyclists - mountain road"]
    trie = build_identifier_trie(qwen2_tokenizer, idents)
    path = trie.save(tmp_path / "trie.npz")
    loaded = TokenTrie.load(path, tokenizer=qwen2_tokenizer, prefix="identifier:")
    assert list(loaded) == list(trie)
    assert loaded.header == trie.header
    with pytest.raises(ValueError, match="rebuild the trie for this tokenizer"):
        TokenTrie.load(path, tokenizer=byte_bpe_tokenizer)
    with pytest.raises(ValueError, match="prefix"):
        TokenTrie.load(path, prefix="id:")
    with pytest.raises(FileNotFoundError, match="no trie file"):
        TokenTrie.load(tmp_path / "missing.npz")


def test_fingerprint_differs_between_tokenizers(qwen2_tokenizer, byte_bpe_tokenizer):
    a, b = tokenizer_fingerprint(qwen2_tokenizer), tokenizer_fingerprint(byte_bpe_tokenizer)
    assert a["hash"] != b["hash"] and a["vocab_size"] == len(qwen2_tokenizer.get_vocab())


def _check_in_context(tokenizer, idents, end="newline"):
    trigger, seqs = identifier_token_sequences(tokenizer, idents, end=end)
    for ident, seq in zip(idents, seqs, strict=True):
        if end == "newline":
            # trigger + span decodes to exactly the prefix, the identifier and the line end ...
            assert tokenizer.decode(list(trigger) + seq) == "identifier:" + ident + "\n"
            # ... and is exactly how the whole target is tokenised (no re-tokenisation drift).
            full = tokenizer("identifier:" + ident + "\nreason:x", add_special_tokens=False)["input_ids"]
            assert full[: len(trigger) + len(seq)] == list(trigger) + seq
        else:
            assert seq[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(list(trigger) + seq[:-1]) == "identifier:" + ident
    return trigger, seqs


def test_qwen2_in_context_tokenisation_on_real_identifiers(qwen2_tokenizer, flickr_captions):
    # Identifiers shaped like the paper's: a few caption words, ' - ' separated.
    words = [c.lower().rstrip(" .").split() for c in flickr_captions]
    idents = sorted({" ".join(w[1:3]) + " - " + " ".join(w[4:6]) for w in words if len(w) >= 6})[:2000]
    trigger, seqs = _check_in_context(qwen2_tokenizer, idents)
    # Qwen2's pre-tokeniser merges ':' with a following letter run (':a'), so the trigger is 'identifier' alone.
    assert qwen2_tokenizer.decode(list(trigger)) == "identifier"
    assert any(qwen2_tokenizer.decode([s[0]]).startswith(":") and len(qwen2_tokenizer.decode([s[0]])) > 1 for s in seqs)
    _check_in_context(qwen2_tokenizer, idents[:200], end="eos")


def test_byte_bpe_in_context_tokenisation(byte_bpe_tokenizer):
    idents = ["two white males - bushes", "a dog - frisbee", "people - market stalls", "x-ray - hospital"]
    _check_in_context(byte_bpe_tokenizer, idents)


def test_unstable_boundary_fails_clearly(qwen2_tokenizer):
    # 'identif' + 'ier ...' re-tokenises to a single 'identifier' token: no token of the prefix survives.
    with pytest.raises(ValueError, match="unstable boundary"):
        identifier_token_sequences(qwen2_tokenizer, ["ier - dog"], prefix="identif")
    with pytest.raises(ValueError, match="contains the line end"):
        identifier_token_sequences(qwen2_tokenizer, ["dog\nball"])
    with pytest.raises(ValueError, match="no identifiers"):
        identifier_token_sequences(qwen2_tokenizer, [])
