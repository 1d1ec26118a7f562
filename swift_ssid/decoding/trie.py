"""Token trie over identifier token sequences, as flat sorted arrays.

Each identifier is stored as the token ids the tokenizer produces for it *in context*: after the
response prefix ``identifier:`` (byte-level BPE can merge the colon into the first word, and
SentencePiece adds leading-space markers) and up to and including the token that closes the
identifier line (the newline before ``reason:``), or followed by EOS when the target has no
reason line.

Layout (why not marisa-trie or nested dicts): the constrained decoder needs, at every step and
for every beam, the *children* of a trie node. marisa-trie answers key and prefix queries but
cannot enumerate the next tokens below a prefix without listing every key under it, and
per-node Python dicts cost hundreds of bytes a node. Here the trie is one sorted ``int64``
array: nodes are numbered breadth-first (root = 0, then depth by depth in lexicographic
order), and node ``i >= 1`` is stored as ``keys[i - 1] = parent(i) * vocab_size + token(i)``.
Breadth-first numbering makes ``keys`` ascending, so

* the child of node ``n`` reached by token ``t`` is found by one binary search for
  ``n * V + t``, and
* the children of ``n`` are the contiguous run ``[searchsorted(n * V), searchsorted((n + 1) * V))``,

for a whole batch of beams at once (numpy here, torch in :mod:`swift_ssid.decoding.constrained`). That is
8 bytes a node and no per-node objects.

The sequences come from :mod:`swift_ssid.decoding.tokenisation`; :func:`build_identifier_trie` joins the two.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swift_ssid.core.answers import IDENTIFIER_PREFIX, REASON_PREFIX
from swift_ssid.core.jsonl import write_bytes_atomic
from swift_ssid.decoding.tokenisation import (
    DEFAULT_LINE_END,
    End,
    identifier_token_sequences,
    round_trip_offenders,
    tokenizer_fingerprint,
    trigger_variants,
)

TRIE_FORMAT_VERSION = 2  # 2: header.extra holds triggers, trigger_problem, dropped


@dataclass(frozen=True)
class TrieHeader:
    """What a trie was built for; checked on load and when attached to a tokenizer."""

    tokenizer_name: str
    vocab_size: int
    tokenizer_hash: str
    prefix: str
    trigger: tuple[int, ...]
    end: End
    eos_token_id: int | None
    num_sequences: int
    format_version: int = TRIE_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["trigger"] = list(self.trigger)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrieHeader:
        d = json.loads(text)
        d["trigger"] = tuple(d["trigger"])
        return cls(**d)


class TokenTrie:
    """A set of token-id sequences with batched child lookups.

    Args:
        keys: sorted ``int64`` array, ``keys[i - 1] = parent(i) * vocab_size + token(i)``.
        vocab_size: ``V`` used in the keys (at least the model's logits width).
        header: optional :class:`TrieHeader` describing how the sequences were made.

    Example:
        >>> trie = TokenTrie.from_sequences([[5, 1], [5, 2, 1], [7, 1]], vocab_size=8)
        >>> trie.allowed([5])
        [1, 2]
        >>> [5, 2, 1] in trie, len(trie)
        (True, 3)
    """

    ROOT = 0

    def __init__(self, keys: np.ndarray, vocab_size: int, header: TrieHeader | None = None):
        if keys.dtype != np.int64 or keys.ndim != 1:
            raise ValueError(f"keys must be a 1-D int64 array, got {keys.dtype} with shape {keys.shape}")
        self.keys = keys
        self.vocab_size = int(vocab_size)
        self.header = header
        self._num_leaves: int | None = None
        self._max_fanout: int | None = None
        self._max_token: int | None = None
        self._max_length: int | None = None

    # ---------------------------------------------------------------- building
    @classmethod
    def from_sequences(
        cls, sequences: Iterable[Sequence[int]], vocab_size: int, header: TrieHeader | None = None
    ) -> TokenTrie:
        """Build from token-id sequences (duplicates collapse; order does not matter).

        Vectorised: sequences are padded into one matrix, sorted lexicographically, and each
        depth's distinct prefixes become that depth's nodes in order.
        """
        seqs = sequences if isinstance(sequences, list) else list(sequences)
        if not seqs:
            return cls(np.zeros(0, dtype=np.int64), vocab_size, header)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        if lengths.min() == 0:
            raise ValueError("cannot store an empty token sequence in the trie: every identifier needs >= 1 token")
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        if flat.max() >= vocab_size:
            raise ValueError(f"token id {int(flat.max())} >= vocab_size {vocab_size}: pass the model's vocabulary size")
        if flat.min() < 0:
            raise ValueError("token ids must be non-negative")
        # Column-major padded matrix (one contiguous row per depth), -1 past each sequence's end.
        dtype = np.int32 if vocab_size < 2**31 else np.int64
        cols = np.full((int(lengths.max()), len(seqs)), -1, dtype=dtype)
        cols.T[np.arange(cols.shape[0]) < lengths[:, None]] = flat
        del flat
        return cls._from_columns(cols, vocab_size, header)

    @classmethod
    def _from_columns(cls, cols: np.ndarray, vocab_size: int, header: TrieHeader | None) -> TokenTrie:
        """Trie from a ``[depth, sequences]`` matrix of token ids padded with -1."""
        cols = cols[:, _lexicographic_order(cols, vocab_size)]
        width, n_rows = cols.shape
        parent_of_row = np.zeros(n_rows, dtype=np.int64)  # node id of each row's prefix at depth d-1
        new_prefix = np.zeros(n_rows, dtype=bool)
        changed = np.ones(n_rows, dtype=bool)
        next_id = 1
        chunks: list[np.ndarray] = []
        for d in range(width):
            col = cols[d]
            present = col >= 0
            np.not_equal(col[1:], col[:-1], out=changed[1:])
            new_prefix = present & (changed | new_prefix)  # prefix of length d+1 differs from the row above
            starts = np.flatnonzero(new_prefix)
            if starts.size == 0:
                break
            chunks.append(parent_of_row[starts] * vocab_size + col[starts])
            # Node id of each row at depth d: ids are assigned to distinct prefixes in row order.
            node_of_row = np.cumsum(new_prefix, dtype=np.int64)
            node_of_row += next_id - 1
            parent_of_row = np.where(present, node_of_row, parent_of_row)
            next_id += starts.size
        keys = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return cls(keys, vocab_size, header)

    # ---------------------------------------------------------------- queries
    @property
    def num_nodes(self) -> int:
        """Number of nodes, the root included."""
        return int(self.keys.size) + 1

    def child(self, node: int, token: int) -> int:
        """Node reached from ``node`` by ``token``, or -1."""
        if not 0 <= token < self.vocab_size:
            return -1
        key = node * self.vocab_size + token
        i = int(np.searchsorted(self.keys, key))
        return i + 1 if i < self.keys.size and self.keys[i] == key else -1

    def children(self, node: int) -> np.ndarray:
        """Token ids that may follow ``node`` (sorted)."""
        lo, hi = np.searchsorted(self.keys, [node * self.vocab_size, (node + 1) * self.vocab_size])
        return self.keys[lo:hi] % self.vocab_size

    def walk(self, tokens: Sequence[int], node: int = ROOT) -> int:
        """Node reached from ``node`` by ``tokens``, or -1 if they leave the trie."""
        for t in tokens:
            node = self.child(node, int(t))
            if node < 0:
                return -1
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens allowed after ``prefix`` (GENRE's ``get``); [] if the prefix is not in the trie or complete."""
        node = self.walk(prefix)
        return [] if node < 0 else self.children(node).tolist()

    def is_leaf(self, node: int) -> bool:
        return self.children(node).size == 0

    def max_fanout(self) -> int:
        """Largest number of children of any node (sizes per-step buffers); computed once."""
        if self._max_fanout is None:
            self._max_fanout = int(np.bincount(self.keys // self.vocab_size).max()) if self.keys.size else 0
        return self._max_fanout

    def max_token(self) -> int:
        """Largest token id stored in the trie (-1 when empty); computed once."""
        if self._max_token is None:
            self._max_token = int((self.keys % self.vocab_size).max()) if self.keys.size else -1
        return self._max_token

    def max_length(self) -> int:
        """Length in tokens of the longest stored sequence (0 when empty); computed once.

        Nodes are numbered breadth-first, so a node's depth is its parent's plus one, filled level by level.
        """
        if self._max_length is None:
            depth = np.zeros(self.num_nodes, dtype=np.int64)
            parents = self.keys // self.vocab_size
            for _ in range(self.num_nodes):
                new = depth[parents] + 1
                if np.array_equal(new, depth[1:]):
                    break
                depth[1:] = new
            self._max_length = int(depth.max()) if self.keys.size else 0
        return self._max_length

    def required_new_tokens(self, force_prefix: bool = True) -> int:
        """Generation budget that fits every identifier: the trigger tokens plus the longest sequence.

        A smaller ``max_new_tokens`` cuts the longest identifiers short, and a cut identifier can rank first.
        """
        trigger = len(self.header.trigger) if self.header is not None and force_prefix else 0
        return trigger + self.max_length()

    def __len__(self) -> int:
        """Number of stored sequences (= leaves: no sequence is a prefix of another by construction)."""
        if self._num_leaves is None:
            parents = self.keys // self.vocab_size
            has_child = np.zeros(self.num_nodes, dtype=bool)
            has_child[parents] = True
            self._num_leaves = int((~has_child).sum()) if self.keys.size else 0
        return self._num_leaves

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, (list, tuple, np.ndarray)):
            return False
        node = self.walk([int(t) for t in seq])
        return node > 0 and self.is_leaf(node)

    def __iter__(self) -> Iterator[list[int]]:
        """All stored sequences, in lexicographic order of token ids."""
        parents = self.keys // self.vocab_size
        tokens = self.keys % self.vocab_size
        has_child = np.zeros(self.num_nodes, dtype=bool)
        has_child[parents] = True
        leaves = np.flatnonzero(~has_child[1:]) + 1
        paths = []
        for leaf in leaves.tolist():
            path = []
            node = leaf
            while node != self.ROOT:
                path.append(int(tokens[node - 1]))
                node = int(parents[node - 1])
            paths.append(path[::-1])
        paths.sort()
        yield from paths

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``) atomically with the header as JSON."""
        path = Path(path)
        header = self.header.to_json() if self.header else "{}"
        write_bytes_atomic(
            path, lambda f: np.savez(f, keys=self.keys, vocab_size=np.int64(self.vocab_size), header=np.array(header))
        )
        return path

    @classmethod
    def load(cls, path: str | Path, tokenizer: Any | None = None, prefix: str | None = None) -> TokenTrie:
        """Load a trie; with ``tokenizer``/``prefix`` given, refuse one built for another tokenizer or prefix."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trie file at {path}: build it with build_identifier_trie(...).save(path)")
        with np.load(path, allow_pickle=False) as data:
            keys = data["keys"].astype(np.int64, copy=False)
            vocab_size = int(data["vocab_size"])
            header_json = str(data["header"])
        header = TrieHeader.from_json(header_json) if header_json != "{}" else None
        if header is not None and header.format_version != TRIE_FORMAT_VERSION:
            raise ValueError(
                f"{path}: trie format {header.format_version}, this swift_ssid reads {TRIE_FORMAT_VERSION}; rebuild it"
            )
        trie = cls(keys, vocab_size, header)
        if tokenizer is not None:
            trie.check_tokenizer(tokenizer, source=str(path))
        if prefix is not None and header is not None and header.prefix != prefix:
            raise ValueError(f"{path}: trie was built for prefix {header.prefix!r}, not {prefix!r}; rebuild it")
        return trie

    def check_tokenizer(self, tokenizer: Any, source: str = "trie") -> None:
        """Raise if ``tokenizer`` is not the one this trie was built with."""
        if self.header is None:
            return
        fp = tokenizer_fingerprint(tokenizer)
        if fp["hash"] != self.header.tokenizer_hash:
            raise ValueError(
                f"{source}: built for tokenizer {self.header.tokenizer_name!r} (vocab {self.header.vocab_size}, "
                f"hash {self.header.tokenizer_hash[:12]}), but got {fp['name']!r} (vocab {fp['vocab_size']}, "
                f"hash {fp['hash'][:12]}); rebuild the trie for this tokenizer"
            )


def _lexicographic_order(cols: np.ndarray, vocab_size: int) -> np.ndarray:
    """Row order that sorts the sequences (columns of ``cols``) lexicographically, a prefix before its extensions.

    Packs several depths into one ``int64`` sort key (token + 1 in ``vocab_size.bit_length()`` bits,
    padding = 0 sorts first), so ``lexsort`` runs over ~3x fewer keys than depths.
    """
    bits = int(vocab_size).bit_length()
    per_key = max(1, 63 // bits)
    keys = []
    for start in range(0, cols.shape[0], per_key):
        key = np.zeros(cols.shape[1], dtype=np.int64)
        for d in range(start, min(start + per_key, cols.shape[0])):
            key <<= bits
            key |= cols[d] + 1
        keys.append(key)
    return np.lexsort(keys[::-1])  # lexsort's primary key is the last


def build_identifier_trie(
    tokenizer: Any,
    identifiers: Sequence[str],
    prefix: str = IDENTIFIER_PREFIX,
    end: End = "newline",
    vocab_size: int | None = None,
    line_end: str = DEFAULT_LINE_END,
    continuation: str = REASON_PREFIX,
    eos_token_id: int | None = None,
    drop_unrepresentable: bool = False,
) -> TokenTrie:
    """Trie of ``identifiers`` as the model generates them after ``prefix``.

    Every identifier's tokens must decode back to it (:func:`round_trip_offenders`); the header's
    ``extra`` records the offenders (``dropped``), the trigger's in-context token runs (``triggers``)
    and, when those are not reliable, why (``trigger_problem``).

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (offsets are needed to find the line end).
        identifiers: canonical identifiers (unique).
        prefix: the response text right before the identifier.
        end: ``"newline"`` when a reason line follows, ``"eos"`` when the target ends after the identifier.
        vocab_size: logits width of the model (defaults to ``len(tokenizer)``); must cover every token id.
        eos_token_id: the token that ends a response in the chat template (e.g. ``<|im_end|>``); defaults to
            the tokenizer's. Used as the terminator when ``end="eos"`` and for dead-end rows.
        drop_unrepresentable: leave identifiers that cannot round-trip out of the trie (listed in
            ``header.extra["dropped"]``) instead of raising.

    Raises:
        ValueError: an identifier cannot round-trip through the tokenizer (without ``drop_unrepresentable``),
            or none can.
    """
    eos_token_id = tokenizer.eos_token_id if eos_token_id is None else int(eos_token_id)
    trigger, sequences = identifier_token_sequences(
        tokenizer, identifiers, prefix, end, line_end, continuation, eos_token_id=eos_token_id
    )
    offenders = round_trip_offenders(tokenizer, trigger, identifiers, sequences, prefix, eos_token_id)
    if offenders and (not drop_unrepresentable or len(offenders) == len(identifiers)):
        shown = "; ".join(f"{ident!r} {why}" for ident, why in list(offenders.items())[:5])
        raise ValueError(
            f"{len(offenders)} of {len(identifiers)} identifiers cannot round-trip through the tokenizer ({shown}); "
            "regenerate those images or edit their identifiers (special-token text and '▁' cannot be generated)"
        )
    kept = [(ident, seq) for ident, seq in zip(identifiers, sequences, strict=True) if ident not in offenders]
    kept_ids = [ident for ident, _ in kept]
    sequences = [seq for _, seq in kept]
    suffix = line_end + continuation if end == "newline" else ""
    triggers, trigger_problem = trigger_variants(tokenizer, prefix, trigger, kept_ids, sequences, suffix)
    fp = tokenizer_fingerprint(tokenizer)
    vocab_size = int(vocab_size or len(tokenizer))
    header = TrieHeader(
        tokenizer_name=fp["name"],
        vocab_size=fp["vocab_size"],
        tokenizer_hash=fp["hash"],
        prefix=prefix,
        trigger=trigger,
        end=end,
        eos_token_id=eos_token_id,
        num_sequences=len(sequences),
        extra={"triggers": triggers, "trigger_problem": trigger_problem, "dropped": offenders},
    )
    return TokenTrie.from_sequences(sequences, vocab_size=vocab_size, header=header)
