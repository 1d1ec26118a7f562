"""``swift-ssid protocol ablation|zeroshot|multilingual|identifiers``: the paper's protocols, end to end.

Each protocol runs ``swift-ssid retrieve`` once per setting (and, for zero-shot, ``swift sft`` once per N),
labels every run row's ``setting``, and writes ``table.md`` / ``table.csv`` in the paper's layout; see
:mod:`swift_ssid.workflows.protocols`. Run from the repository root when a recipe is involved (its plugin paths are
relative).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from swift_ssid.core.errors import UserError, check_output_dir
from swift_ssid.workflows.kinds import add_kind_arguments, kind_options
from swift_ssid.workflows.run import DTYPES


def _shared(parser: argparse.ArgumentParser, index: bool = True) -> None:
    parser.add_argument("--model", required=True, help="base model id or local directory")
    parser.add_argument("--model_type", "--model-type", default=None, help="ms-swift model type (local dirs)")
    parser.add_argument(
        "--template",
        required=True,
        help="SSID template: ssid_<ms-swift template>, e.g. ssid_qwen2_5_vl, ssid_llava1_6_vicuna_hf",
    )
    parser.add_argument("--torch-dtype", "--torch_dtype", choices=DTYPES, default=None, help="default: the model's")
    if index:
        parser.add_argument("--index", required=True, metavar="DIR", help="identifier index (swift-ssid build-index)")
    parser.add_argument("--out", required=True, metavar="DIR", help="runs, logs and tables go here (resumable)")
    parser.add_argument("--k", type=int, default=10, help="beams = identifiers per query (default 10)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=8, help="queries per engine call")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=64, help="tokens per response")


def _language_file(text: str) -> tuple[str, str]:
    language, sep, path = text.partition("=")
    if not sep or not language or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not LANGUAGE=FILE, e.g. zh=queries_zh.jsonl")
    return language, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)

    p = sub.add_parser("ablation", help="reason in training+inference / training only / neither (Table III)")
    _shared(p)
    p.add_argument("--queries", required=True, metavar="Q.jsonl", help="test queries (ssid-query rows)")
    p.add_argument("--reason-adapter", metavar="CKPT", help="checkpoint of recipes/train_*.yaml (reason target)")
    p.add_argument("--noreason-adapter", metavar="CKPT", help="checkpoint of recipes/train_*_noreason.yaml")
    p.add_argument(
        "--settings",
        nargs="+",
        default=["train+infer", "train-only", "none"],
        choices=["train+infer", "train-only", "none"],
        help="which rows to run (default: all three)",
    )

    p = sub.add_parser("zeroshot", help="R@K vs N training images, test images never memorised (Fig. 3)")
    _shared(p)
    p.add_argument("--queries", required=True, metavar="Q.jsonl", help="test queries (ssid-query rows)")
    p.add_argument("--ns", type=int, nargs="+", required=True, metavar="N", help="training-set sizes, e.g. 0 1000")
    p.add_argument(
        "--recipe",
        default="recipes/train_qwen2_5_vl_zeroshot.yaml",
        help="swift sft recipe (default: %(default)s); --model/--template/--model_type/--torch_dtype override it",
    )
    p.add_argument("--collection", required=True, help="the collection for training (Karpathy JSON or .jsonl)")
    p.add_argument(
        "--image-root",
        "--image_root",
        default=None,
        help="the folder image paths are relative to (default: the collection's)",
    )
    p.add_argument(
        "--sft-args", "--sft_args", default="", help='extra swift sft flags as one string, e.g. "--max_steps 500"'
    )

    p = sub.add_parser("multilingual", help="query files in several languages, one English-trained model (Table IV)")
    _shared(p)
    p.add_argument(
        "--queries",
        required=True,
        nargs="+",
        type=_language_file,
        metavar="LANG=Q.jsonl",
        help="one queries file per language (same query_id / gold_images), e.g. en=q_en.jsonl zh=q_zh.jsonl",
    )
    p.add_argument("--adapters", metavar="CKPT", default=None, help="the fine-tuned checkpoint (LoRA or full)")

    from swift_ssid.core.kinds import BUILDABLE
    from swift_ssid.workflows.protocols import IDENTIFIER_KINDS

    p = sub.add_parser("identifiers", help="GRACE's identifier kinds vs SSID: index, train, retrieve (Tables I, II)")
    _shared(p, index=False)
    p.add_argument("--queries", required=True, metavar="Q.jsonl", help="test queries (ssid-query rows)")
    p.add_argument("--collection", required=True, help="the collection (Karpathy JSON or .jsonl)")
    p.add_argument("--image-root", "--image_root", default=None, help="the folder image paths are relative to")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=BUILDABLE,
        default=list(IDENTIFIER_KINDS),
        help="kinds to compare (default: %(default)s)",
    )
    p.add_argument(
        "--ssid-index", metavar="DIR", help="also train and retrieve the SSID index (swift-ssid build-index)"
    )
    p.add_argument(
        "--recipe",
        default="recipes/train_qwen2_5_vl_kind_noreason.yaml",
        help="swift sft recipe, no-reason targets (default: %(default)s); atomic adds its new tokens itself",
    )
    p.add_argument("--sft-args", "--sft_args", default="", help="extra swift sft flags as one string")
    add_kind_arguments(p)
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer for the token statistics (default: --model if local)")
    p.add_argument("--model-label", default="this model", help="the model named in Table II")
    _add_text(sub)
    for name, protocol in sub.choices.items():  # errors name the protocol: `swift-ssid protocol ablation: error: ...`
        protocol.set_defaults(command_name=f"protocol {name}")


def _add_text(sub: argparse._SubParsersAction) -> None:
    """``swift-ssid protocol text``: the text-side protocol on real captions (:mod:`.protocols.text`)."""
    from swift_ssid.workflows.protocols.text import DEFAULT_CAPTIONS, ROWS, TextProtocolOptions

    d = TextProtocolOptions(out=Path("."), model="")
    p = sub.add_parser("text", help="kinds vs SSID vs BM25/dense on real captions, text side (Table I in miniature)")
    p.add_argument("--out", required=True, metavar="DIR", help="everything goes here (resumable per row)")
    p.add_argument("--captions", default=str(DEFAULT_CAPTIONS), help="5 captions per image, image order")
    p.add_argument("--images", type=int, default=d.images, help="the first N images (default %(default)s)")
    p.add_argument("--test-share", type=float, default=d.test_share, help="share of test images (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="split, training and bootstrap seed")
    p.add_argument("--model", default=None, help="model folder (default: the real LM asset, fetch-assets --real-lm)")
    p.add_argument("--model_type", "--model-type", default=d.model_type, help="ms-swift model type (%(default)s)")
    p.add_argument("--template", default=d.template, help="SSID text template (%(default)s)")
    p.add_argument("--torch-dtype", "--torch_dtype", choices=DTYPES, default=d.torch_dtype)
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to run (default: all)")
    p.add_argument("--tuner", choices=("lora", "full"), default=d.tuner, help="fine-tuning (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="steps per trained row (%(default)s)")
    p.add_argument("--learning-rate", "--lr", type=float, default=d.learning_rate, help="(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch (%(default)s)")
    p.add_argument("--max-length", type=int, default=d.max_length, help="training tokens per row (%(default)s)")
    p.add_argument("--lora-rank", type=int, default=d.lora_rank, help="(default %(default)s)")
    p.add_argument("--memorise-repeat", type=int, default=d.memorise_repeat, help="memorise rows x N (%(default)s)")
    p.add_argument(
        "--no-pseudo-queries",
        dest="pseudo_queries",
        action="store_false",
        help="do not train description-as-query -> identifier (DSI-QG's pseudo-queries)",
    )
    p.add_argument("--sft-args", "--sft_args", default="", help="extra swift sft flags as one string")
    p.add_argument("--k", type=int, default=d.k, help="beams = identifiers per query (%(default)s)")
    p.add_argument("--retrieve-batch-size", type=int, default=d.retrieve_batch_size, help="queries per engine call")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="retrieval budget (%(default)s)")
    p.add_argument("--min-usable", type=float, default=d.min_usable, help="ssid: fallback below this usable share")
    p.add_argument(
        "--stage1-probe",
        type=int,
        default=d.stage1_probe,
        metavar="N",
        help="ssid: stage 1 on the first N descriptions first; fallback at once when the upper 95%% bound of their "
        "usable share is below --min-usable (default %(default)s; 0: no probe)",
    )
    p.add_argument("--fuse", nargs="+", default=list(d.fuse), choices=ROWS[:-1], help="rows fused by RRF")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples (%(default)s)")


def _run_text(args: argparse.Namespace) -> int:
    from swift_ssid.workflows.protocols.text import TextProtocolOptions, run_text_protocol

    model, label = args.model, "this model"
    if model is None:
        from swift_ssid.testing.assets import REAL_LM_LABEL, real_lm_dir

        model, label = str(real_lm_dir()), REAL_LM_LABEL
    check_output_dir(args.out, "--out")
    try:
        options = TextProtocolOptions(
            out=Path(args.out),
            model=model,
            captions=Path(args.captions),
            images=args.images,
            test_share=args.test_share,
            seed=args.seed,
            model_type=args.model_type,
            template=args.template,
            torch_dtype=args.torch_dtype,
            rows=tuple(args.rows),
            tuner=args.tuner,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            max_length=args.max_length,
            lora_rank=args.lora_rank,
            memorise_repeat=args.memorise_repeat,
            pseudo_queries=args.pseudo_queries,
            sft_args=tuple(shlex.split(args.sft_args)),
            k=args.k,
            retrieve_batch_size=args.retrieve_batch_size,
            max_new_tokens=args.max_new_tokens,
            min_usable=args.min_usable,
            stage1_probe=args.stage1_probe,
            fuse=tuple(args.fuse),
            bootstrap=args.bootstrap,
            model_label=label,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    results = run_text_protocol(options)
    print(results["markdown"], end="")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.protocol == "text":
        return _run_text(args)
    from swift_ssid.workflows.protocols import (
        RetrieveOptions,
        run_ablation,
        run_identifiers,
        run_multilingual,
        run_zeroshot,
    )

    opts = RetrieveOptions(
        model=args.model,
        template=args.template,
        index=Path(getattr(args, "index", None) or args.out),
        model_type=args.model_type,
        torch_dtype=args.torch_dtype,
        k=args.k,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    check_output_dir(args.out, "--out")
    if args.protocol == "ablation":
        result = run_ablation(
            opts, args.queries, args.out, args.reason_adapter, args.noreason_adapter, settings=args.settings
        )
    elif args.protocol == "zeroshot":
        result = run_zeroshot(
            opts,
            args.queries,
            args.out,
            args.ns,
            args.recipe,
            args.collection,
            args.image_root,
            shlex.split(args.sft_args),
        )
    elif args.protocol == "identifiers":
        result = run_identifiers(
            opts,
            args.queries,
            args.out,
            args.collection,
            args.recipe,
            kinds=args.kinds,
            image_root=args.image_root,
            kind_options=kind_options(args),
            ssid_index=args.ssid_index,
            sft_args=shlex.split(args.sft_args),
            tokenizer=args.tokenizer,
            model_label=args.model_label,
        )
    else:
        files = dict(args.queries)
        if len(files) != len(args.queries):
            raise UserError(f"--queries names a language twice: {[lang for lang, _ in args.queries]}")
        result = run_multilingual(opts, files, args.out, args.adapters)
    print(result.markdown, end="")
    for label, path in result.run_files.items():
        print(f"run {label}: {path}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0
