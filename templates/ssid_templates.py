"""ms-swift plugin file: registers the SSID chat templates (and datasets) with ms-swift.

Usage (any ms-swift command that takes ``--custom_register_path``: sft, infer, deploy, eval, export ...)::

    swift infer --custom_register_path templates/ssid_templates.py --template ssid_qwen2_5_vl ...
    SSID_INDEX=runs/index swift infer --custom_register_path templates/ssid_templates.py \\
        --template ssid_qwen2_5_vl --model Qwen/Qwen2.5-VL-7B-Instruct --adapters CKPT ...

ms-swift 4.6.0 imports this FILE under a hashed module name; the registering happens once, in
``swift_ssid.integration.register`` (cached in ``sys.modules``), however often this file is imported.
Templates: ``ssid_qwen2_5_vl``, ``ssid_llava1_6_vicuna_hf``, ``ssid_qwen2_5``; settings
``SSID_INDEX``, ``SSID_TARGET``, ``SSID_INFER_REASON`` (see ``swift_ssid/integration/templates.py``).
"""

import swift_ssid.integration.register  # noqa: F401
