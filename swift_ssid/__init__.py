"""swift_ssid: generative text-to-image retrieval with Structured Semantic Identifiers (SSID) for ms-swift.

Data flow: images -> identifier generation (``swift infer``) -> identifier index + token trie
-> memorise/retrieve datasets -> ``swift sft`` -> trie-constrained retrieval -> R@K report.

Importing this package (or its pure modules: records, index, trie, metrics) registers nothing
with ms-swift and does not import torch; registration lives in :mod:`swift_ssid.integration.register`,
imported by the plugin module :mod:`swift_ssid.plugin`. ``swift sft --custom_register_path swift_ssid``
reaches that module through the ``swift.plugins`` entry point in pyproject.toml (ms-swift with
``upstream/ms-swift/0001-import-plugins-by-module-name.patch``), not through an import here.
"""

__version__ = "0.1.0"
