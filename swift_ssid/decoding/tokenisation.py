"""Identifier tokenisation in context: the token runs a model generates for each identifier.

The trie (:mod:`swift_ssid.decoding.trie`) stores what these functions produce: each identifier's tokens as the
tokenizer writes them *after* the answer prefix ``identifier:`` (:data:`swift_ssid.core.answers.IDENTIFIER_PREFIX`)
and through the token that closes the line, the *trigger* tokens that open the span, the other token runs that
write the trigger inside a response, and the identifiers whose tokens do not decode back to them. Also the
tokenizer fingerprint a trie header records.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from swift_ssid.core.answers import IDENTIFIER_PREFIX, REASON_PREFIX, canonical_identifier, parse_choice

DEFAULT_LINE_END = "\n"

End = Literal["newline", "eos"]


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
    prefix: str = IDENTIFIER_PREFIX,
    end: End = "newline",
    line_end: str = DEFAULT_LINE_END,
    continuation: str = REASON_PREFIX,
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
    prefix: str = IDENTIFIER_PREFIX,
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
