"""The ``swift-ssid`` command: the pipeline steps that are not ``swift`` commands.

Each subcommand lives in ``swift_ssid/cli/<name>.py`` and exposes ``add_arguments(parser)``
and ``run(args) -> int``. Only the chosen subcommand is imported, so ``swift-ssid evaluate``
does not pay for torch or ms-swift. Subcommands import no other ``swift_ssid.cli`` module.

Commands raise; this module alone prints the error and chooses the exit status (``docs/errors.md``).
A command whose optional libraries come with an extra names it in ``OPTIONAL_EXTRA``; a command with
subcommands of its own may name itself in the ``command_name`` default (``protocol ablation``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from types import ModuleType

from swift_ssid.core.errors import UserError

# name -> (module, one-line help); listed in pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "plugin-path": ("swift_ssid.cli.plugin_path", "print the plugin file for --custom_register_path"),
    "check": ("swift_ssid.cli.check", "check a collection: every row and image, one line per problem"),
    "recipe": ("swift_ssid.cli.recipe", "write a recipe filled in with this install's plugin path and your paths"),
    "build-index": ("swift_ssid.cli.build_index", "parse `swift infer` results into the identifier index"),
    "identifiers": ("swift_ssid.cli.identifiers", "GRACE's identifier kinds (numeric, string, ...) as an index"),
    "add": ("swift_ssid.cli.add", "add images to an index: identifiers for the new images only, a new version"),
    "remove": ("swift_ssid.cli.remove", "remove images from an index: a new version that can never return them"),
    "update": ("swift_ssid.cli.update", "continue training on added images plus a replay of old ones"),
    "index": ("swift_ssid.cli.index", "list (versions) or prune the versions of an index folder"),
    "retrieve": ("swift_ssid.cli.retrieve", "trie-constrained top-K retrieval for a query file"),
    "search": ("swift_ssid.cli.search", "one-shot search: ranked images for a query text, as a table or JSON"),
    "serve": ("swift_ssid.cli.serve", "search service: HTTP API, thumbnails and a search page over an index"),
    "evaluate": ("swift_ssid.cli.evaluate", "image-level R@K of a run file"),
    "table": ("swift_ssid.cli.table", "tabulate run files in the paper's layout (Markdown and CSV)"),
    "report": ("swift_ssid.cli.report", "self-contained HTML report of a run"),
    "quality": ("swift_ssid.cli.quality", "identifier quality of an index (conformity, uniqueness, discriminability)"),
    "dense": ("swift_ssid.cli.dense", "dense text -> image retrieval with a dual encoder, as a run file"),
    "fuse": ("swift_ssid.cli.fuse", "fuse runs (ranx: rrf, combsum, ...) or rerank a run by dense similarity"),
    "protocol": ("swift_ssid.cli.protocol", "run the paper's ablation / zero-shot / multilingual protocols"),
    "run": ("swift_ssid.cli.run", "the whole method on your collection, resumable, ending in R@K and a report"),
    "demo": ("swift_ssid.cli.demo", "run the whole pipeline offline on the bundled mini collection"),
    "fetch-assets": ("swift_ssid.cli.fetch_assets", "fetch the real Qwen2 tokenizer and the real LM"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="swift-ssid", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser, module


BUG_REPORT = "the swift_ssid issue tracker"
EXTRAS = {"embed": "the text embedder"}
"""pip extras of swift-ssid -> what they install, for the message when one of their libraries is missing."""


def _one_line(error: BaseException) -> str:
    """The error's message on one line (``OSError``'s strerror and file name when it has no message of its own)."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def missing_extra(error: ImportError, extra: str) -> UserError:
    """The error for an optional library that is missing: its import error and the extra that installs it."""
    return UserError(f"{error}; install it (pip install 'swift-ssid[{extra}]' for {EXTRAS[extra]})")


def run_command(module: ModuleType, args: argparse.Namespace) -> int:
    """Run ``module.run(args)``; a missing optional library of the command becomes a :class:`UserError`."""
    try:
        return int(module.run(args) or 0)
    except ImportError as e:
        extra = getattr(module, "OPTIONAL_EXTRA", None)
        if extra is None:
            raise
        raise missing_extra(e, extra) from e


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit status follows the policy in ``docs/errors.md``.

    Returns:
        0 done; 2 bad input or environment (``UserError``, any ``ValueError`` or ``OSError``: one line on stderr,
        ``swift-ssid <cmd>: error: ...``; a collection with problem rows: the list of them); 1 a bug (the
        traceback, then a line saying so) or a pipeline step that failed (its command and log); 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 2
    name = f"swift-ssid {getattr(args, 'command_name', None) or args.command}"
    try:
        return run_command(module, args)
    except (ValueError, OSError) as e:  # bad input (UserError is a ValueError) or environment: a file missing...
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as e:
        pipeline = sys.modules.get("swift_ssid.workflows.pipeline")  # loaded if one of its errors was raised
        if pipeline and isinstance(e, pipeline.CollectionError):  # the problem rows, one a line, as `check` lists
            print(f"{name}: the collection has problems: {e}", file=sys.stderr)
            return 2
        if pipeline and isinstance(e, pipeline.StageError):  # a `swift` step: its command and the end of its log
            print(f"{name}: a step failed: {e}", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(
            f"{name}: internal error (a bug in swift_ssid, not in your input): please report it with the command "
            f"and the traceback above at {BUG_REPORT}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
