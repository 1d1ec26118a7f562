"""Benchmark: trie build, memory, per-step cost and end-to-end constrained beam search at 10^4-10^6+ identifiers.

Run from the repository root (``make bench`` runs the full benchmark, ``--quick`` a short one)::

    .venv/bin/python benchmarks/bench_constrained.py --out benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench_constrained.py --quick --out /tmp/RESULTS.md --json /tmp/results.json

Identifiers are real-caption SSID phrases (see ``bench_identifiers.py``) tokenised with the real Qwen2
tokenizer (``make assets``). All timings are medians of interleaved repeats taken in this one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MODELSCOPE_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_genre import NestedDictTrie, genre_processor  # noqa: E402
from bench_identifiers import CAPTIONS, make_identifiers  # noqa: E402
from bench_report import write_plot, write_results_md  # noqa: E402
from bench_system import (  # noqa: E402
    interleaved,
    load_average,
    machine_description,
    now_utc,
    peak_rss_bytes,
    release_memory,
    reset_peak_rss,
    rss_bytes,
    summary,
    timed,
)

from swift_ssid.decoding.constrained import SPAN, SSIDConstrainedLogitsProcessor  # noqa: E402
from swift_ssid.decoding.trie import (  # noqa: E402
    TokenTrie,
    build_identifier_trie,
    identifier_token_sequences,
    tokenizer_fingerprint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO_ROOT / ".cache" / "assets" / "qwen2-tokenizer"
MODEL_VOCAB = 151_936  # Qwen2 / Qwen2.5(-VL) logits width
PREFIX = "identifier:"

FULL = {"sizes": [10_000, 100_000, 1_000_000, 5_000_000], "repeats": 31, "e2e_repeats": 9, "build_repeats": 3}
QUICK = {"sizes": [10_000, 100_000], "repeats": 9, "e2e_repeats": 3, "build_repeats": 2}


# ---------------------------------------------------------------------------------------------- inputs
def load_tokenizer():
    from transformers import AutoTokenizer

    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        raise SystemExit(f"missing {TOKENIZER_DIR}/tokenizer.json: run `make assets` first")
    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def caption_prompts(tokenizer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real captions as left-padded prompt ids and attention mask."""
    captions = [c.strip() for c in CAPTIONS.read_text(encoding="utf-8").splitlines() if c.strip()][: n * 5 : 5]
    ids = [tokenizer(f"Query: {c}\nAnswer:\n", add_special_tokens=False)["input_ids"] for c in captions]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return input_ids, attention


# ---------------------------------------------------------------------------------------------- build + memory
def measure_build(tokenizer, identifiers: list[str], eos: int, build_repeats: int, tok_repeats: int) -> dict[str, Any]:
    """Tokenise and build the trie; time both parts; measure trie bytes, RSS deltas and peak RSS."""
    release_memory()
    rss0 = rss_bytes()
    peak_ok = reset_peak_rss()
    tok_s = []
    for _ in range(tok_repeats):
        seconds, (trigger, seqs) = timed(lambda: identifier_token_sequences(tokenizer, identifiers, eos_token_id=eos))
        tok_s.append(seconds)
        if len(tok_s) < tok_repeats:
            del seqs
            release_memory()
    build_s = []
    for _ in range(build_repeats):
        seconds, trie = timed(lambda: TokenTrie.from_sequences(seqs, vocab_size=MODEL_VOCAB))
        build_s.append(seconds)
    fp_s, _ = timed(lambda: tokenizer_fingerprint(tokenizer))
    peak = peak_rss_bytes() - rss0 if peak_ok else None
    n = len(identifiers)
    if len(trie) != n:
        raise RuntimeError(f"trie holds {len(trie)} sequences for {n} unique identifiers")
    span_lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=n)
    return {
        "trigger": list(trigger),
        "seqs": seqs,
        "trie": trie,
        "tokenise_s": summary(tok_s),
        "construct_s": summary(build_s),
        "fingerprint_s": fp_s,
        "peak_rss_delta_bytes": peak,
        "rss0": rss0,
        "tokens_per_id": float(span_lengths.mean()),
        "max_tokens": int(span_lengths.max()),
    }


def tokenizer_floor(tokenizer, identifiers: list[str], repeats: int) -> dict[str, Any]:
    """Seconds per identifier of the Rust tokenizer alone on the same texts (no offsets handling, no trie work):
    what ``identifier_token_sequences`` cannot go below with this tokenizer."""
    texts = [PREFIX + i + "\nreason:" for i in identifiers]
    backend = tokenizer.backend_tokenizer
    samples = [timed(lambda: backend.encode_batch(texts, add_special_tokens=False))[0] for _ in range(repeats)]
    pretok = backend.pre_tokenizer
    sub = texts[: min(len(texts), 20_000)]
    regex_s = timed(lambda: [pretok.pre_tokenize_str(t) for t in sub])[0]
    return {
        "n": len(texts),
        "encode_batch_s": summary(samples),
        "per_id_us": summary(samples)["median"] / len(texts) * 1e6,
        "pre_tokenize_per_id_us": regex_s / len(sub) * 1e6,
    }


def measure_memory(trie: TokenTrie, n: int) -> dict[str, Any]:
    """Trie array bytes, and the RSS delta of loading the saved trie (what a serving process holds)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = trie.save(Path(tmp) / "trie.npz")
        release_memory()
        before = rss_bytes()
        loaded = TokenTrie.load(path)
        load_delta = rss_bytes() - before
        file_bytes = path.stat().st_size
        del loaded
    return {
        "nodes": trie.num_nodes,
        "nodes_per_id": trie.num_nodes / n,
        "trie_bytes": trie.nbytes,
        "trie_bytes_per_id": trie.nbytes / n,
        "rss_load_bytes_per_id": load_delta / n,
        "file_bytes_per_id": file_bytes / n,
        "max_fanout": trie.max_fanout(),
        "root_fanout": int(trie.children(TokenTrie.ROOT).size),
    }


def measure_genre_build(full_seqs: list[list[int]], n: int) -> tuple[NestedDictTrie, dict[str, Any]]:
    """Build the nested-dict reference; its size is summed over its dicts and keys (RSS deltas mislead
    here: the allocator reuses the memory the tokenisation just freed)."""
    seconds, ref = timed(lambda: NestedDictTrie(full_seqs))
    return ref, {"build_s": seconds, "bytes_per_id": ref.nbytes() / n}


def check_public_build(tokenizer, identifiers: list[str], eos: int, trie: TokenTrie) -> None:
    """The benchmark times the two halves of ``build_identifier_trie``; check they make the same trie."""
    public = build_identifier_trie(tokenizer, identifiers, vocab_size=MODEL_VOCAB, eos_token_id=eos)
    if not np.array_equal(public.keys, trie.keys):
        raise RuntimeError("build_identifier_trie and tokenise + TokenTrie.from_sequences built different tries")


# ---------------------------------------------------------------------------------------------- per-step cost
def beam_calls(
    prompt: torch.Tensor, row_seqs: list[list[int]], beams: int, steps: int, seed: int
) -> list[torch.Tensor]:
    """The ``input_ids`` a processor sees at each of ``steps + 1`` beam-search calls.

    Row ``r`` follows ``row_seqs[r]``; before each new token the rows of every group are permuted
    (beam search reorders beams between steps without telling logits processors).
    """
    rng = np.random.default_rng(seed)
    groups = prompt.shape[0]
    cur = prompt.repeat_interleave(beams, dim=0)
    who = np.arange(cur.shape[0])
    calls = [cur]
    for s in range(steps):
        perm = np.concatenate([g * beams + rng.permutation(beams) for g in range(groups)])
        cur, who = cur[torch.from_numpy(perm)], who[perm]
        tok = torch.tensor([row_seqs[w][s] for w in who]).unsqueeze(1)
        cur = torch.cat([cur, tok], dim=1)
        calls.append(cur)
    return calls


def widest_prefix(trie: TokenTrie) -> list[int]:
    """Token path from the root to the node with the most children."""
    parents = trie.keys // trie.vocab_size
    node = int(np.bincount(parents).argmax())
    path = []
    while node != TokenTrie.ROOT:
        path.append(int(trie.keys[node - 1] % trie.vocab_size))
        node = int(parents[node - 1])
    return path[::-1]


def position_rows(
    seqs: list[list[int]], trie: TokenTrie, rows: int, seed: int
) -> dict[str, tuple[int, list[list[int]]]]:
    """For each measured position: (span tokens already generated, one span sequence per row)."""
    rng = np.random.default_rng(seed)
    sample = [seqs[i] for i in rng.choice(len(seqs), size=min(len(seqs), 200_000), replace=False)]
    wide = widest_prefix(trie)
    under = [s for s in sample if s[: len(wide)] == wide and len(s) > len(wide)] or [
        s for s in seqs if s[: len(wide)] == wide and len(s) > len(wide)
    ]
    mid_depth = 3
    deep = [s for s in sample if len(s) > mid_depth + 1]
    pick = lambda pool: [pool[i] for i in rng.integers(0, len(pool), size=rows)]  # noqa: E731
    return {"root": (0, pick(sample)), "widest": (len(wide), pick(under)), "mid": (mid_depth, pick(deep))}


def allowed_sets(out: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(torch.isfinite(r).nonzero().flatten().tolist()) for r in out]


def prepare_steps(
    trie: TokenTrie,
    trigger: list[int],
    seqs: list[list[int]],
    genre: NestedDictTrie | None,
    prompt: torch.Tensor,
    scores: torch.Tensor,
    eos: int,
    beams: int,
    seed: int,
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], Callable[[], Any]], list[Callable[[], None]]]:
    """Set up the step at the root, the widest node and mid-identifier, and check every variant's output.

    Returns:
        per-position metadata, the timed variants keyed ``(position, variant)`` (floors, SSID processor,
        GENRE reference), and checks to run after timing (the snapshot processor did not drift).
    """
    rows = scores.shape[0]
    all_rows = torch.ones(rows, 1, dtype=torch.bool)
    buffer = torch.empty_like(scores)
    meta: dict[str, dict[str, Any]] = {}
    variants: dict[tuple[str, str], Callable[[], Any]] = {}
    after: list[Callable[[], None]] = []
    for position, (depth, row_seqs) in position_rows(seqs, trie, rows, seed).items():
        calls = beam_calls(prompt, [trigger + s for s in row_seqs], beams, len(trigger) + depth, seed)
        warm = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos, trigger=trigger)
        for ids in calls[:-1]:
            warm(ids, scores)
        last = calls[-1]

        def ssid(w=warm, last=last):
            return copy.copy(w)(last, scores)  # a snapshot that has seen the previous steps

        fresh = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos, trigger=trigger)
        for ids in calls:
            reference = fresh(ids, scores)
        if not bool((fresh.phase == SPAN).all()):
            raise RuntimeError(f"{position}: not every row is inside the identifier span at the measured step")
        fixed = copy.copy(warm)
        fixed._fixed_width = True  # the accelerator path, run on CPU: must agree exactly
        if not torch.equal(fixed(last, scores), reference):
            raise RuntimeError(f"{position}: the fixed-width (accelerator) path disagrees with the CPU path")
        ssid_sets = allowed_sets(reference)
        variants[(position, "floor_clone")] = lambda: scores.clone()
        variants[(position, "floor_masked_fill")] = lambda: scores.masked_fill(all_rows, float("-inf"))
        variants[(position, "floor_full")] = lambda: torch.full_like(scores, float("-inf"))
        # Not a valid processor output (it reuses one buffer): the share of the floor that is allocation.
        variants[(position, "fill_existing")] = lambda: buffer.fill_(float("-inf"))
        variants[(position, "ssid")] = ssid
        if genre is not None:
            ref_proc = genre_processor(genre, prompt.shape[1], beams, eos)
            if allowed_sets(ref_proc(last, scores)) != ssid_sets:
                raise RuntimeError(f"{position}: SSID processor and GENRE reference allow different tokens")
            variants[(position, "genre")] = lambda p=ref_proc, last=last: p(last, scores)

        def check(ssid=ssid, reference=reference, position=position):
            if not torch.equal(ssid(), reference):
                raise RuntimeError(f"{position}: the snapshot processor's output drifted from a freshly warmed one")

        after.append(check)
        meta[position] = {
            "depth": depth,
            "fanout_max": max(map(len, ssid_sets)),
            "fanout_mean": float(np.mean([len(x) for x in ssid_sets])),
        }
    return meta, variants, after


# ---------------------------------------------------------------------------------------------- end to end
def tiny_qwen2(seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=MODEL_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 2.0)  # peaked logits: the constraint changes the choice
    return model


def e2e_generate_kwargs(prompt, attention, pad, eos, beams, new_tokens, mode) -> dict[str, Any]:
    """``generate`` arguments shared by the constrained and unconstrained runs.

    ``mode="no-eos"``: neither run stops at EOS (the processor still uses ``eos`` for dead ends), so both
    generate exactly ``new_tokens`` with nothing else in the processor list; ``"min-new-tokens"``: both
    stop at EOS but ``min_new_tokens = max_new_tokens``.
    """
    common = {
        "input_ids": prompt,
        "attention_mask": attention,
        "num_beams": beams,
        "num_return_sequences": beams,
        "do_sample": False,
        "max_new_tokens": new_tokens,
        "pad_token_id": pad,
    }
    if mode == "min-new-tokens":
        common.update(min_new_tokens=new_tokens, eos_token_id=eos)
    else:
        common.update(eos_token_id=None)
    return common


def check_constrained_output(out: torch.Tensor, width: int, trie: TokenTrie, trigger: list[int]) -> int:
    """Raise unless every row opens with the trigger and stays in the trie; return how many close an identifier."""
    complete = 0
    for row in out[:, width:].tolist():
        if row[: len(trigger)] != trigger:
            raise RuntimeError(f"constrained output does not open with the trigger: {row}")
        node = TokenTrie.ROOT
        for tok in row[len(trigger) :]:
            node = trie.child(node, tok)
            if node < 0:
                raise RuntimeError(f"constrained output left the trie: {row}")
            if trie.is_leaf(node):
                complete += 1
                break
    return complete


def measure_e2e(model, tries: dict[int, TokenTrie], trigger, common, eos, beams, repeats) -> dict[int, dict[str, Any]]:
    """Constrained beam search at each size and unconstrained beam search, all interleaved round by round."""
    from transformers import LogitsProcessorList

    if common["eos_token_id"] is None:
        model.generation_config.eos_token_id = None

    def unconstrained():
        with torch.inference_mode():
            return model.generate(**common)

    def constrained(trie):
        proc = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos, trigger=trigger)
        with torch.inference_mode():
            return model.generate(**common, logits_processor=LogitsProcessorList([proc]))

    width = common["input_ids"].shape[1]
    out_u = unconstrained()  # warm-up; its shape is the equal-work reference
    if out_u.shape[1] != width + common["max_new_tokens"]:
        raise RuntimeError(f"unconstrained run stopped early: {tuple(out_u.shape)}")
    complete = {}
    for n, trie in tries.items():
        out_c = constrained(trie)
        if out_c.shape != out_u.shape:
            raise RuntimeError(f"unequal work: constrained {tuple(out_c.shape)} vs unconstrained {tuple(out_u.shape)}")
        complete[n] = check_constrained_output(out_c, width, trie, trigger)
    variants = {("e2e", "unconstrained"): unconstrained}
    variants.update({("e2e", n): (lambda t=trie: constrained(t)) for n, trie in tries.items()})
    samples = interleaved(variants, repeats)
    u = np.array(samples[("e2e", "unconstrained")])
    results = {}
    for n in tries:
        c = np.array(samples[("e2e", n)])
        results[n] = {
            "new_tokens": common["max_new_tokens"],
            "rows": int(out_u.shape[0]),
            "complete_identifiers": complete[n],
            "constrained_s": summary(c.tolist()),
            "unconstrained_s": summary(u.tolist()),
            "ratio_of_medians": float(np.median(c) / np.median(u)),
            "median_paired_ratio": float(np.median(c / u)),
            "ratio_of_minimums": float(c.min() / u.min()),
        }
    return results


# ---------------------------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"), help="Markdown results file")
    p.add_argument("--json", type=Path, default=None, help="raw results (default: results.json beside --out)")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot (default: scaling.png beside --out)")
    p.add_argument("--quick", action="store_true", help="short run: 10k and 100k identifiers, fewer repeats")
    p.add_argument("--sizes", type=int, nargs="+", help="identifier counts (overrides the preset)")
    p.add_argument("--repeats", type=int, help="timed repeats per step variant")
    p.add_argument("--build-repeats", type=int, help="repeats of trie construction (tokenisation: 1 run >= 1M)")
    p.add_argument("--e2e-repeats", type=int, help="timed generate calls per variant")
    p.add_argument(
        "--e2e-sizes", type=int, nargs="*", help="sizes with the end-to-end run (default: smallest, 1M, largest)"
    )
    p.add_argument("--genre-max", type=int, default=1_000_000, help="largest size with the nested-dict reference")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated per generate call")
    p.add_argument("--groups", type=int, default=8, help="inputs per batch")
    p.add_argument("--beams", type=int, default=10, help="beams per input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, the core count)")
    p.add_argument(
        "--tokenizers-parallelism",
        choices=["true", "false"],
        help="set TOKENIZERS_PARALLELISM for the tokenisation (default: as the environment has it)",
    )
    p.add_argument(
        "--e2e-mode",
        choices=["no-eos", "min-new-tokens"],
        default="no-eos",
        help="how both generate runs are made to produce exactly --new-tokens tokens: no EOS stop (default), or\n"
        "min_new_tokens = max_new_tokens (adds transformers' MinNewTokensLength processor to both runs)",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    preset = QUICK if args.quick else FULL
    sizes = sorted(args.sizes or preset["sizes"])
    repeats = args.repeats or preset["repeats"]
    build_repeats = args.build_repeats or preset["build_repeats"]
    e2e_repeats = args.e2e_repeats or preset["e2e_repeats"]
    default_e2e = {sizes[0], sizes[-1], *(n for n in sizes if n == 1_000_000)}
    e2e_sizes = set(default_e2e if args.e2e_sizes is None else args.e2e_sizes)
    if args.tokenizers_parallelism:
        os.environ["TOKENIZERS_PARALLELISM"] = args.tokenizers_parallelism
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": now_utc(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_description(),
        "load_start": load_average(),
        "config": {
            "sizes": sizes,
            "repeats": repeats,
            "build_repeats": build_repeats,
            "e2e_repeats": e2e_repeats,
            "e2e_sizes": sorted(e2e_sizes),
            "genre_max": args.genre_max,
            "rows": args.groups * args.beams,
            "groups": args.groups,
            "beams": args.beams,
            "vocab": MODEL_VOCAB,
            "new_tokens": args.new_tokens,
            "e2e_mode": args.e2e_mode,
            "seed": args.seed,
        },
        "sizes": [],
    }
    tokenizer = load_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt, attention = caption_prompts(tokenizer, args.groups)
    log(f"generating {sizes[-1]:,} identifiers ...")
    gen_s, identifiers = timed(lambda: make_identifiers(sizes[-1], seed=args.seed))
    report["identifier_generation_s"] = gen_s
    report["examples"] = identifiers[:8]
    log("tokenizer floor (Rust encode_batch alone) ...")
    report["tokenizer_floor"] = tokenizer_floor(tokenizer, identifiers[: min(sizes[-1], 100_000)], build_repeats)
    gen = torch.Generator().manual_seed(args.seed)
    scores = torch.randn(args.groups * args.beams, MODEL_VOCAB, generator=gen)
    step_variants: dict[tuple, Callable[[], Any]] = {}
    checks: list[Callable[[], None]] = []
    e2e_tries: dict[int, TokenTrie] = {}
    entries: dict[int, dict[str, Any]] = {}
    for n in sizes:
        log(f"[{n:,}] tokenise + build (load {load_average()})")
        entry: dict[str, Any] = {"n": n, "load": load_average()}
        tok_repeats = build_repeats if n < 1_000_000 else 1
        b = measure_build(tokenizer, identifiers[:n], eos, build_repeats, tok_repeats)
        trie, seqs, trigger = b.pop("trie"), b.pop("seqs"), b.pop("trigger")
        entry["build"] = {k: v for k, v in b.items() if k != "rss0"}
        entry["memory"] = measure_memory(trie, n)
        if n == sizes[0]:
            check_public_build(tokenizer, identifiers[:n], eos, trie)
        log(f"[{n:,}] {entry['memory']['trie_bytes_per_id']:.1f} B/id; reference trie (n <= {args.genre_max:,})")
        genre = None
        if n <= args.genre_max:
            genre, entry["genre_build"] = measure_genre_build([trigger + s for s in seqs], n)
        meta, variants, after = prepare_steps(trie, trigger, seqs, genre, prompt, scores, eos, args.beams, args.seed)
        entry["steps"] = meta
        step_variants.update({(n, *key): fn for key, fn in variants.items()})
        checks += after
        if n in e2e_sizes:
            e2e_tries[n] = trie
        del seqs, genre, trie
        release_memory()
        entries[n] = entry
    log(f"step costs: {len(step_variants)} variants x {repeats} interleaved rounds (load {load_average()})")
    report["load_steps_start"] = load_average()
    samples = interleaved(step_variants, repeats)
    report["load_steps_end"] = load_average()
    for check in checks:
        check()
    for (n, position, variant), values in samples.items():
        entries[n]["steps"][position][variant] = summary(values)
    if e2e_tries:
        log(
            f"generate: unconstrained + constrained at {sorted(e2e_tries)}, {e2e_repeats} rounds "
            f"(load {load_average()})"
        )
        report["load_e2e_start"] = load_average()
        common = e2e_generate_kwargs(prompt, attention, pad, eos, args.beams, args.new_tokens, args.e2e_mode)
        for n, e2e in measure_e2e(
            tiny_qwen2(args.seed), e2e_tries, trigger, common, eos, args.beams, e2e_repeats
        ).items():
            entries[n]["e2e"] = e2e
        report["load_e2e_end"] = load_average()
    report["sizes"] = [entries[n] for n in sizes]
    report["load_end"] = load_average()
    report["runtime_s"] = time.perf_counter() - started
    return report


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    out = args.out
    json_path = args.json or out.with_name("results.json")
    plot_path = args.plot or out.with_name("scaling.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    write_plot(report, plot_path)
    write_results_md(report, out, json_path, plot_path)
    log(f"wrote {out}, {json_path}, {plot_path} in {report['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
