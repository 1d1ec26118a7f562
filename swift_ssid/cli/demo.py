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
    REAL_LM_FAMILY,
    TEMPLATES,
    default_steps,
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
        help=f"tiny model family (default {DEFAULT_FAMILY}); {REAL_LM_FAMILY}: the real SmolLM2-135M-Instruct "
        "behind a tiny random vision tower (real LM, random vision; needs `swift-ssid fetch-assets --real-lm`)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"swift sft steps of the tiny model (default {DEMO_STEPS}; {default_steps(REAL_LM_FAMILY)} for "
        f"{REAL_LM_FAMILY})",
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

    real_lm = args.family == REAL_LM_FAMILY
    model_dir = work / (args.family if real_lm else f"tiny_{args.family}")
    needs_model = not (model_dir / "config.json").exists()
    inputs = resolve_inputs(args.family, args.tokenizer, with_tokenizer=needs_model or args.check)
    if args.check:
        print(json.dumps(inputs, indent=2))
        return 0
    if needs_model:
        what = "real LM, random vision" if real_lm else "tiny random model"
        logging.info("building %s (%s) in %s", args.family, what, model_dir)
        extra = {"tokenizer_dir": inputs["tokenizer"]} if inputs["tokenizer"] else {}
        if inputs.get("real_lm"):
            extra = {"lm_dir": inputs["real_lm"]}
        BUILDERS[args.family](model_dir, **extra)  # ValueError: e.g. --tokenizer is not Qwen2's
    steps = args.steps or default_steps(args.family)
    config = demo_config(work, args.family, model_dir, steps, args.k)
    if real_lm:
        label = "real LM, random vision: SmolLM2-135M-Instruct, 4-bit weights dequantised, tiny random CLIP tower"
        print(run_pipeline(config, f"SSID demo ({args.family}: {label}; {steps} sft steps, K={args.k})"))
        print(
            "Real LM, random vision: the language model is pretrained, the vision tower random, so images are "
            "memorised as arbitrary inputs and any held-out result above chance comes from the language side "
            "(test captions matched to the identifiers the real LM learned for the test images)."
        )
        return 0
    print(run_pipeline(config, f"SSID demo ({args.family}, tiny random model, {steps} sft steps, K={args.k})"))
    print(
        "The memorisation check shows training and trie-constrained decoding working; the held-out result of a "
        "tiny random model is expected near chance (it cannot generalise to unseen captions: that needs a real "
        "MLLM, see docs/own-collection.md)."
    )
    return 0
