"""Trie-constrained decoding as a ``transformers`` ``LogitsProcessor``.

The processor lets the model write freely until the identifier prefix (the trie's *trigger*
tokens, e.g. ``identifier:``) has been generated, then allows only trie continuations until the
identifier line is closed, then lets the reason line run free again. With ``force_prefix`` the
trigger itself is forced at the start of the response, so even an untrained model answers with a
valid identifier.

Per-row state (phase and trie node) advances by one token per step. Beam search reorders rows
between steps without telling logits processors, so each new row finds its parent among the
previous step's rows of the same beam group by comparing the generated tokens (vectorised, no
host round-trip on CUDA). All work is torch tensor ops on the scores' device; the only per-step
cost that grows with the vocabulary is the one new ``[rows, vocab]`` output tensor.

Masking has two paths with identical results. On CPU (host syncs are free) the output is a
write-only ``-inf`` fill (or a copy of the free rows) and then only the allowed entries are copied,
ragged, so the work beyond the fill is the sum of the rows' fan-outs. On accelerators a fixed-width
gather/scatter of ``[rows, max fan-out]`` avoids data-dependent shapes and so any host-device sync.
``benchmarks/bench_constrained.py`` measures the CPU path against the cost of a bare copy.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from swift_ssid.decoding.trie import TokenTrie

# Row phases.
FORCE = 0  # emitting the trigger tokens (force_prefix)
SEARCH = 1  # free text, watching for the trigger
SPAN = 2  # inside the identifier: trie continuations only
FREE = 3  # identifier closed: free text (or EOS only, with reason=False)
DEAD = 4  # left the trie (cannot happen under this processor alone): EOS only


# Each trie's keys on each accelerator, uploaded once (a processor is created per generate call).
_DEVICE_KEYS: weakref.WeakKeyDictionary[TokenTrie, dict[torch.device, torch.Tensor]] = weakref.WeakKeyDictionary()


def _device_keys(trie: TokenTrie, device: torch.device) -> torch.Tensor:
    """``trie.keys`` as a tensor on ``device``: shared memory on CPU, one cached copy per accelerator."""
    if device.type == "cpu":
        return torch.from_numpy(trie.keys)
    per_device = _DEVICE_KEYS.setdefault(trie, {})
    if device not in per_device:
        per_device[device] = torch.as_tensor(trie.keys, device=device)
    return per_device[device]


class SSIDConstrainedLogitsProcessor(LogitsProcessor):
    """Allow only identifiers from ``trie`` in the identifier span of each generated row.

    Args:
        trie: identifier token trie; its header's ``trigger`` is the token sequence that opens the span.
        num_beams: beams per input (rows of ``input_ids`` come in groups of this size).
        eos_token_id: token id(s) a dead-end row may emit; defaults to the trie header's.
        force_prefix: force the trigger tokens at the start of the response.
        reason: let the model write the reason line after the identifier; ``False`` allows only EOS there
            (the paper's "reason in training only" ablation).
        trigger: override the trigger token ids (defaults to ``trie.header.trigger``).
        triggers: further token runs that also open the span when generated (without ``force_prefix``);
            defaults to the trie header's ``extra["triggers"]``: every in-context tokenisation of the prefix
            (after a line break SentencePiece writes ``identifier`` without its ``▁``).

    Raises:
        ValueError: ``force_prefix=False`` with a trie whose header says some in-context tokenisation of the
            prefix is not recognisable (``extra["trigger_problem"]``): the span could silently never open.

    ``__call__(input_ids: LongTensor[rows, seq], scores: FloatTensor[rows, vocab]) -> FloatTensor[rows, vocab]``
    returns a new tensor (``scores`` is not modified); disallowed entries are ``-inf`` and every row
    keeps at least one allowed token.

    Use one instance per ``generate`` call (the SSID templates create one in ``prepare_generate_kwargs``).
    A call whose sequence length is not the previous one plus one starts a new generation.
    """

    def __init__(
        self,
        trie: TokenTrie,
        num_beams: int = 1,
        eos_token_id: int | Sequence[int] | None = None,
        force_prefix: bool = True,
        reason: bool = True,
        trigger: Sequence[int] | None = None,
        triggers: Sequence[Sequence[int]] | None = None,
    ):
        if not isinstance(trie, TokenTrie):
            raise ValueError(f"trie must be a swift_ssid.decoding.trie.TokenTrie, got {type(trie).__name__}")
        if len(trie) == 0:
            raise ValueError("trie is empty: build it from at least one identifier")
        if not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams must be a positive int, got {num_beams!r}")
        extra = trie.header.extra if trie.header is not None else {}
        if trigger is None:
            if trie.header is None:
                raise ValueError("trie has no header: pass trigger=[...] (the token ids of the identifier prefix)")
            trigger = trie.header.trigger
            if triggers is None:
                triggers = extra.get("triggers")
        if not force_prefix and len(trigger) and extra.get("trigger_problem"):
            raise ValueError(
                f"force_prefix=False cannot find the identifier span reliably with this tokenizer: "
                f"{extra['trigger_problem']}; use force_prefix=True (the SSID templates do)"
            )
        if eos_token_id is None and trie.header is not None:
            eos_token_id = trie.header.eos_token_id
        if eos_token_id is None:
            raise ValueError("eos_token_id is required (the token a dead-end row may end with)")
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not eos:
            raise ValueError("eos_token_id must name at least one token id")
        self.trie = trie
        self.num_beams = num_beams
        self.force_prefix = bool(force_prefix) and len(trigger) > 0
        self.reason = bool(reason)
        self._trigger_list = [int(t) for t in trigger]
        self._variant_lists = [self._trigger_list] + [
            [int(t) for t in run] for run in (triggers or ()) if run and [int(t) for t in run] != self._trigger_list
        ]
        self._eos_list = [int(t) for t in eos]
        self._fanout = max(trie.max_fanout(), len(self._eos_list), 1)
        self._max_token = max([trie.max_token(), *(t for v in self._variant_lists for t in v), *self._eos_list])
        self._device: torch.device | None = None
        self._last_len = -1
        # None: fixed-width masking on accelerators, ragged on CPU; True/False force one (tests, benchmarks).
        self._fixed_width: bool | None = None

    # ------------------------------------------------------------------ device-side constants
    def _to(self, device: torch.device) -> None:
        if self._device == device:
            return
        self._keys = _device_keys(self.trie, device)
        self._trigger = torch.tensor(self._trigger_list, dtype=torch.long, device=device)
        self._variants = [torch.tensor(v, dtype=torch.long, device=device) for v in self._variant_lists if v]
        self._eos = torch.tensor(self._eos_list, dtype=torch.long, device=device)
        self._V = self.trie.vocab_size
        self._device = device

    # ------------------------------------------------------------------ state machine
    def _start(self, input_ids: torch.LongTensor) -> None:
        rows, length = input_ids.shape
        self._prompt_len = length
        self._rows = rows
        first = FORCE if self.force_prefix else (SPAN if not self._trigger_list else SEARCH)
        self._phase = torch.full((rows,), first, dtype=torch.long, device=input_ids.device)
        self._node = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        self._lo, self._hi = self._children_range(self._node)
        self._prev_gen = input_ids[:, length:]

    def _children_range(self, node: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.searchsorted(self._keys, node * self._V)
        hi = torch.searchsorted(self._keys, (node + 1) * self._V)
        return lo, hi

    def _reorder_to_parents(self, gen: torch.Tensor) -> None:
        """Permute per-row state so row r carries the state of the row it was extended from."""
        k = self.num_beams
        if k == 1 or gen.shape[1] < 2:
            return  # greedy/sampling keep row order; at the first generated token all beams share one state
        groups = self._rows // k
        prev = self._prev_gen.view(groups, 1, k, -1)
        cur = gen[:, :-1].reshape(groups, k, 1, -1)
        match = (cur == prev).all(dim=-1)  # [groups, k (new row), k (candidate parent)]
        parent = match.to(torch.int8).argmax(dim=-1)
        parent = (parent + torch.arange(groups, device=gen.device).unsqueeze(1) * k).reshape(-1)
        self._phase = self._phase[parent]
        self._node = self._node[parent]

    def _advance(self, input_ids: torch.LongTensor) -> None:
        gen = input_ids[:, self._prompt_len :]
        self._reorder_to_parents(gen)
        last = gen[:, -1]
        phase, node = self._phase, self._node

        # FORCE: consume the expected trigger token; the last one opens the span at the root.
        n_trig = len(self._trigger_list)
        if n_trig:
            expected = self._trigger[node.clamp(max=n_trig - 1)]
            in_force = phase == FORCE
            ok = in_force & (last == expected)
            done_force = ok & (node + 1 == n_trig)
            node = torch.where(ok, node + 1, node)
            phase = torch.where(in_force & ~ok, DEAD, phase)
            phase = torch.where(done_force, SPAN, phase)
            node = torch.where(done_force, 0, node)
            force_opened = done_force
        else:
            force_opened = torch.zeros_like(phase, dtype=torch.bool)

        # SEARCH: any in-context tokenisation of the trigger just completed in the generated text opens the span.
        found = None
        for variant in () if self.force_prefix else self._variants:  # no row searches when the prefix is forced
            n = variant.numel()
            if gen.shape[1] >= n:
                hit = (gen[:, -n:] == variant).all(dim=1)
                found = hit if found is None else found | hit
        if found is not None:
            found = found & (phase == SEARCH)
            phase = torch.where(found, SPAN, phase)
            node = torch.where(found, 0, node)
            force_opened = force_opened | found

        # SPAN (rows that were already inside the span before this token): follow the trie.
        in_span = (phase == SPAN) & ~force_opened
        key = node * self._V + last
        idx = torch.searchsorted(self._keys, key).clamp(max=self._keys.numel() - 1)
        hit = (self._keys[idx] == key) & (last < self._V)
        node = torch.where(in_span & hit, idx + 1, node)
        # One children-range lookup per step, of each row's new node: it finds leaves here and is
        # reused by the masking below.
        lo, hi = self._children_range(node)
        phase = torch.where(in_span & hit & (lo == hi), FREE, phase)
        phase = torch.where(in_span & ~hit, DEAD, phase)

        self._phase, self._node, self._lo, self._hi = phase, node, lo, hi
        self._prev_gen = gen

    # ------------------------------------------------------------------ masking
    def _allowed_tokens(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-width path: per-row allowed ids ``[rows, width]`` (padded with repeats) and a free-row mask.

        No data-dependent shapes, so no host-device sync: the accelerator path. A row's children are
        the key positions ``lo .. hi - 1``, padded by repeating the last one (a duplicate, not a new
        id); rows outside the trie (forced trigger, ending) take their token(s) in one ``where``.
        """
        phase, node, lo, hi = self._phase, self._node, self._lo, self._hi
        trie_rows = (phase == SPAN) & (hi > lo)
        n_eos = len(self._eos_list)
        ar = torch.arange(width, device=phase.device)
        last = (hi - 1).clamp(min=0, max=max(self._keys.numel() - 1, 0))
        pos = torch.minimum(lo.unsqueeze(1) + ar, last.unsqueeze(1))
        tokens = self._keys[pos]
        tokens -= (node * self._V).unsqueeze(1)
        # Forced rows: the next trigger token; ending rows (dead end, empty span, no-reason FREE): the EOS
        # ids; free rows: any valid id (the whole row is kept anyway).
        eos_pad = self._eos.repeat((width + n_eos - 1) // n_eos)[:width]
        other = eos_pad.unsqueeze(0).expand(phase.shape[0], width)
        if self._trigger_list:
            forced = self._trigger[node.clamp(max=len(self._trigger_list) - 1)]
            other = torch.where((phase == FORCE).unsqueeze(1), forced.unsqueeze(1), other)
        return torch.where(trie_rows.unsqueeze(1), tokens, other), self._free_rows()

    def _free_rows(self) -> torch.Tensor:
        return (self._phase == SEARCH) | ((self._phase == FREE) & self.reason)

    def _copy_allowed(self, scores: torch.Tensor, out: torch.Tensor, free: torch.Tensor) -> None:
        """CPU path: copy every allowed entry of the constrained rows from ``scores`` into ``out``.

        The work is proportional to the allowed entries (the sum of the rows' fan-outs), not rows x the
        largest fan-out. When all trie rows sit on one node (the root, or all beams after the same
        token), that node's children are one slice of ``keys`` and, if every other row is free, one
        column copy (rows in ascending token order: cache-friendly); otherwise one flat index copy.
        """
        phase, node, lo, hi = self._phase, self._node, self._lo, self._hi
        width = scores.shape[1]  # flat index = row * width + token; keys use the trie's own vocab_size
        flat = []
        trie_rows = (phase == SPAN) & (hi > lo)
        trie_r = trie_rows.nonzero().flatten()
        if trie_r.numel():
            n_r = node[trie_r]
            if bool((n_r == n_r[0]).all()):
                first, stop = int(lo[trie_r[0]]), int(hi[trie_r[0]])
                tok = self._keys[first:stop] - int(n_r[0]) * self._V
                if bool((trie_rows | free).all()):
                    out.index_copy_(1, tok, scores.index_select(1, tok))
                else:
                    flat.append((trie_r.unsqueeze(1) * width + tok.unsqueeze(0)).flatten())
            else:
                # Ragged: the key positions lo..hi-1 of every row, one after another, and each entry's
                # row offset, built as running sums of per-entry steps (serial scans and small writes).
                lo_r, hi_r = lo[trie_r], hi[trie_r]
                ends = torch.cumsum(hi_r - lo_r, 0)
                total, bounds = int(ends[-1]), ends[:-1]
                step = torch.ones(total, dtype=torch.long)
                step[0] = lo_r[0]
                step.index_copy_(0, bounds, lo_r[1:] - hi_r[:-1] + 1)
                shift = trie_r * width - n_r * self._V  # flat index = key + shift of the entry's row
                jump = torch.zeros(total, dtype=torch.long)
                jump[0] = shift[0]
                jump.index_copy_(0, bounds, shift[1:] - shift[:-1])
                flat.append(self._keys.index_select(0, torch.cumsum(step, 0)) + torch.cumsum(jump, 0))
        force_r = (phase == FORCE).nonzero().flatten()
        if force_r.numel() and self._trigger_list:
            flat.append(force_r * width + self._trigger[node[force_r].clamp(max=len(self._trigger_list) - 1)])
        end_rows = (phase == DEAD) | ((phase == SPAN) & (hi == lo)) | ((phase == FREE) & (not self.reason))
        end_r = end_rows.nonzero().flatten()
        if end_r.numel():
            flat.append((end_r.unsqueeze(1) * width + self._eos.unsqueeze(0)).flatten())
        if flat:
            index = torch.cat(flat) if len(flat) > 1 else flat[0]
            # 1-D index_select/index_copy_ stay serial for small index sets (take/put_ go parallel and can
            # stall for a scheduler tick on a busy machine). Both tensors are contiguous here.
            out.view(-1).index_copy_(0, index, scores.view(-1).index_select(0, index))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._to(scores.device)
        rows, length = input_ids.shape
        if length == self._last_len + 1 and rows == getattr(self, "_rows", -1):
            self._advance(input_ids)
        else:
            if rows % self.num_beams:
                raise ValueError(f"input_ids has {rows} rows, not a multiple of num_beams={self.num_beams}")
            if self._max_token >= scores.shape[1]:
                raise ValueError(
                    f"trie, trigger or EOS token id {self._max_token} is beyond the model's {scores.shape[1]} logits; "
                    "rebuild the trie with this model's tokenizer"
                )
            self._start(input_ids)
        self._last_len = length

        if self._fixed_width if self._fixed_width is not None else scores.device.type != "cpu":
            # Accelerators: fixed-width gather/scatter and one where, no host-device sync.
            tokens, free = self._allowed_tokens(self._fanout)
            out = torch.where(free.unsqueeze(1), scores, float("-inf"))
            out.scatter_(1, tokens, scores.gather(1, tokens))
            return out
        # CPU: one pass over the whole [rows, vocab] tensor, the cheapest that makes a new tensor: a write-only
        # -inf fill plus a copy of the free rows, or (mostly free rows) a clone with the other rows filled;
        # both beat masked_fill/where, which run a slower broadcast kernel over every entry. Then the allowed
        # entries of the constrained rows only.
        free = self._free_rows()
        n_free = int(free.sum())
        if n_free == rows:
            return scores.clone()
        scores = scores.contiguous()  # a no-op for generate's scores; the flat indexing below needs it
        if 2 * n_free <= rows:
            out = torch.full_like(scores, float("-inf"))
            for r in free.nonzero().flatten().tolist():
                out[r].copy_(scores[r])
        else:
            out = scores.clone()
            for r in (~free).nonzero().flatten().tolist():
                out[r].fill_(float("-inf"))
        self._copy_allowed(scores, out, free)
        return out

    # ------------------------------------------------------------------ introspection (tests, debugging)
    @property
    def phase(self) -> torch.Tensor:
        """Per-row phases ``[rows]`` (FORCE, SEARCH, SPAN, FREE, DEAD) after the last call, on the scores' device."""
        return self._phase

    @property
    def phases(self) -> list[int]:
        return self._phase.tolist()
