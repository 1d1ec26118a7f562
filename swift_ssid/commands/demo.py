"""``swift-ssid demo``: the whole pipeline offline on the bundled mini collection (see :mod:`swift_ssid.demo`)."""

from swift_ssid.demo import add_arguments, run

__all__ = ["add_arguments", "run"]
