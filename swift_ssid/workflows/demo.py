"""The offline demo: the whole SSID pipeline on the bundled mini collection with a tiny random model.

Runs for real, on CPU, with no hub: a tiny Qwen2.5-VL (random weights, the real Qwen2 tokenizer)
or LLaVA-NeXT is built from config, then :class:`swift_ssid.workflows.pipeline.Pipeline` runs ``swift infer``
(stage 1), ``swift-ssid build-index``, ``swift sft``, ``swift-ssid retrieve`` and the R@K report.

What it shows honestly: a random tiny model cannot write usable identifiers, so ``build-index``
reports its answers as invalid and the demo switches to the labelled caption-derived identifier
source. Training is sized so that the tiny model memorises: the training captions of the memorised
images must come back (the memorisation check, R@1 >= 0.8 in ``tests/test_e2e_pipeline.py``), and the
ranked lists differ between queries. On held-out test captions a random tiny model stays near chance;
the same commands with a 7B model are in ``docs/own-collection.md`` and ``recipes/README.md``.

The command is :mod:`swift_ssid.cli.demo` (``swift-ssid demo``).
"""

from __future__ import annotations

import os
from pathlib import Path

from swift_ssid.workflows.pipeline import PipelineConfig, swift_executable

DEMO_COLLECTION = Path(__file__).resolve().parents[1] / "data" / "demo" / "collection.jsonl"
TEMPLATES = {
    "qwen2_5_vl": "ssid_qwen2_5_vl",
    "llava_next": "ssid_llava1_6_vicuna_hf",
    "real_lm_llava": "ssid_llava1_6_yi_hf",  # LLaVA-NeXT with ChatML turns: the real LM's own chat format
}
DEFAULT_FAMILY = "llava_next"  # 2k-token vocabulary: 20x cheaper sft and retrieval steps than the 151k of Qwen2
DEMO_STEPS = 200
DEMO_LEARNING_RATE = "1e-2"
DEMO_BATCH_SIZE = 8
DEMO_TRAIN_IMAGES = 8

REAL_LM_FAMILY = "real_lm_llava"
"""The demo family "real LM, random vision": the real SmolLM2-135M-Instruct behind a tiny random vision tower."""
REAL_LM_TRAINING: dict[str, str | int] = {
    "steps": 8,
    "learning_rate": "1e-4",
    "tuner_type": "full",
    "memorised_images": 4,
}
"""Its fine-tuning: a pretrained LM needs a small learning rate and few passes (the tiny random models' 1e-2 and 200
steps would wipe out what it knows); a step of 8 rows takes 30-90 s on 2 busy cores, so 8 steps (about one pass
over the 52 rows) and a memorisation check on 4 training images (20 queries): about 33 minutes in all, measured in
``benchmarks/REAL_LM_LLAVA.md``."""


def model_flags(family: str) -> list[str]:
    """The tiny model's swift flags without its stock ``--template`` (the SSID template replaces it)."""
    from swift_ssid.testing.tiny_models import SWIFT_FLAGS

    flags = list(SWIFT_FLAGS[family])
    i = flags.index("--template")
    del flags[i : i + 2]
    return flags


def default_steps(family: str) -> int:
    """The demo's ``swift sft`` steps for ``family``."""
    return int(REAL_LM_TRAINING["steps"]) if family == REAL_LM_FAMILY else DEMO_STEPS


def demo_sft_flags(steps: int, family: str = DEFAULT_FAMILY) -> list[str]:
    """Full fine-tuning of the tiny random model (LoRA on random weights learns too slowly for a demo).

    A high learning rate on few rows, as in ``tests/test_learning.py`` (a tiny Qwen2 reaches R@1 = 1.0 on 20
    captions with lr 1e-2): enough passes over the 52 rows (12 memorise, 40 retrieve) to memorise them.
    ``real_lm_llava`` uses :data:`REAL_LM_TRAINING` instead.
    """
    from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS

    real = family == REAL_LM_FAMILY
    flags = list(SFT_CPU_FLAGS)
    flags[flags.index("--tuner_type") + 1] = str(REAL_LM_TRAINING["tuner_type"]) if real else "full"
    learning_rate = str(REAL_LM_TRAINING["learning_rate"]) if real else DEMO_LEARNING_RATE
    return [
        *flags,
        *("--max_steps", str(steps), "--learning_rate", learning_rate),
        *("--per_device_train_batch_size", str(DEMO_BATCH_SIZE)),
        *("--save_steps", str(steps), "--logging_steps", "10", "--warmup_ratio", "0.05", "--seed", "0"),
    ]


def demo_config(work: Path, family: str, model_dir: Path, steps: int | None = None, k: int = 10) -> PipelineConfig:
    """The demo's pipeline settings (the end-to-end tests run them with fewer steps).

    Args:
        work: work folder.
        family: a key of :data:`TEMPLATES`.
        model_dir: the tiny model's directory.
        steps: ``swift sft`` steps; None: :func:`default_steps`.
        k: beams per query.

    Returns:
        The :class:`~swift_ssid.workflows.pipeline.PipelineConfig`.
    """
    return PipelineConfig(
        workdir=work,
        collection=DEMO_COLLECTION,
        model=str(model_dir),
        template=TEMPLATES[family],
        model_flags=model_flags(family),
        sft_flags=demo_sft_flags(default_steps(family) if steps is None else steps, family),
        k=k,
        generate_max_new_tokens=48,
        # every training image (the real LM: the first 4): its 5 training captions are queried
        memorisation_images=int(REAL_LM_TRAINING["memorised_images"])
        if family == REAL_LM_FAMILY
        else DEMO_TRAIN_IMAGES,
        # One OpenMP thread per command unless the user chose otherwise: torch's default pool spins against other
        # processes on a small busy machine (a tiny Qwen2.5-VL sft step: 2.35 s with the default, 1.0-1.6 s with one
        # thread on 2 busy cores; the tiny Qwen2 text model: 1.64 s vs 0.49 s).
        env={"MAX_PIXELS": "12544", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )


def resolve_inputs(
    family: str, tokenizer: str | None = None, with_tokenizer: bool = True
) -> dict[str, str | int | None]:
    """Every input the demo reads, resolved from the installed package and the assets folder.

    Args:
        family: a key of :data:`TEMPLATES`.
        tokenizer: an explicit Qwen2 tokenizer folder, or None to look it up.
        with_tokenizer: False skips the tokenizer (the tiny model is already built).

    Returns:
        ``collection``, ``images`` (count), ``prompt``, ``tokenizer`` (None for families that train their own),
        ``real_lm`` (the real LM's folder, ``real_lm_llava`` only) and the ``swift`` executable.

    Raises:
        FileNotFoundError, ValueError: an input is missing; the one-line message names it and the fix.
    """
    from swift_ssid.core.collection import load_collection
    from swift_ssid.core.prompt import PROMPT_RESOURCE, load_prompt
    from swift_ssid.testing.assets import qwen2_tokenizer_dir, real_lm_dir

    items = load_collection(DEMO_COLLECTION)  # checks that every image exists
    load_prompt()
    tokenizer_dir = qwen2_tokenizer_dir(tokenizer) if family == "qwen2_5_vl" and with_tokenizer else None
    inputs: dict[str, str | int | None] = {
        "collection": str(DEMO_COLLECTION),
        "images": len(items),
        "prompt": str(DEMO_COLLECTION.parents[1] / PROMPT_RESOURCE),
        "tokenizer": None if tokenizer_dir is None else str(tokenizer_dir),
    }
    if family == REAL_LM_FAMILY and with_tokenizer:
        inputs["real_lm"] = str(real_lm_dir())  # AssetNotFoundError names the fetch command
    return {**inputs, "swift": swift_executable()}
