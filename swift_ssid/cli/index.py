"""``swift-ssid index versions DIR`` / ``swift-ssid index prune DIR [--keep N]``: the versions of an index folder.

Every write into an index folder (``build-index``, ``identifiers``, ``add``, ``remove``) adds a version and switches
the folder's ``current`` link to it (see :mod:`swift_ssid.core.index`); old versions stay until pruned.

Examples:
    swift-ssid index versions runs/demo/index
    swift-ssid index prune runs/demo/index --keep 2     # the current version and the newest other one
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    versions = sub.add_parser("versions", help="list the versions of an index folder, the current one marked")
    versions.add_argument("dir", metavar="DIR", help="index folder")
    versions.set_defaults(command_name="index versions")
    prune = sub.add_parser("prune", help="delete old versions, keeping the current one")
    prune.add_argument("dir", metavar="DIR", help="index folder")
    prune.add_argument(
        "--keep", type=int, default=1, metavar="N", help="versions to keep, the current one included (default 1)"
    )
    prune.set_defaults(command_name="index prune")


def run(args: argparse.Namespace) -> int:
    from swift_ssid.core.errors import UserError
    from swift_ssid.core.index import describe_versions, prune_versions

    if args.action == "prune":
        if args.keep < 1:
            raise UserError(f"--keep {args.keep}: the current version is always kept; pass --keep 1 or more")
        gone = prune_versions(args.dir, keep=args.keep)
        listed = ", ".join(map(str, gone))
        print(f"{args.dir}: deleted version(s) {listed}" if gone else f"{args.dir}: nothing to prune")
        return 0
    for row in describe_versions(args.dir):
        mark = "*" if row["current"] else " "
        if "error" in row:
            print(f"{mark} {row['version']:>4}  unreadable: {row['error']}")
            continue
        print(
            f"{mark} {row['version']:>4}  {row['kind']:<15} {row['images']} images, {row['identifiers']} identifiers"
            f"  {row['path']}"
        )
    return 0
