"""The one place where swift_ssid registers itself with ms-swift.

Importing this module registers the SSID chat templates, datasets and metrics. Python caches
it in ``sys.modules`` under its real name, so it runs exactly once per process however many thin
plugin files (``templates/ssid_templates.py``, ``dataset_plugins/ssid_datasets.py``) import it,
and under whatever hashed module name ms-swift loads those files.
"""

from __future__ import annotations

from swift_ssid.integration import datasets, templates

for _meta in templates.template_metas():
    templates.register(_meta)

for _meta in datasets.dataset_metas():
    datasets.register(_meta)

# `--eval_metric ssid_recall`, and the evalscope benchmark `ssid_retrieval` only where evalscope is already
# imported (`swift eval` imports it before loading plugins; sft/infer never do, so they pay nothing).
from swift_ssid.integration import evalscope_benchmark, sft_metric  # noqa: E402

sft_metric.register_metrics()
evalscope_benchmark.register_if_evalscope_loaded()
