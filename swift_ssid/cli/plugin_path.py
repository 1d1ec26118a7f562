"""``swift-ssid plugin-path``: print the plugin file to pass to ``--custom_register_path``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = 'usage: swift sft --custom_register_path "$(swift-ssid plugin-path)" ...'


def run(args: argparse.Namespace) -> int:
    print(Path(__file__).resolve().parents[1] / "plugin.py")
    return 0
