"""SSID chat templates: metas derived from ms-swift's, registration once, and the trie constraint at generation.

Generation runs through ms-swift's real ``TransformersEngine`` on a tiny random Qwen2 text model
(``swift_ssid.testing.tiny_models.build_tiny_qwen2_text``) with template ``ssid_qwen2_5``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.decoding.constrained import SSIDConstrainedLogitsProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = REPO_ROOT / "templates" / "ssid_templates.py"
IDENTIFIERS = [
    "dog - park - ball",
    "two men - street",
    "girl - red dress",
    "man - bicycle - road",
    "children - beach",
    "woman - kitchen",
    "brown dog - snow",
    "boy - swimming pool",
]
QUERIES = ["a dog runs in the park", "two men walk down a busy street"]


def write_index(directory: Path, identifiers: list[str] = IDENTIFIERS) -> Path:
    """Write an identifier index (one image per identifier) and return its directory."""
    entries = [IndexEntry(f"img{i}.jpg", ident, "ok") for i, ident in enumerate(identifiers)]
    IdentifierIndex(entries).save(directory)
    return directory


def request(text: str):
    from swift.infer_engine import InferRequest

    return InferRequest(messages=[{"role": "user", "content": text}])


def identifier_of(response: str) -> str:
    assert response.startswith("identifier:"), response
    return response[len("identifier:") :].split("\n", 1)[0]


class Marker(LogitsProcessor):
    """A processor the 'engine' put there first; must stay in place."""

    def __call__(self, input_ids, scores):
        return scores


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    return write_index(tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from swift.infer_engine import TransformersEngine

    import swift_ssid.integration.register  # noqa: F401  (registers the SSID templates)
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_text

    model_dir = build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2"))
    return TransformersEngine(
        str(model_dir), model_type="qwen2", template_type="ssid_qwen2_5", torch_dtype=torch.float32, max_batch_size=4
    )


@pytest.fixture
def template(engine, monkeypatch):
    """The engine's SSID template with no explicit settings and a clean SSID environment."""
    for key in ("SSID_INDEX", "SSID_TARGET", "SSID_INFER_REASON"):
        monkeypatch.delenv(key, raising=False)
    engine.template.set_ssid_settings(None)
    return engine.template


def gen_kwargs(num_beams: int = 1, processors=None) -> dict:
    kwargs = {"generation_config": GenerationConfig(num_beams=num_beams, num_return_sequences=num_beams)}
    if processors is not None:
        kwargs["logits_processor"] = processors
    return kwargs


# ---------------------------------------------------------------- settings


def test_settings_from_env(index_dir):
    from swift_ssid.integration.settings import SSIDSettings

    off = SSIDSettings.from_env({})
    assert not off.enabled and off.index_dir is None
    assert SSIDSettings.from_env({"SSID_INDEX": ""}).enabled is False
    on = SSIDSettings.from_env({"SSID_INDEX": str(index_dir)})
    assert on.enabled and on.index_dir == index_dir.resolve()
    assert (on.target, on.infer_reason, on.trie_end) == ("reason", True, "newline")
    no_reason = SSIDSettings.from_env({"SSID_INDEX": str(index_dir), "SSID_TARGET": "noreason"})
    assert (no_reason.target, no_reason.infer_reason, no_reason.trie_end) == ("noreason", False, "eos")
    train_only = SSIDSettings.from_env({"SSID_INDEX": str(index_dir), "SSID_INFER_REASON": "False"})
    assert (train_only.target, train_only.infer_reason, train_only.trie_end) == ("reason", False, "newline")
    assert SSIDSettings.from_env(train_only.to_env()) == train_only


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SSID_TARGET": "reasons"}, "SSID_TARGET='reasons' is not valid"),
        ({"SSID_INFER_REASON": "maybe"}, "SSID_INFER_REASON='maybe' is not valid"),
        ({"SSID_TARGET": "noreason", "SSID_INFER_REASON": "true"}, "needs SSID_TARGET=reason"),
        ({"SSID_INDEX": "/nonexistent/index"}, "SSID_INDEX='/nonexistent/index' is not an identifier index"),
    ],
)
def test_settings_bad_values_raise_clear_errors(env, expected):
    from swift_ssid.integration.settings import SSIDSettings

    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        SSIDSettings.from_env(env)


# ---------------------------------------------------------------- metas and registration


def test_template_metas_are_ms_swift_metas_with_ssid_classes():
    from swift.template import TEMPLATE_MAPPING
    from swift.template.templates.llava import Llava1_6HfTemplate
    from swift.template.templates.qwen import Qwen2_5VLTemplate

    from swift_ssid.integration import templates

    metas = {meta.template_type: meta for meta in templates.template_metas()}
    metas = {name: metas[name] for name in ("ssid_qwen2_5_vl", "ssid_llava1_6_vicuna_hf", "ssid_qwen2_5")}
    parents = {"ssid_qwen2_5_vl": Qwen2_5VLTemplate, "ssid_llava1_6_vicuna_hf": Llava1_6HfTemplate}
    for name, meta in metas.items():
        base = TEMPLATE_MAPPING[name[len("ssid_") :]]
        assert type(meta) is type(base)  # QwenTemplateMeta stays QwenTemplateMeta
        assert issubclass(meta.template_cls, base.template_cls)
        assert issubclass(meta.template_cls, parents.get(name, base.template_cls))
        assert issubclass(meta.template_cls, templates.SSIDTemplateMixin)
        same = {f.name for f in dataclasses.fields(meta)} - {"template_type", "template_cls"}
        assert {k: getattr(meta, k) for k in same} == {k: getattr(base, k) for k in same}


def test_register_twice_fails_loudly():
    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.integration import templates

    meta = templates.template_metas()[0]
    with pytest.raises(ValueError, match="already been registered"):
        templates.register(meta)


def test_plugin_file_registers_exactly_once(tmp_path):
    """ms-swift imports the plugin FILE under a hashed name; twice, via another path, and beside the library."""
    other_path = tmp_path / "ssid_templates_copy.py"
    other_path.write_text(PLUGIN.read_text())
    script = f"""
import json
from swift_ssid.integration import templates
calls = []
original = templates.register
templates.register = lambda meta: (calls.append(meta.template_type), original(meta))[1]
from swift.utils.utils import import_external_file
import_external_file({str(PLUGIN)!r})
import_external_file({str(PLUGIN)!r})
import_external_file({str(other_path)!r})
import swift_ssid.integration.register
from swift.template import TEMPLATE_MAPPING
print(json.dumps({{"calls": calls, "registered": sorted(k for k in TEMPLATE_MAPPING if k.startswith("ssid_"))}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["calls"]) == len(set(result["calls"])) > 200  # one ssid_<T> per ms-swift template, once each
    assert {"ssid_llava1_6_vicuna_hf", "ssid_qwen2_5", "ssid_qwen2_5_vl"} <= set(result["calls"])
    assert result["registered"] == sorted(result["calls"])


def test_plugin_file_is_thin():
    """The plugin file holds a docstring with the usage and the one import, nothing else."""
    import ast

    tree = ast.parse(PLUGIN.read_text())
    docstring = ast.get_docstring(tree)
    assert "--custom_register_path templates/ssid_templates.py" in docstring
    body = [node for node in tree.body if not isinstance(node, ast.Expr)]
    assert (
        len(body) == 1
        and isinstance(body[0], ast.Import)
        and body[0].names[0].name == "swift_ssid.integration.register"
    )


# ---------------------------------------------------------------- prepare_generate_kwargs


def test_without_index_prepare_generate_kwargs_equals_parent(template):
    from swift.template import Template

    for num_beams in (1, 4):
        ours = template.prepare_generate_kwargs(gen_kwargs(num_beams), model=None)
        parent = Template.prepare_generate_kwargs(template, gen_kwargs(num_beams), model=None)
        assert set(ours) == set(parent) == {"generation_config", "stopping_criteria"}
        assert [(type(c), c.stop_words) for c in ours["stopping_criteria"]] == [
            (type(c), c.stop_words) for c in parent["stopping_criteria"]
        ]


def test_with_index_one_processor_appended_after_existing(template, index_dir, monkeypatch):
    from swift.template.utils import StopWordsCriteria

    from swift_ssid.integration.templates import BeamSafeStopWordsCriteria, OneBeamPerIdentifier

    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    im_end = template.tokenizer.convert_tokens_to_ids("<|im_end|>")

    marker = Marker()
    out = template.prepare_generate_kwargs(gen_kwargs(1, LogitsProcessorList([marker])), model=None)
    procs = out["logits_processor"]
    assert len(procs) == 2 and procs[0] is marker and isinstance(procs[1], SSIDConstrainedLogitsProcessor)
    assert procs[1].num_beams == 1 and procs[1]._eos_list == [im_end] and procs[1].reason is True
    assert [type(c) for c in out["stopping_criteria"]] == [StopWordsCriteria]

    fresh = template.prepare_generate_kwargs(gen_kwargs(1), model=None)  # no list yet: one is created
    assert isinstance(fresh["logits_processor"], LogitsProcessorList) and len(fresh["logits_processor"]) == 1

    beams = template.prepare_generate_kwargs(gen_kwargs(4, LogitsProcessorList([marker])), model=None)
    procs = beams["logits_processor"]
    assert procs[0] is marker
    assert sum(isinstance(p, SSIDConstrainedLogitsProcessor) for p in procs) == 1
    assert isinstance(procs[1], SSIDConstrainedLogitsProcessor) and procs[1].num_beams == 4
    assert isinstance(procs[2], OneBeamPerIdentifier) and procs[2].constraint is procs[1]
    assert [type(c) for c in beams["stopping_criteria"]] == [BeamSafeStopWordsCriteria]

    trie = template.ssid_trie(template.current_ssid_settings())
    assert trie.header.end == "newline" and trie.header.eos_token_id == im_end and len(trie) == len(IDENTIFIERS)


def test_bad_setting_fails_at_generation(template, index_dir, monkeypatch):
    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    monkeypatch.setenv("SSID_TARGET", "both")
    with pytest.raises(ValueError, match="SSID_TARGET='both' is not valid"):
        template.prepare_generate_kwargs(gen_kwargs(1), model=None)


def test_beam_safe_stop_words_judge_each_step_afresh(template):
    """ms-swift's criterion keeps a row 'done' after its candidate changed; beam search changes them every step."""
    from swift.template.utils import StopWordsCriteria

    from swift_ssid.integration.templates import BeamSafeStopWordsCriteria

    tok = template.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    a, b = tok("dog", add_special_tokens=False)["input_ids"][0], tok("park", add_special_tokens=False)["input_ids"][0]
    step1 = torch.tensor([[5, a, im_end], [5, a, b]])  # row 0 finished
    step2 = torch.tensor([[5, a, b, b], [5, a, b, a]])  # a new candidate in row 0, not finished
    for cls, expected in ((StopWordsCriteria, [True, False]), (BeamSafeStopWordsCriteria, [False, False])):
        criteria = cls(tok, ["<|im_end|>"])
        assert criteria(torch.tensor([[5, a], [5, a]]), None).tolist() == [False, False]
        assert criteria(step1, None).tolist() == [True, False]
        assert criteria(step2, None).tolist() == expected


# ---------------------------------------------------------------- generation through the engine


def test_infer_beam_search_returns_k_distinct_identifiers_from_index(engine, template, index_dir, monkeypatch):
    from swift.infer_engine import RequestConfig

    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    responses = engine.infer(
        [request(q) for q in QUERIES], RequestConfig(num_beams=4, n=4, max_tokens=24, temperature=0)
    )
    assert len(responses) == len(QUERIES)
    for response in responses:
        assert len(response.choices) == 4
        identifiers = [identifier_of(c.message.content) for c in response.choices]
        assert set(identifiers) <= set(IDENTIFIERS)
        assert len(set(identifiers)) == 4  # one beam per identifier, not one identifier with 4 reasons


def test_beam_scores_equal_transformers_sequences_scores(engine, template, index_dir, monkeypatch):
    """The recorded scores are what transformers returns with output_scores=True (which costs [steps, rows, V])."""
    from swift.infer_engine import RequestConfig
    from swift.template import Template

    captured = {}
    original = Template.generate

    def generate_with_scores(self, model, *args, **kwargs):
        kwargs["generation_config"].output_scores = True
        output = original(self, model, *args, **kwargs)
        captured["scores"] = output["sequences_scores"].tolist()
        return output

    monkeypatch.setattr(Template, "generate", generate_with_scores)
    for infer_reason in ("true", "false"):
        monkeypatch.setenv("SSID_INDEX", str(index_dir))
        monkeypatch.setenv("SSID_INFER_REASON", infer_reason)
        engine.infer([request(q) for q in QUERIES], RequestConfig(num_beams=3, n=3, max_tokens=20, temperature=0))
        assert template.ssid_last_beam_scores == pytest.approx(captured["scores"], rel=1e-4, abs=1e-5)
        assert len(captured["scores"]) == 2 * 3


def test_ssid_target_noreason_ends_after_identifier(engine, template, tmp_path, monkeypatch):
    from swift.infer_engine import RequestConfig

    monkeypatch.setenv("SSID_INDEX", str(write_index(tmp_path / "index")))
    monkeypatch.setenv("SSID_TARGET", "noreason")
    responses = engine.infer(
        [request(q) for q in QUERIES], RequestConfig(num_beams=3, n=3, max_tokens=30, temperature=0)
    )
    for choice in (c for r in responses for c in r.choices):
        text = choice.message.content
        assert text.startswith("identifier:") and "\n" not in text
        assert text[len("identifier:") :] in IDENTIFIERS
    assert template.ssid_trie(template.current_ssid_settings()).header.end == "eos"


def test_ssid_infer_reason_false_ends_after_identifier_line(engine, template, index_dir, monkeypatch):
    from swift.infer_engine import RequestConfig

    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    config = RequestConfig(num_beams=1, max_tokens=30, temperature=0)
    with_reason = engine.infer([request(q) for q in QUERIES], config)
    monkeypatch.setenv("SSID_INFER_REASON", "false")
    without = engine.infer([request(q) for q in QUERIES], config)
    for a, b in zip(with_reason, without, strict=True):
        free, ended = a.choices[0].message.content, b.choices[0].message.content
        assert ended == f"identifier:{identifier_of(ended)}\n" and identifier_of(ended) in IDENTIFIERS
        assert free.startswith(ended) and len(free) > len(ended)  # the reason line runs on (random model)


def test_without_index_generation_is_the_parents(engine, template):
    """No SSID_INDEX: the SSID template generates exactly what ms-swift's qwen2_5 template does."""
    from swift.infer_engine import RequestConfig, TransformersEngine
    from swift.template import get_template

    parent = TransformersEngine(engine.model, template=get_template(engine.processor, template_type="qwen2_5"))
    config = RequestConfig(max_tokens=16, temperature=0)
    ours = [r.choices[0].message.content for r in engine.infer([request(q) for q in QUERIES], config)]
    theirs = [r.choices[0].message.content for r in parent.infer([request(q) for q in QUERIES], config)]
    assert ours == theirs
    assert not any(text.startswith("identifier:") for text in ours)  # unconstrained: the random model rambles


@pytest.mark.slow
def test_qwen2_5_vl_template_constrains_beam_search_with_an_image(index_dir, tmp_path, monkeypatch):
    """ssid_qwen2_5_vl on a tiny Qwen2.5-VL (real Qwen2 tokenizer, 151k ids): an image query, K index identifiers."""
    import matplotlib
    from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine

    import swift_ssid.integration.register  # noqa: F401
    from swift_ssid.integration.templates import SSIDQwen2_5VLTemplate
    from swift_ssid.testing.tiny_models import build_tiny_qwen2_5_vl

    image = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    model_dir = build_tiny_qwen2_5_vl(tmp_path / "tiny-qwen2.5-vl")
    vl = TransformersEngine(
        str(model_dir), model_type="qwen2_5_vl", template_type="ssid_qwen2_5_vl", torch_dtype=torch.float32
    )
    assert isinstance(vl.template, SSIDQwen2_5VLTemplate)
    assert vl.template.ssid_eos_token_id == 151645  # <|im_end|>
    vl.template.max_pixels = 12544  # ~20 image tokens
    monkeypatch.setenv("SSID_INDEX", str(index_dir))
    message = {"role": "user", "content": "<image>Which identifier does this image have?"}
    (response,) = vl.infer(
        [InferRequest(messages=[message], images=[str(image)])],
        RequestConfig(num_beams=3, n=3, max_tokens=16, temperature=0),
    )
    identifiers = [identifier_of(c.message.content) for c in response.choices]
    assert len(set(identifiers)) == 3 and set(identifiers) <= set(IDENTIFIERS)
    assert len(vl.template.ssid_last_beam_scores) == 3
