"""ms-swift plugin file: registers the SSID datasets (and chat templates) with ms-swift.

Usage (run from the repository root; any command that takes ``--custom_register_path``)::

    SSID_COLLECTION=data/dataset_flickr30k.json SSID_IMAGE_ROOT=data/flickr30k-images SSID_INDEX=runs/index \\
    swift sft --custom_register_path templates/ssid_templates.py dataset_plugins/ssid_datasets.py \\
        --dataset ssid-memorize ssid-retrieve ...

ms-swift 4.6.0 imports this FILE under a hashed module name (a package name such as ``swift_ssid``
fails with ``ImportError: Cannot import external file``); the registering happens once, in
``swift_ssid.integration.register``. Datasets: ``ssid-generate``, ``ssid-generate-nocaption``, ``ssid-memorize``,
``ssid-retrieve``, ``ssid-memorize-noreason``, ``ssid-retrieve-noreason``, ``ssid-query``; settings
``SSID_COLLECTION``, ``SSID_IMAGE_ROOT``, ``SSID_INDEX``, ``SSID_PROTOCOL``, ``SSID_TRAIN_SIZE``
(see ``swift_ssid/integration/datasets.py``).
"""

import swift_ssid.integration.register  # noqa: F401
