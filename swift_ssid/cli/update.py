"""``swift-ssid update``: continue training from a checkpoint on the added images, with a replay of old ones.

After ``swift-ssid add INDEX --collection NEW.jsonl``, this trains the new images' memorise and retrieve pairs plus
``--replay-ratio`` x as many pairs of the images trained before (``--old-collection``; images removed from the index
are never replayed), starting from the checkpoint's weights with a fresh optimizer (``swift sft
--resume_from_checkpoint CKPT --resume_only_model true``), instead of training from scratch.

Example:
    swift-ssid update --model Qwen/Qwen2.5-VL-7B-Instruct --template ssid_qwen2_5_vl \\
        --checkpoint runs/demo/sft/checkpoint-300 --index runs/demo/index \\
        --collection new_photos.jsonl --old-collection photos.jsonl --out runs/demo/sft_update --max-steps 100
"""

from __future__ import annotations

import argparse

from swift_ssid.workflows.run import DEFAULTS, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(
        parser,
        model_help="the base model the checkpoint was trained from",
        template_help="its SSID template, e.g. ssid_qwen2_5_vl",
        dtype_help="torch dtype to load the model in",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint to continue from (LoRA adapter or full)")
    parser.add_argument("--index", required=True, metavar="DIR", help="the index, after `swift-ssid add`")
    parser.add_argument("--collection", required=True, help="the added images (the collection given to add)")
    parser.add_argument("--old-collection", help="the images trained before, for the replay")
    parser.add_argument("--image-root", "--image_root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder of the continued training")
    parser.add_argument(
        "--replay-ratio", type=float, default=None, help="old pairs replayed per new pair (default 2.0; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the replay sample")
    parser.add_argument("--tuner", default=DEFAULTS["tuner"], help="lora (default) or full, as the checkpoint was")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps (default: --epochs)")
    parser.add_argument("--epochs", type=float, default=DEFAULTS["epochs"], help="epochs over the update rows")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--sft-args", default="", help="further `swift sft` flags, quoted")


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.errors import UserError
    from swift_ssid.core.kinds import indexed_items
    from swift_ssid.workflows.run import model_flags, sft_flags
    from swift_ssid.workflows.update import DEFAULT_REPLAY_RATIO, continue_training

    if not (args.model and args.template):
        raise UserError("pass --model (the base model of the checkpoint) and its SSID --template")
    ratio = DEFAULT_REPLAY_RATIO if args.replay_ratio is None else args.replay_ratio
    if ratio > 0 and not args.old_collection:
        raise UserError(f"--replay-ratio {ratio} replays old pairs: pass --old-collection (or --replay-ratio 0)")
    new = indexed_items(load_collection(args.collection, args.image_root))
    old = indexed_items(load_collection(args.old_collection, args.image_root)) if args.old_collection else []
    settings = {**DEFAULTS, "model_type": args.model_type, "torch_dtype": args.torch_dtype, "tuner": args.tuner}
    settings.update(
        max_steps=args.max_steps, epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size
    )
    settings["sft_args"] = args.sft_args
    flags = [*model_flags(settings), *sft_flags(settings)]
    result = continue_training(
        model=args.model,
        template=args.template,
        checkpoint=args.checkpoint,
        index_dir=args.index,
        new=new,
        old=old,
        output_dir=args.out,
        replay_ratio=ratio,
        seed=args.seed,
        sft_flags=flags,
    )
    print(
        f"continued training: {result['new_rows']} new + {result['replay_rows']} replayed rows in "
        f"{result['seconds']} s -> {result['checkpoint']}"
    )
    return 0
