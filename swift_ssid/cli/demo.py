"""``swift-ssid demo``: ``swift-ssid run`` on the bundled mini collection (12 photos, 8 train / 4 test).

Without ``--model`` it builds a tiny random model from config and runs everything offline on CPU
(:mod:`swift_ssid.workflows.demo`). With ``--model DIR_OR_ID --template NAME`` it runs the same demo, with
the same report, on a real checkpoint (a GPU is advisable), with LoRA.

The result block gives image-level R@1/5/10 twice, each beside the chance level (K / indexed images): on
the training captions of memorised images (the memorisation check: training and constrained decoding
work when these come back) and on the held-out test captions (a tiny random model cannot generalise to
unseen captions, so near chance is expected there).
"""

from __future__ import annotations

import argparse
import json
import logging

from swift_ssid.core.errors import UserError, check_output_dir
from swift_ssid.workflows.demo import (
    DEFAULT_FAMILY,
    DEMO_COLLECTION,
    DEMO_STEPS,
    TEMPLATES,
    demo_config,
    resolve_inputs,
)
from swift_ssid.workflows.run import DEFAULTS, add_model_arguments, pipeline_config, run_pipeline

REAL_MODEL_EPOCHS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo arguments to ``parser``."""
    parser.add_argument("--out", default="demo_out", help="work folder (re-running resumes finished stages)")
    parser.add_argument(
        "--family",
        choices=sorted(TEMPLATES),
        default=DEFAULT_FAMILY,
        help=f"tiny model family (default {DEFAULT_FAMILY})",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"swift sft steps of the tiny model (default {DEMO_STEPS})"
    )
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
    real = parser.add_argument_group("a real checkpoint instead of the tiny random model")
    add_model_arguments(
        real,
        model_help="model folder or hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct)",
        template_help="its SSID template (e.g. ssid_qwen2_5_vl); required with --model",
        dtype_help="e.g. bfloat16",
    )
    real.add_argument(
        "--epochs", type=float, default=REAL_MODEL_EPOCHS, help=f"LoRA epochs (default {REAL_MODEL_EPOCHS})"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    work = check_output_dir(args.out, "--out").resolve()
    if args.model:
        if not args.template:
            raise UserError("--model needs --template (e.g. ssid_qwen2_5_vl)")
        settings = {**DEFAULTS, "collection": str(DEMO_COLLECTION), "out": str(work), "k": args.k}
        settings.update(model=args.model, template=args.template, model_type=args.model_type)
        settings.update(torch_dtype=args.torch_dtype, epochs=args.epochs, memorisation_images=12)
        config = pipeline_config(settings)
        print(run_pipeline(config, f"SSID demo ({args.model}, LoRA {args.epochs:g} epochs, K={args.k})"))
        return 0
    from swift_ssid.testing.tiny_models import BUILDERS

    model_dir = work / f"tiny_{args.family}"
    needs_model = not (model_dir / "config.json").exists()
    inputs = resolve_inputs(args.family, args.tokenizer, with_tokenizer=needs_model or args.check)
    if args.check:
        print(json.dumps(inputs, indent=2))
        return 0
    if needs_model:
        logging.info("building a tiny random %s from config in %s", args.family, model_dir)
        extra = {"tokenizer_dir": inputs["tokenizer"]} if inputs["tokenizer"] else {}
        BUILDERS[args.family](model_dir, **extra)  # ValueError: e.g. --tokenizer is not Qwen2's
    steps = args.steps or DEMO_STEPS
    config = demo_config(work, args.family, model_dir, steps, args.k)
    print(run_pipeline(config, f"SSID demo ({args.family}, tiny random model, {steps} sft steps, K={args.k})"))
    print(
        "The memorisation check shows training and trie-constrained decoding working; the held-out result of a "
        "tiny random model is expected near chance (it cannot generalise to unseen captions: that needs a real "
        "MLLM, see docs/own-collection.md)."
    )
    return 0
