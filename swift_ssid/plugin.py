"""ms-swift plugin file shipped inside the installed package.

ms-swift 4.6.0 imports ``--custom_register_path`` entries as files (a package name such as
``swift_ssid`` fails with ``ImportError: Cannot import external file``), so pass this file's path::

    swift sft --custom_register_path "$(swift-ssid plugin-path)" --template ssid_qwen2_5_vl ...

It only imports :mod:`swift_ssid.integration.register`, which registers everything exactly once per process.
"""

import swift_ssid.integration.register  # noqa: F401
