"""The GENRE/GRACE-style reference the benchmark compares against (not part of the library).

A nested-dict trie (GENRE's ``genre/trie.py`` layout: one Python dict per node, token id -> child)
walked from the root for every row at every step, called through transformers'
``PrefixConstrainedLogitsProcessor`` (one Python callback per row per step), as GRACE does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from transformers import PrefixConstrainedLogitsProcessor


class NestedDictTrie:
    """GENRE's trie: ``get(prefix)`` walks nested dicts from the root and lists the next token ids.

    Args:
        sequences: token-id sequences (here: trigger tokens + identifier span).
    """

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root: dict[int, dict] = {}
        for seq in sequences:
            node = self.root
            for token in seq:
                node = node.setdefault(token, {})

    def nbytes(self) -> int:
        """Bytes of all node dicts and their int keys (``sys.getsizeof``, walked once)."""
        total, stack = 0, [self.root]
        while stack:
            node = stack.pop()
            total += sys.getsizeof(node) + sum(map(sys.getsizeof, node))
            stack.extend(node.values())
        return total

    def get(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens after ``prefix``; [] when the prefix leaves the trie or is complete."""
        node = self.root
        for token in prefix:
            node = node.get(token)
            if node is None:
                return []
        return list(node)


def genre_processor(
    trie: NestedDictTrie, prompt_len: int, num_beams: int, eos_token_id: int
) -> PrefixConstrainedLogitsProcessor:
    """``PrefixConstrainedLogitsProcessor`` whose callback walks ``trie`` over each row's generated tokens.

    Args:
        trie: sequences that start with the identifier prefix's trigger tokens.
        prompt_len: width of the (left-padded) prompt; generated tokens start there.
        num_beams: beams per input.
        eos_token_id: allowed once a row has left or completed the trie.
    """

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        return trie.get(sent[prompt_len:].tolist()) or [eos_token_id]

    fn: Callable[[int, torch.Tensor], list[int]] = allowed
    return PrefixConstrainedLogitsProcessor(fn, num_beams)
