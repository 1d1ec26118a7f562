"""``swift-ssid add INDEX --collection NEW.jsonl``: identifiers for the new images only, as a new index version.

The new images get identifiers of the index's own kind (see :mod:`swift_ssid.workflows.update`); the existing
identifiers never change, so a trained model still retrieves the old images. Retrieval can return a new image once
the model has learnt its identifier (continued training); ``swift-ssid index versions INDEX`` lists the versions.

Examples:
    swift-ssid add runs/demo/index_numeric --collection new_photos.jsonl
    swift-ssid add runs/demo/index --collection new_photos.jsonl --results new_answers.jsonl     # ssid, stage 1 done
    swift-ssid add runs/demo/index --collection new_photos.jsonl --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --template ssid_qwen2_5_vl                                                                # ssid, runs stage 1
"""

from __future__ import annotations

import argparse

from swift_ssid.workflows.run import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX", help="index folder to add to")
    parser.add_argument("--collection", required=True, help="the new images: collection .jsonl (or Karpathy .json)")
    parser.add_argument("--image-root", "--image_root", default=None, help="folder the image paths are relative to")
    ssid = parser.add_argument_group("ssid indexes (stage 1 on the new images)")
    ssid.add_argument("--results", metavar="FILE", help="`swift infer` answers for the new images (stage 1 done)")
    add_model_arguments(
        ssid,
        model_help="stage-1 model to run on the new images (the one the index was generated with)",
        template_help="its SSID template, e.g. ssid_qwen2_5_vl",
        dtype_help="torch dtype of the stage-1 model",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from swift_ssid.core.errors import UserError
    from swift_ssid.workflows.update import add_images, swift_stage1

    stage1 = None
    if args.model:
        if not args.template:
            raise UserError(f"--model {args.model}: pass its SSID --template too (e.g. ssid_qwen2_5_vl)")
        flags = [*(["--model_type", args.model_type] if args.model_type else [])]
        flags += ["--torch_dtype", args.torch_dtype] if args.torch_dtype else []
        stage1 = swift_stage1(args.model, args.template, Path(args.index), flags)
    result = add_images(args.index, args.collection, image_root=args.image_root, results=args.results, stage1=stage1)
    print(
        f"{args.index}: added {len(result.images)} image(s) ({result.kind}) -> version {result.version} "
        f"(from {result.from_version}), {result.total_images} images"
    )
    for image, identifier in list(zip(result.images, result.identifiers, strict=True))[:10]:
        print(f"  {identifier!s:<40} {image}")
    if len(result.images) > 10:
        print(f"  ... and {len(result.images) - 10} more")
    return 0
