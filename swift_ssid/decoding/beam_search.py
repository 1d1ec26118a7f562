"""Logits processors that work beside the constraint under beam search: beam scores, one beam per identifier.

Both are plain ``transformers`` processors (no ms-swift); :class:`swift_ssid.integration.templates.SSIDTemplateMixin`
appends them to a constrained beam-search ``generate`` call.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from swift_ssid.decoding.constrained import FREE, SSIDConstrainedLogitsProcessor


class BeamScoreRecorder(LogitsProcessor):
    """Record each beam hypothesis' cumulative log-probability without ``output_scores``.

    ``transformers`` returns beam scores only with ``output_scores=True``, which keeps every step's
    full ``[rows, vocab]`` scores (gigabytes for a 150k vocabulary). This processor, placed last,
    keeps per step only each row's top ``keep`` continuations, keyed by (input group, hash of the
    generated prefix, token), which covers every candidate beam search can select. It returns the
    scores unchanged. Rows that already ended with an EOS token (beam search may keep such finished
    rows running with a -1e9 penalty) are not extended.

    Args:
        num_beams: beams per input.
        keep: continuations kept per row and step (at least beam search's ``beams_to_keep``).
        eos_token_ids: the generation config's EOS ids.
    """

    def __init__(self, num_beams: int, keep: int, eos_token_ids: set[int]):
        self.num_beams = num_beams
        self.keep = keep
        self.eos_token_ids = set(eos_token_ids)
        self.prompt_len = -1
        self._last_len = -1
        self._cum: dict[tuple[int, int, int], float] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, length = input_ids.shape
        if length != self._last_len + 1 or self.prompt_len < 0:
            self.prompt_len = length
            self._cum = {}
        self._last_len = length
        gen = input_ids[:, self.prompt_len :].tolist()
        values, tokens = scores.topk(min(self.keep, scores.shape[1]), dim=-1)
        values, tokens = values.tolist(), tokens.tolist()
        for r in range(rows):
            group = r // self.num_beams
            prefix = gen[r]
            if prefix and prefix[-1] in self.eos_token_ids:
                continue
            base = 0.0 if not prefix else self._cum.get((group, hash(tuple(prefix[:-1])), prefix[-1]))
            if base is None:  # a row beam search keeps only as padding (-1e9 score)
                continue
            h = hash(tuple(prefix))
            for v, t in zip(values[r], tokens[r], strict=True):
                if v == -math.inf:
                    break
                self._cum[(group, h, t)] = base + v
        return scores

    def sequence_scores(
        self, sequences: torch.Tensor, num_return_sequences: int, pad_token_ids: set[int], length_penalty: float
    ) -> list[float | None]:
        """Beam scores (sum of log-probabilities / length ** length_penalty) of ``generate``'s sequences.

        Args:
            sequences: ``LongTensor[batch * num_return_sequences, seq]`` as returned by ``generate``.
            num_return_sequences: sequences per input.
            pad_token_ids: tokens that may pad a finished hypothesis on the right.
            length_penalty: the generation config's ``length_penalty``.

        Returns:
            One score per sequence, as ``transformers`` computes ``sequences_scores`` for hypotheses
            with a finite score; None where the sequence was not recorded.
        """
        out: list[float | None] = []
        for i, seq in enumerate(sequences[:, max(self.prompt_len, 0) :].tolist()):
            group = i // num_return_sequences
            end = next((j + 1 for j, t in enumerate(seq) if t in self.eos_token_ids), len(seq))
            while end > 1 and end == len(seq) and seq[end - 1] in pad_token_ids:
                seq, end = seq[:-1], end - 1
            s = self._cum.get((group, hash(tuple(seq[: end - 1])), seq[end - 1])) if end else None
            out.append(None if s is None else s / (end**length_penalty))
        return out


class OneBeamPerIdentifier(LogitsProcessor):
    """Under beam search, let each identifier's reason line continue greedily (its top-1 token only).

    Without it, the K beams are mostly one identifier with K slightly different reasons. With it, a
    hypothesis that has closed its identifier line keeps one continuation, so the K returned beams
    carry K different identifiers (as far as the index has them), each ranked by the score of its
    identifier plus its greedy reason. Placed right after ``constraint``, whose row phases it reads.

    Args:
        constraint: the SSID processor of the same ``generate`` call.
    """

    def __init__(self, constraint: SSIDConstrainedLogitsProcessor):
        self.constraint = constraint

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        phase = self.constraint.phase  # FREE rows: identifier closed, reason running free
        free = (phase == FREE).unsqueeze(1)
        top = scores.argmax(dim=-1, keepdim=True)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
        return scores.masked_fill(free & ~keep, float("-inf"))
