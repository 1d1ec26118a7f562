"""The ``swift-ssid`` command line: one module per subcommand, dispatched by :mod:`.main`."""

from swift_ssid.cli.main import main

__all__ = ["main"]
