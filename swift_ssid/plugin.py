"""ms-swift plugin module shipped inside the installed package: importing it registers everything.

ms-swift 4.6.0 imports ``--custom_register_path`` entries as files (a package name such as
``swift_ssid`` fails with ``ImportError: Cannot import external file``), so pass this file's path::

    swift sft --custom_register_path "$(swift-ssid plugin-path)" --template ssid_qwen2_5_vl ...

With ``upstream/ms-swift/0001-import-plugins-by-module-name.patch``, ``--custom_register_path swift_ssid``
works too: ms-swift imports the package, then this module, which pyproject.toml declares for that name in the
``swift.plugins`` entry-point group.

It only imports :mod:`swift_ssid.integration.register`, which registers everything exactly once per process.
"""

import swift_ssid.integration.register  # noqa: F401
