"""SSID for any ms-swift template: ``ssid_<T>`` for every registered template ``T``, and a third family end to end.

Registration: every ms-swift template has its SSID form, a subclass of its class carrying the mixin, with
ms-swift's meta unchanged but for the name and class; each instantiates (and encodes a chat) exactly as its
parent does. End to end: a tiny random PaliGemma (SigLIP + Gemma, built from config) goes through ``swift
infer`` with ``SSID_INDEX`` on images, ``swift sft`` (LoRA) on ``ssid-memorize`` + ``ssid-retrieve`` and
``swift-ssid retrieve`` with the ``ssid_paligemma`` template, which no line of this project names.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from e2e_helpers import read_jsonl, swift, swift_ssid, write_jsonl

from swift_ssid.core.caption_identifiers import write_caption_results
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex, build_index
from swift_ssid.core.runs import read_run
from swift_ssid.integration.datasets import query_rows
from swift_ssid.testing.tiny_models import SFT_CPU_FLAGS, SWIFT_FLAGS, build_tiny_paligemma, build_tiny_qwen2_text
from swift_ssid.workflows.demo import DEMO_COLLECTION


@pytest.fixture(scope="module")
def registered():
    from swift.template import TEMPLATE_MAPPING

    import swift_ssid.integration.register  # noqa: F401

    return TEMPLATE_MAPPING


def test_every_ms_swift_template_has_an_ssid_form(registered):
    from swift_ssid.integration.templates import (
        DERIVED,
        NAME_SPECIAL_CASED,
        SSIDTemplateMixin,
        is_ssid_template,
        ssid_template_names,
    )

    assert all(f"ssid_{name}" not in registered and not is_ssid_template(f"ssid_{name}") for name in NAME_SPECIAL_CASED)
    bases = [name for name in registered if not name.startswith("ssid_") and name not in NAME_SPECIAL_CASED]
    assert len(bases) > 200 and {"qwen2_vl", "qwen3_vl", "internvl_hf", "minicpmv2_6", "paligemma"} <= set(bases)
    for base in bases:
        meta, parent = registered[f"ssid_{base}"], registered[base]
        assert issubclass(meta.template_cls, parent.template_cls), base
        assert issubclass(meta.template_cls, SSIDTemplateMixin), base
        assert type(meta) is type(parent), base  # e.g. QwenTemplateMeta stays QwenTemplateMeta
        same = {f.name for f in dataclasses.fields(meta)} - {"template_type", "template_cls"}
        assert {k: getattr(meta, k) for k in same} == {k: getattr(parent, k) for k in same}, base
        assert is_ssid_template(f"ssid_{base}") and not is_ssid_template(base)
    assert set(ssid_template_names()) == {f"ssid_{b}" for b in bases} and list(DERIVED) == ssid_template_names()[:3]
    # one SSID class per ms-swift class (besides ssid_qwen2_5's own), the named ones kept for imports
    derived = {registered[f"ssid_{b}"].template_cls for b in bases if b != "qwen2_5"}
    assert len(derived) == len({registered[b].template_cls for b in bases})
    assert registered["ssid_qwen2_5_vl"].template_cls.__name__ == "SSIDQwen2_5VLTemplate"


def test_registration_is_cheap_and_derived_classes_unpickle_in_a_fresh_process(registered):
    """Derive every SSID class and meta in a fresh process (the cost each ``swift`` command pays once); a derived
    class unpickles there before registration (ms-swift hands templates to ``datasets.map`` workers)."""
    import pickle

    blob = pickle.dumps(registered["ssid_qwen2_vl"].template_cls)
    script = (
        f"import pickle, time; cls = pickle.loads({blob!r}); print(cls.__name__, cls.__mro__[2].__name__); "
        "import swift_ssid.integration.templates as t; s = time.perf_counter(); "
        "metas = t.template_metas(); [t.register(m) for m in metas]; print(len(metas), time.perf_counter() - s)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unpickled, timing = proc.stdout.strip().splitlines()[-2:]
    assert unpickled.split() == ["SSIDQwen2VLTemplate", "Qwen2VLTemplate"]
    count, seconds = timing.split()
    print(f"\nderived and registered {count} SSID templates in {float(seconds) * 1000:.1f} ms")
    assert int(count) > 200 and float(seconds) < 0.5


def test_each_ssid_template_instantiates_and_encodes_as_its_parent(registered, tmp_path):
    """On one tokenizer, ``ssid_T`` and ``T`` either both build and encode a chat to the same ids, or both fail."""
    from swift.infer_engine import TransformersEngine
    from swift.template import get_template

    processor = TransformersEngine(
        str(build_tiny_qwen2_text(tmp_path / "model")), model_type="qwen2", template_type="qwen"
    ).processor
    chat = {"messages": [{"role": "user", "content": "Which image matches this caption? A dog."},
                         {"role": "assistant", "content": "identifier:dog - park\nreason:A dog."}]}  # fmt: skip

    def outcome(name: str) -> tuple[str, object]:
        try:
            template = get_template(processor, template_type=name)
        except Exception as e:  # noqa: BLE001 - the parent's failure is the expected outcome
            return f"init {type(e).__name__}", None
        try:
            return "ok", template.encode(json.loads(json.dumps(chat)))["input_ids"]
        except Exception as e:  # noqa: BLE001
            return f"encode {type(e).__name__}", None

    bases = [base for base in registered if f"ssid_{base}" in registered]
    results = {base: (outcome(base), outcome(f"ssid_{base}")) for base in bases}
    differ = {base: (a[0], b[0]) for base, (a, b) in results.items() if a != b}
    assert differ == {}
    assert sum(a[0] == "ok" for a, _ in results.values()) > 150  # most templates encode with this tokenizer


# ---------------------------------------------------------------- a third multimodal family, end to end


@pytest.mark.slow
def test_paligemma_stage1_with_index_sft_and_retrieve(tmp_path):
    """``ssid_paligemma``: constrained ``swift infer`` on images, LoRA ``swift sft``, ``swift-ssid retrieve``."""
    model = build_tiny_paligemma(tmp_path / "model")
    items = load_collection(DEMO_COLLECTION)
    write_caption_results([(item.image, item.captions[0]) for item in items], tmp_path / "results.jsonl")
    build_index(tmp_path / "results.jsonl", tmp_path / "index")
    index = IdentifierIndex.load(tmp_path / "index")
    flags = [*SWIFT_FLAGS["paligemma"]]
    flags[flags.index("--template") + 1] = "ssid_paligemma"
    env = {"SSID_INDEX": str(tmp_path / "index"), "SSID_COLLECTION": str(DEMO_COLLECTION)}

    # Stage-1 rows (an image and the paper's prompt) through the SSID template: the identifier line is constrained.
    result = tmp_path / "infer.jsonl"
    infer = ["--model", str(model), *flags, "--val_dataset", "ssid-generate#4", "--result_path", str(result)]
    swift("infer", [*infer, "--max_new_tokens", "20", "--num_beams", "2"], tmp_path / "infer.log", **env)
    rows = read_jsonl(result)
    assert len(rows) == 4 and all(row["images"] for row in rows)
    for row in rows:
        assert row["response"].startswith("identifier:"), row["response"]
        assert row["response"][len("identifier:") :].split("\n")[0] in index

    out = tmp_path / "sft"
    sft = ["--model", str(model), *flags, *SFT_CPU_FLAGS, "--dataset", "ssid-memorize#6", "ssid-retrieve#6"]
    sft += ["--max_steps", "3", "--save_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3"]
    sft += ["--output_dir", str(out), "--logging_steps", "1", "--seed", "0"]
    swift("sft", sft, tmp_path / "sft.log", **env)
    ckpt = out / "checkpoint-3"
    assert json.loads((ckpt / "args.json").read_text())["template"] == "ssid_paligemma"
    from safetensors.torch import load_file

    lora_b = [t for name, t in load_file(str(ckpt / "adapter_model.safetensors")).items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: the steps updated it

    queries = write_jsonl(tmp_path / "queries.jsonl", query_rows(items)[:6])
    run = tmp_path / "run.jsonl"
    cmd = ["retrieve", "--model", str(model), "--adapters", str(ckpt), "--model_type", "paligemma"]
    cmd += ["--template", "ssid_paligemma", "--index", str(tmp_path / "index"), "--queries", str(queries)]
    cmd += ["--k", "3", "--batch-size", "3", "--max-new-tokens", "24", "--torch-dtype", "float32", "--out", str(run)]
    swift_ssid(cmd, tmp_path / "retrieve.log")
    run_rows = read_run(run)
    assert [r.query_id for r in run_rows] == [q["query_id"] for q in read_jsonl(queries)]
    for row in run_rows:
        assert len(row.identifiers) == 3 == len(set(row.identifiers)) and row.unknown_identifiers == []
        assert all(identifier in index for identifier in row.identifiers)
        assert row.scores == sorted(row.scores, reverse=True)
