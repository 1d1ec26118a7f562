"""SSIDConstrainedLogitsProcessor on hand-built score tensors: exact masks, phases, beams."""

from __future__ import annotations

import pytest
import torch

from swift_ssid.decoding.constrained import DEAD, FORCE, FREE, SEARCH, SPAN, SSIDConstrainedLogitsProcessor
from swift_ssid.decoding.trie import TokenTrie

V = 8
EOS = 0
TRIGGER = [3, 4]
# Identifier sequences (the last token closes the line): [5, 1], [5, 2, 1], [7, 1].
SEQS = [[5, 1], [5, 2, 1], [7, 1]]


def make(**kw) -> SSIDConstrainedLogitsProcessor:
    kw.setdefault("eos_token_id", EOS)
    kw.setdefault("trigger", TRIGGER)
    return SSIDConstrainedLogitsProcessor(TokenTrie.from_sequences(SEQS, vocab_size=V), **kw)


def allowed(out: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in out]


def run(proc, prompt: list[list[int]], steps: list[list[int]]):
    """Feed the prompt, then append one token per row per step; return the allowed sets seen at each call."""
    ids = torch.tensor(prompt)
    seen = []
    for step in [*steps, None]:
        scores = torch.randn(ids.shape[0], V)
        before = scores.clone()
        out = proc(ids, scores)
        assert torch.equal(scores, before), "scores must not be modified in place"
        assert out.data_ptr() != scores.data_ptr()
        finite = torch.isfinite(out)
        assert finite.any(dim=1).all(), "every row keeps at least one allowed token"
        assert torch.equal(out[finite], scores[finite]), "allowed entries keep their scores"
        seen.append(allowed(out))
        if step is not None:
            ids = torch.cat([ids, torch.tensor(step).unsqueeze(1)], dim=1)
    return seen


def test_forced_prefix_then_trie_then_free():
    proc = make()
    seen = run(proc, [[6, 6]], [[3], [4], [5], [2], [1], [6]])
    assert seen == [[[3]], [[4]], [[5, 7]], [[1, 2]], [[1]], [list(range(V))], [list(range(V))]]
    assert proc.phases == [FREE]


def test_search_mode_waits_for_trigger_in_generated_text():
    proc = make(force_prefix=False)
    # The trigger inside the prompt does not open the span; generated text must contain it.
    seen = run(proc, [[3, 4]], [[6], [3], [4], [7], [1]])
    assert seen[0] == [list(range(V))] and seen[1] == [list(range(V))] and seen[2] == [list(range(V))]
    assert seen[3] == [[5, 7]]
    assert seen[4] == [[1]]
    assert seen[5] == [list(range(V))]


def test_no_reason_allows_only_eos_after_identifier():
    proc = make(reason=False)
    seen = run(proc, [[6]], [[3], [4], [7], [1]])
    assert seen[-1] == [[EOS]]


def test_dead_end_may_only_end():
    proc = make(force_prefix=False)
    # Teacher-force a token the trie does not have (6 after the trigger): the row may then only end.
    seen = run(proc, [[1]], [[3], [4], [6]])
    assert proc.phases == [DEAD]
    assert seen[-1] == [[EOS]]


def test_rows_with_different_prompts_and_left_padding():
    proc = make()
    pad = 0
    # Left-padded batch: the generated part starts at the same column for every row.
    seen = run(proc, [[pad, pad, 6], [6, 6, 6]], [[3, 3], [4, 4], [5, 7], [1, 1]])
    assert seen[2] == [[5, 7], [5, 7]]
    assert seen[3] == [[1, 2], [1]]
    assert seen[4] == [list(range(V)), list(range(V))]


def test_beam_reordering_tracks_parents():
    proc = make(num_beams=2)
    ids = torch.tensor([[6], [6]])
    for tok in (3, 4):
        proc(ids, torch.zeros(2, V))
        ids = torch.cat([ids, torch.tensor([[tok], [tok]])], 1)
    proc(ids, torch.zeros(2, V))
    ids = torch.cat([ids, torch.tensor([[5], [7]])], 1)  # beam 0 -> 5, beam 1 -> 7
    out = proc(ids, torch.zeros(2, V))
    assert allowed(out) == [[1, 2], [1]]
    # Beam search reorders: both new rows extend old beam 0 ([..., 5]) with 2 and 1.
    ids = torch.cat([ids[[0, 0]], torch.tensor([[2], [1]])], 1)
    out = proc(ids, torch.zeros(2, V))
    assert allowed(out) == [[1], list(range(V))]
    # And now the rows swap places.
    ids = torch.cat([ids[[1, 0]], torch.tensor([[6], [1]])], 1)
    out = proc(ids, torch.zeros(2, V))
    assert proc.phases == [FREE, FREE]


def test_new_generation_resets_state():
    proc = make()
    run(proc, [[6]], [[3], [4], [5]])
    # A fresh generate call (its length does not grow by one) starts over at the forced prefix.
    out = proc(torch.tensor([[1, 2]]), torch.zeros(1, V))
    assert allowed(out) == [[3]] and proc.phases == [FORCE]


def test_phase_constants_are_distinct():
    assert len({FORCE, SEARCH, SPAN, FREE, DEAD}) == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_beams": 0}, "num_beams"),
        ({"eos_token_id": []}, "eos_token_id"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_trie_without_header_needs_trigger_and_eos():
    trie = TokenTrie.from_sequences(SEQS, vocab_size=V)
    with pytest.raises(ValueError, match="trigger"):
        SSIDConstrainedLogitsProcessor(trie, eos_token_id=EOS)
    with pytest.raises(ValueError, match="eos_token_id"):
        SSIDConstrainedLogitsProcessor(trie, trigger=TRIGGER)
    with pytest.raises(ValueError, match="empty"):
        SSIDConstrainedLogitsProcessor(TokenTrie.from_sequences([], vocab_size=V), trigger=TRIGGER, eos_token_id=0)


def test_token_ids_beyond_logits_fail_clearly():
    proc = SSIDConstrainedLogitsProcessor(
        TokenTrie.from_sequences([[9, 1]], vocab_size=16), trigger=[3], eos_token_id=0
    )
    with pytest.raises(ValueError, match="beyond the model's 8 logits"):
        proc(torch.tensor([[1]]), torch.zeros(1, 8))
