"""The offline demo: the whole SSID pipeline on the bundled mini collection with a tiny random model.

Runs for real, on CPU, with no hub: a tiny Qwen2.5-VL (random weights, the real Qwen2 tokenizer)
or LLaVA-NeXT is built from config, then :class:`swift_ssid.workflows.pipeline.Pipeline` runs ``swift infer``
(stage 1), ``swift-ssid build-index``, ``swift sft``, ``swift-ssid retrieve`` and the R@K report.

What it shows honestly: a random tiny model cannot write usable identifiers, so ``build-index``
reports its answers as invalid and the demo switches to the labelled caption-derived identifier
source. Retrieval quality is that of a ~10M-parameter model trained for a minute; the same
commands with a 7B model are in ``recipes/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from swift_ssid.workflows.pipeline import Pipeline, PipelineConfig, StageError, swift_executable

DEMO_COLLECTION = Path(__file__).resolve().parents[1] / "data" / "demo" / "collection.jsonl"
TEMPLATES = {"qwen2_5_vl": "ssid_qwen2_5_vl", "llava_next": "ssid_llava1_6_vicuna_hf"}


def model_flags(family: str) -> list[str]:
    """The tiny model's swift flags without its stock ``--template`` (the SSID template replaces it)."""
    from swift_ssid.testing.tiny_models import SWIFT_FLAGS

    flags = list(SWIFT_FLAGS[family])
    i = flags.index("--template")
    del flags[i : i + 2]
    return flags


def demo_sft_flags(steps: int) -> list[str]:
    """Full fine-tuning of the tiny random model (LoRA on random weights learns too slowly for a demo)."""
    from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS

    flags = list(SFT_CPU_FLAGS)
    flags[flags.index("--tuner_type") + 1] = "full"
    return [
        *flags,
        *("--max_steps", str(steps), "--learning_rate", "2e-3", "--per_device_train_batch_size", "4"),
        *("--save_steps", str(steps), "--logging_steps", "10", "--warmup_ratio", "0.05", "--seed", "0"),
    ]


def demo_config(work: Path, family: str, model_dir: Path, steps: int = 80, k: int = 10) -> PipelineConfig:
    """The demo's pipeline settings (the end-to-end tests run them with fewer steps).

    Args:
        work: work folder.
        family: a key of :data:`TEMPLATES`.
        model_dir: the tiny model's directory.
        steps: ``swift sft`` steps.
        k: beams per query.

    Returns:
        The :class:`~swift_ssid.workflows.pipeline.PipelineConfig`.
    """
    return PipelineConfig(
        workdir=work,
        collection=DEMO_COLLECTION,
        model=str(model_dir),
        template=TEMPLATES[family],
        model_flags=model_flags(family),
        sft_flags=demo_sft_flags(steps),
        k=k,
        generate_max_new_tokens=48,
        # One OpenMP thread per command unless the user chose otherwise: torch's default pool spins against other
        # processes on a small busy machine (a tiny Qwen2.5-VL sft step: 2.35 s with the default, 1.0-1.6 s with one
        # thread on 2 busy cores; the tiny Qwen2 text model: 1.64 s vs 0.49 s).
        env={"MAX_PIXELS": "12544", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="work folder (re-running resumes finished stages)")
    parser.add_argument("--family", choices=sorted(TEMPLATES), default="qwen2_5_vl", help="tiny model family")
    parser.add_argument("--steps", type=int, default=80, help="swift sft steps (default 80)")
    parser.add_argument("--k", type=int, default=10, help="beams per query (the collection has 12 images)")
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="folder with the real Qwen2 tokenizer.json (qwen2_5_vl family; default: found as `swift-ssid "
        "fetch-assets --where` prints)",
    )
    parser.add_argument(
        "--check", action="store_true", help="resolve every input (collection, images, tokenizer), print them, exit"
    )


def resolve_inputs(
    family: str, tokenizer: str | None = None, with_tokenizer: bool = True
) -> dict[str, str | int | None]:
    """Every input the demo reads, resolved from the installed package and the assets folder.

    Args:
        family: a key of :data:`TEMPLATES`.
        tokenizer: an explicit Qwen2 tokenizer folder, or None to look it up.
        with_tokenizer: False skips the tokenizer (the tiny model is already built).

    Returns:
        ``collection``, ``images`` (count), ``prompt``, ``tokenizer`` (None for families that train their own)
        and the ``swift`` executable.

    Raises:
        FileNotFoundError, ValueError: an input is missing; the one-line message names it and the fix.
    """
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.prompt import PROMPT_RESOURCE, load_prompt
    from swift_ssid.testing.assets import qwen2_tokenizer_dir

    items = load_collection(DEMO_COLLECTION)  # checks that every image exists
    load_prompt()
    tokenizer_dir = qwen2_tokenizer_dir(tokenizer) if family == "qwen2_5_vl" and with_tokenizer else None
    return {
        "collection": str(DEMO_COLLECTION),
        "images": len(items),
        "prompt": str(DEMO_COLLECTION.parents[1] / PROMPT_RESOURCE),
        "tokenizer": None if tokenizer_dir is None else str(tokenizer_dir),
        "swift": swift_executable(),
    }


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from swift_ssid.testing.tiny_models import BUILDERS

    start = time.perf_counter()
    work = Path(args.out).resolve()
    model_dir = work / f"tiny_{args.family}"
    needs_model = not (model_dir / "config.json").exists()
    try:
        inputs = resolve_inputs(args.family, args.tokenizer, with_tokenizer=needs_model or args.check)
    except (OSError, ValueError) as e:
        print(f"swift-ssid demo: error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(json.dumps(inputs, indent=2))
        return 0
    if needs_model:
        logging.info("building a tiny random %s from config in %s", args.family, model_dir)
        extra = {"tokenizer_dir": inputs["tokenizer"]} if inputs["tokenizer"] else {}
        try:
            BUILDERS[args.family](model_dir, **extra)
        except ValueError as e:  # e.g. --tokenizer names a tokenizer that is not Qwen2's
            print(f"swift-ssid demo: error: {e}", file=sys.stderr)
            return 2
    try:
        summary = Pipeline(demo_config(work, args.family, model_dir, args.steps, args.k)).run_all()
    except StageError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    m = summary["metrics"]
    print()
    print("=" * 72)
    print(f"SSID demo ({args.family}, tiny random model, {args.steps} sft steps, K={args.k})")
    print(f"identifier source : {summary['identifier_source']}")
    gen = summary["stages"].get("index", {}).get("model_answers")
    if gen:
        print(f"model answers     : {gen['valid']} of {gen['images']} usable as identifiers")
    print(f"queries           : {m.get('n_queries')} test captions (4 test images among 12 memorised)")
    print(f"image-level R@1/5/10: {m['R@1']:.3f} / {m['R@5']:.3f} / {m['R@10']:.3f}")
    print(f"report            : {summary['report']}")
    print(f"wall time         : {time.perf_counter() - start:.0f} s")
    print("=" * 72)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swift_ssid.workflows.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
