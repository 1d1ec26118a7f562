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
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from swift_ssid.core.jsonl import write_bytes_atomic

TRIE_FORMAT_VERSION = 2  # 2: header.extra holds triggers, trigger_problem, dropped
DEFAULT_PREFIX = "identifier:"
DEFAULT_LINE_END = "\n"
DEFAULT_CONTINUATION = "reason:"

End = Literal["newline", "eos"]


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


# -------------------------------------------------------------------- tokenizer side
def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Name, vocabulary size and a hash of the vocabulary (token -> id), for trie headers."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256()
    for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{tok}\n".encode("utf-8", "surrogatepass"))
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return {"name": str(name), "vocab_size": len(vocab), "hash": h.hexdigest()}


def identifier_token_sequences(
    tokenizer: Any,
    identifiers: Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    end: End = "newline",
    line_end: str = DEFAULT_LINE_END,
    continuation: str = DEFAULT_CONTINUATION,
    batch_size: int = 8192,
    eos_token_id: int | None = None,
) -> tuple[tuple[int, ...], list[list[int]]]:
    """Tokenise identifiers in the context they are generated in.

    Each target text is ``prefix + identifier + line_end + continuation`` (``end="newline"``) or
    ``prefix + identifier`` followed by EOS (``end="eos"``), tokenised as a whole, the way the
    chat template tokenises the response. The *trigger* is the longest run of leading tokens that
    every target shares with the tokenised prefix alone (it can be shorter than the prefix when
    BPE merges the prefix's last character into the identifier). Each identifier's sequence is
    what follows the trigger, up to and including the token that covers the end of ``line_end``.

    Returns:
        ``(trigger, sequences)``, one sequence per identifier, in input order.

    Raises:
        ValueError: if the boundary tokenisation is unstable (no shared trigger, an identifier
            containing ``line_end``, or a target whose tokens do not reproduce the prefix).
    """
    if not identifiers:
        raise ValueError("no identifiers given: build the index first (swift-ssid build-index)")
    if end not in ("newline", "eos"):
        raise ValueError(f"end must be 'newline' or 'eos', got {end!r}")
    eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if end == "eos" and eos_token_id is None:
        raise ValueError("end='eos' needs an eos_token_id (the tokenizer has none); pass eos_token_id=...")
    prefix_ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    if not prefix_ids:
        raise ValueError(f"prefix {prefix!r} tokenises to nothing")
    with _gc_paused():
        return _token_sequences(
            tokenizer, identifiers, prefix, prefix_ids, end, line_end, continuation, batch_size, eos_token_id
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building millions of small lists otherwise triggers collections
    that traverse every live container (the lists are acyclic; reference counting still frees them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _token_sequences(
    tokenizer: Any,
    identifiers: Sequence[str],
    prefix: str,
    prefix_ids: list[int],
    end: End,
    line_end: str,
    continuation: str,
    batch_size: int,
    eos_token_id: int | None,
) -> tuple[tuple[int, ...], list[list[int]]]:
    """The loop of :func:`identifier_token_sequences` (arguments already validated)."""
    suffix = line_end + continuation if end == "newline" else ""
    eos_tail = [int(eos_token_id)] if end == "eos" else []
    trigger_len = len(prefix_ids)
    sequences: list[list[int]] = []
    # (index of the first sequence cut at this trigger length, trigger length), to re-extend if it shrinks later.
    cuts: list[tuple[int, int]] = [(0, trigger_len)]
    for start in range(0, len(identifiers), batch_size):
        chunk = identifiers[start : start + batch_size]
        if line_end:
            for ident in chunk:
                if line_end in ident:
                    raise ValueError(f"identifier {ident!r} contains the line end {line_end!r}; canonicalise it first")
        encoded = _encode_with_offsets(tokenizer, [prefix + ident + suffix for ident in chunk])
        for ident, (ids, offsets) in zip(chunk, encoded, strict=True):
            if ids[:trigger_len] != prefix_ids[:trigger_len]:
                shared = 0
                while shared < trigger_len and shared < len(ids) and ids[shared] == prefix_ids[shared]:
                    shared += 1
                if shared == 0:
                    raise ValueError(
                        f"unstable boundary tokenisation: the prefix {prefix!r} tokenises to {prefix_ids}, but "
                        f"identifier {ident!r} shares none of those tokens; this tokenizer cannot find the identifier "
                        "span. Use a prefix that ends in whitespace or a token boundary."
                    )
                trigger_len = shared
                cuts.append((len(sequences), trigger_len))
            if end == "eos":
                seq = ids[trigger_len:] + eos_tail
            else:
                # The token that covers the end of the line: the first whose end offset reaches it.
                ident_end = len(prefix) + len(ident) + len(line_end)
                stop, n_ids = trigger_len, len(ids)
                while stop < n_ids and offsets[stop][1] < ident_end:
                    stop += 1
                if stop == n_ids:
                    raise ValueError(f"could not find the token that ends identifier {ident!r}'s line")
                seq = ids[trigger_len : stop + 1]
            if not seq:
                raise ValueError(f"identifier {ident!r} produced an empty token span after the prefix {prefix!r}")
            sequences.append(seq)
    # Sequences cut at a longer trigger than the final one start with the prefix tokens in between.
    for (first, cut_len), (nxt, _) in zip(cuts, [*cuts[1:], (len(sequences), 0)], strict=True):
        if cut_len > trigger_len:
            head = prefix_ids[trigger_len:cut_len]
            for i in range(first, nxt):
                sequences[i] = head + sequences[i]
    return tuple(prefix_ids[:trigger_len]), sequences


def _encode_with_offsets(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Token ids and character offsets of ``texts`` (no special tokens), as ``tokenizer(texts)`` returns them.

    Calls the Rust backend of a fast tokenizer directly when its settings make that identical to
    ``tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)`` (no truncation or
    padding configured): that skips building a ``BatchEncoding`` and halves the tokenisation time.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(ids), offsets) for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]


# Text that may come right before the prefix in a response: nothing (the response starts with it), a line
# break (after a caption line), a blank line, a space (inline). SentencePiece writes ``identifier`` without its
# leading ``▁`` after a line break, byte-level BPE merges a space into the word: each is another token run.
TRIGGER_CONTEXTS = ("\n", "\n\n", " ", ".\n", ". ", "**")
_CONTEXT_WORD = "a"  # a word before the context, so the context is tokenised as it is inside a response


def trigger_variants(
    tokenizer: Any,
    prefix: str,
    trigger: Sequence[int],
    identifiers: Sequence[str],
    sequences: Sequence[Sequence[int]],
    suffix: str,
    sample: int = 64,
) -> tuple[list[list[int]], str | None]:
    """Every token run that writes the trigger in context, and whether the span after it stays the trie's.

    For each of :data:`TRIGGER_CONTEXTS`, ``"a" + context + prefix + identifier + suffix`` is tokenised for up
    to ``sample`` identifiers (first and last); the tokens from the first one that reaches into the prefix
    through the one that ends where the plain trigger ends form a variant (a token that also holds context
    characters, as SentencePiece's ``▁identifier`` or byte-level BPE's ``Ġidentifier``, is part of it), and the
    tokens after it must be the identifier's trie sequence.

    Returns:
        ``(variants, problem)``: the plain trigger first, then the distinct in-context runs; ``problem`` is
        None when every context reproduces the trie's sequences, else what went wrong (the processor then
        refuses ``force_prefix=False``).
    """
    variants = [list(trigger)]
    if not trigger:
        return variants, "the trigger is empty"
    plain = _encode_with_offsets(tokenizer, [prefix])[0]
    trigger_chars = plain[1][len(trigger) - 1][1]
    picks = list(range(min(sample // 2, len(identifiers))))
    picks += [i for i in range(max(len(identifiers) - sample // 2, 0), len(identifiers)) if i not in picks]
    head = len(_CONTEXT_WORD)
    for context in TRIGGER_CONTEXTS:
        texts = [_CONTEXT_WORD + context + prefix + identifiers[i] + suffix for i in picks]
        prefix_start = head + len(context)
        start_char = prefix_start + trigger_chars
        for i, (ids, offsets) in zip(picks, _encode_with_offsets(tokenizer, texts), strict=True):
            first = next((j for j, (_, b) in enumerate(offsets) if b > prefix_start), None)
            stop = next((j for j, (_, b) in enumerate(offsets) if b == start_char), None)
            if first is None or stop is None or stop < first:
                return variants, f"after {context!r} the trigger part of {prefix!r} does not end on a token boundary"
            seq = list(sequences[i])
            body = list(ids[stop + 1 : stop + 1 + len(seq)])
            if body != seq[: len(body)] or (len(body) < len(seq) and seq[len(body) :] != seq[-1:]):
                return variants, (
                    f"after {context!r} identifier {identifiers[i]!r} tokenises differently from the trie's sequence"
                )
            run = list(ids[first : stop + 1])
            if run not in variants:
                variants.append(run)
    return variants, None


def round_trip_offenders(
    tokenizer: Any,
    trigger: Sequence[int],
    identifiers: Sequence[str],
    sequences: Sequence[Sequence[int]],
    prefix: str = DEFAULT_PREFIX,
    eos_token_id: int | None = None,
) -> dict[str, str]:
    """Identifiers whose generated tokens do not decode back to them, or share another's tokens.

    Each ``trigger + sequence`` is read as ms-swift reads a response: generation ends at the first
    ``eos_token_id``, the tokens before it are decoded with special tokens kept (an added token, such as an
    atomic identifier's ``img_000123``, is text), and the text goes through
    :func:`swift_ssid.core.answers.parse_choice`, which must give the identifier's canonical form. Special-token
    text that is the end token (``</s>``, ``<|im_end|>``: the tokenizer turns the text into the token, so
    generation would stop inside the identifier) and text a tokenizer cannot keep apart (SentencePiece's
    ``▁`` against a space) fail here.

    Returns:
        ``{identifier: why}`` for each offender (the later of two identical sequences).
    """
    from swift_ssid.core.answers import canonical_identifier, parse_choice

    full = [list(trigger) + list(seq) for seq in sequences]
    if eos_token_id is not None:
        full = [ids[: ids.index(eos_token_id)] if eos_token_id in ids else ids for ids in full]
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None:
        texts = backend.decode_batch(full, skip_special_tokens=False)
    else:
        texts = tokenizer.batch_decode(full, skip_special_tokens=False, spaces_between_special_tokens=False)
    offenders: dict[str, str] = {}
    owner: dict[tuple[int, ...], str] = {}
    for ident, seq, text in zip(identifiers, sequences, texts, strict=True):
        key = tuple(seq)
        if key in owner:
            offenders[ident] = f"tokenises exactly like {owner[key]!r}"
            continue
        owner[key] = ident
        head = prefix + ident
        if text == head or text.startswith(head + "\n"):
            continue  # the usual case, exact: no need to read it like a model answer
        back = parse_choice(text)[0]
        if back != canonical_identifier(ident):
            offenders[ident] = f"its tokens decode to {back!r}"
    return offenders


def build_identifier_trie(
    tokenizer: Any,
    identifiers: Sequence[str],
    prefix: str = DEFAULT_PREFIX,
    end: End = "newline",
    vocab_size: int | None = None,
    line_end: str = DEFAULT_LINE_END,
    continuation: str = DEFAULT_CONTINUATION,
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
