"""``swift-ssid demo``: the whole pipeline offline on the bundled mini collection (:mod:`..workflows.demo`)."""

from swift_ssid.workflows.demo import add_arguments, run

__all__ = ["add_arguments", "run"]
