"""``swift-ssid remove INDEX --images FILE``: a new index version without those images.

The trie is built from the index, so from the new version on retrieval can never return a removed image (no
retraining); the other images keep their identifiers. ``FILE`` lists one image a line, as ``index.jsonl`` stores
it (or the same file by absolute path).

Example:
    swift-ssid remove runs/demo/index --images gone.txt
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="INDEX", help="index folder to remove from")
    parser.add_argument("--images", required=True, metavar="FILE", help="images to remove, one path a line")


def run(args: argparse.Namespace) -> int:
    from swift_ssid.workflows.update import read_image_list, remove_images

    result = remove_images(args.index, read_image_list(args.images))
    print(
        f"{args.index}: removed {len(result.images)} image(s) -> version {result.version} "
        f"(from {result.from_version}), {result.total_images} images left"
    )
    return 0
