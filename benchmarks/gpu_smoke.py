"""CUDA smoke test of the SSID decoding path on a tiny random Qwen2.5-VL in bf16 (run by ``benchmarks/gpu_smoke.sh``).

Four checks, each recorded (pass/fail, numbers) in one JSON file; later checks run even when earlier ones fail:

1. ``processor``: the processor's fixed-width path (the one it takes on accelerators) allows exactly the token sets
   of the ragged CPU path, at several positions of a beam search over a 20,000-identifier trie (real Qwen2
   tokenizer, 151,936-wide bf16 scores, rows permuted between steps as beam search does).
2. ``step_cost``: median per-step time of the processor on the device against the floor every processor that
   returns a new tensor pays (``scores.clone()``, ``scores.masked_fill``), with device synchronisation.
3. ``generate``: constrained beam search (K=10) with ``model.generate`` on the device in bf16: every output is an
   identifier of the trie; seconds per call constrained vs unconstrained (same number of new tokens).
4. ``retrieve``: ``swift-ssid retrieve --template ssid_qwen2_5_vl --torch-dtype bfloat16`` (needs ms-swift) on the
   tiny model saved to disk: every ranked identifier is in the index, K per query.

Usage: ``python benchmarks/gpu_smoke.py --out DIR [--work DIR] [--device cuda] [--dtype bfloat16] [--quick]``
(``--device cpu --quick`` checks the script itself on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_constrained import beam_calls, check_constrained_output  # noqa: E402

from swift_ssid.decoding.constrained import SSIDConstrainedLogitsProcessor  # noqa: E402
from swift_ssid.decoding.trie import TokenTrie, build_identifier_trie  # noqa: E402
from swift_ssid.testing.tiny_models import DEMO_DIR, QWEN2_SPECIAL_IDS, build_tiny_qwen2_5_vl  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    """Milliseconds per call (device synchronised around each), after two warm-up calls."""
    for _ in range(2):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - start) * 1000)
    return out


def identifiers(n: int, seed: int = 0) -> list[str]:
    """``n`` unique SSID-style identifiers from the bundled word list (2-3 segments of 1-3 words)."""
    words = [w for w in (DEMO_DIR / "tokenizer_words.txt").read_text(encoding="utf-8").split() if w.isalpha()]
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        segs = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(rng.randint(2, 3))]
        out[" - ".join(segs).lower()] = None
    return list(out)


def check_processor(trie: TokenTrie, eos: int, device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    """Fixed-width path on ``device`` vs ragged path on the CPU: identical allowed sets at every step."""
    beams, groups = 10, 8
    rng = random.Random(1)
    seqs = []
    for _ in range(groups * beams):  # walk random root-to-leaf paths (trigger first)
        path, node = list(trie.header.trigger), TokenTrie.ROOT
        while True:
            children = trie.children(node).tolist()
            if not children:
                break
            tok = rng.choice(children)
            path.append(int(tok))
            node = trie.child(node, int(tok))
            if trie.is_leaf(node):
                break
        seqs.append(path + [eos] * 8)
    steps = min(len(s) for s in seqs) - 1
    prompt = torch.randint(0, 1000, (groups, 12))
    calls = beam_calls(prompt, seqs, beams, steps, seed=2)
    vocab = trie.vocab_size
    fixed = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos)
    fixed._fixed_width = True
    ragged = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos)
    ragged._fixed_width = False
    mismatches = 0
    gen = torch.Generator().manual_seed(3)
    for ids in calls:
        scores = torch.randn(ids.shape[0], vocab, generator=gen)
        a = fixed(ids.to(device), scores.to(device=device, dtype=dtype)).isinf().cpu()
        b = ragged(ids, scores).isinf()
        mismatches += int((a != b).any(dim=1).sum())
    return {"ok": mismatches == 0, "steps": len(calls), "rows": groups * beams, "mismatched_rows": mismatches}


def step_cost(trie: TokenTrie, eos: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """Median ms of one processor step (mid-span) vs the clone / masked_fill floors, on ``device``."""
    beams, groups = 10, 8
    rows = beams * groups
    trigger = list(trie.header.trigger)
    node, path = TokenTrie.ROOT, []
    for _ in range(2):  # two tokens into the span along the first children
        children = trie.children(node)
        tok = int(children[0])
        path.append(tok)
        node = trie.child(node, tok)
    prompt = torch.randint(0, 1000, (rows, 12))
    prefix = torch.tensor(trigger + path).repeat(rows, 1)
    scores = torch.randn(rows, trie.vocab_size, device=device, dtype=dtype)
    mask = torch.zeros(rows, trie.vocab_size, dtype=torch.bool, device=device)
    states = [torch.cat([prompt, prefix[:, :i]], dim=1).to(device) for i in range(prefix.shape[1] + 1)]

    def proc_step():
        proc = SSIDConstrainedLogitsProcessor(trie, num_beams=beams, eos_token_id=eos)
        for ids in states:  # warm the state along the path; time covers the whole walk
            proc(ids, scores)

    walk = timed(proc_step, device, repeats)
    clone = timed(lambda: scores.clone(), device, repeats)
    fill = timed(lambda: scores.masked_fill(mask, float("-inf")), device, repeats)
    per_step = statistics.median(walk) / len(states)
    floor = min(statistics.median(clone), statistics.median(fill))
    return {
        "ok": True,
        "rows": rows,
        "vocab": trie.vocab_size,
        "processor_ms_per_step": round(per_step, 4),
        "clone_ms": round(statistics.median(clone), 4),
        "masked_fill_ms": round(statistics.median(fill), 4),
        "step_over_floor": round(per_step / floor, 2),
    }


def check_generate(model, tokenizer, trie, eos: int, device, repeats: int, new_tokens: int = 16) -> dict:
    """Constrained vs unconstrained beam search (K=10, 4 prompts) with ``model.generate`` on the device."""
    from transformers import LogitsProcessorList

    prompts = ["A dog runs in the park.", "Two men on a street.", "A girl in a red dress.", "A cat on a sofa."]
    texts = [f"<|im_start|>user\nWhich image matches this caption? {p}<|im_end|>\n<|im_start|>assistant\n"
             for p in prompts]  # fmt: skip
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    common = {**batch, "num_beams": 10, "num_return_sequences": 10, "do_sample": False, "max_new_tokens": new_tokens,
              "min_new_tokens": new_tokens, "pad_token_id": QWEN2_SPECIAL_IDS["<|endoftext|>"]}  # fmt: skip

    def run(constrained: bool):
        kwargs = dict(common)
        if constrained:
            proc = SSIDConstrainedLogitsProcessor(trie, num_beams=10, eos_token_id=eos)
            kwargs["logits_processor"] = LogitsProcessorList([proc])
        with torch.inference_mode():
            return model.generate(**kwargs)

    out = run(True)
    width = batch["input_ids"].shape[1]
    complete = check_constrained_output(out.cpu(), width, trie, list(trie.header.trigger))
    c = timed(lambda: run(True), device, repeats)
    u = timed(lambda: run(False), device, repeats)
    return {
        "ok": True,
        "rows": int(out.shape[0]),
        "complete_identifiers": complete,
        "constrained_ms": round(statistics.median(c), 1),
        "unconstrained_ms": round(statistics.median(u), 1),
        "ratio": round(statistics.median(c) / statistics.median(u), 3),
    }


def check_retrieve(model_dir: Path, work: Path, dtype: str) -> dict:
    """``swift-ssid retrieve`` with the SSID Qwen2.5-VL template in ``dtype`` on the device (needs ms-swift)."""
    try:
        import swift  # noqa: F401
    except ImportError as e:
        return {"ok": None, "skipped": f"ms-swift not importable here: {e}"}
    from swift_ssid.core.caption_identifiers import write_caption_results
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.index import IdentifierIndex, build_index
    from swift_ssid.integration.datasets import query_rows

    items = load_collection(DEMO_DIR / "collection.jsonl")
    write_caption_results([(i.image, i.captions[0]) for i in items], work / "results.jsonl")
    build_index(work / "results.jsonl", work / "index")
    queries = work / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in query_rows(items)[:8]), encoding="utf-8")
    out = work / "run.jsonl"
    cmd = [sys.executable, "-m", "swift_ssid.cli", "retrieve", "--model", str(model_dir), "--model_type", "qwen2_5_vl"]
    cmd += ["--template", "ssid_qwen2_5_vl", "--index", str(work / "index"), "--queries", str(queries), "--k", "5"]
    cmd += ["--batch-size", "4", "--max-new-tokens", "24", "--torch-dtype", dtype, "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"ok": False, "stderr_tail": proc.stderr[-3000:]}
    index = IdentifierIndex.load(work / "index")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    bad = [r["query_id"] for r in rows if len(r["identifiers"]) != 5 or any(i not in index for i in r["identifiers"])]
    rate = [line for line in proc.stdout.splitlines() if line.startswith("retrieved")]
    return {"ok": not bad and len(rows) == 8, "rows": len(rows), "bad_rows": bad, "wall_s": round(wall, 1),
            "cli": rate[-1] if rate else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_smoke.json (small files only)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for the model and index (default: tmp)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--quick", action="store_true", help="fewer identifiers and repeats (script check)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
    }
    try:
        import transformers

        report["transformers"] = transformers.__version__
    except ImportError:
        report["transformers"] = None
    print(json.dumps(report), flush=True)

    def record(name: str, fn) -> None:
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - a smoke run records every failure and goes on
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        report[name] = result
        print(name, json.dumps({k: v for k, v in result.items() if k != "traceback"}), flush=True)
        (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "tiny-qwen2_5_vl"
    model = tokenizer = trie = None

    def setup() -> dict:
        nonlocal model, tokenizer, trie
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        build_tiny_qwen2_5_vl(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
        ids = identifiers(2000 if args.quick else 20000)
        start = time.perf_counter()
        trie = build_identifier_trie(tokenizer, ids, eos_token_id=QWEN2_SPECIAL_IDS["<|im_end|>"], vocab_size=151936)
        return {"ok": True, "identifiers": len(ids), "trie_build_s": round(time.perf_counter() - start, 2)}

    record("setup", setup)
    eos = QWEN2_SPECIAL_IDS["<|im_end|>"]
    repeats = 5 if args.quick else 30
    if trie is not None:
        record("processor", lambda: check_processor(trie, eos, device, dtype, args.quick))
        record("step_cost", lambda: step_cost(trie, eos, device, dtype, repeats))
        record("generate", lambda: check_generate(model, tokenizer, trie, eos, device, 2 if args.quick else 5))
    record("retrieve", lambda: check_retrieve(model_dir, work, args.dtype))
    checks = [report[k].get("ok") for k in ("setup", "processor", "step_cost", "generate", "retrieve") if k in report]
    failed = [c for c in checks if c is False]
    print(f"gpu smoke: {len(checks) - len(failed)} of {len(checks)} checks passed or skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
