"""SSID chat templates: ms-swift's own templates plus the trie constraint at generation time.

One ``ssid_<T>`` template for every ms-swift template ``T`` (:func:`template_metas`), each a subclass of the
template class ms-swift uses for ``T``, with a meta derived in one line from ms-swift's registered meta (so chat
formatting and image handling stay exactly ms-swift's). :data:`DERIVED` names the ones written out by hand:

* ``ssid_qwen2_5_vl``  <- ``qwen2_5_vl`` (:class:`swift.template.templates.qwen.Qwen2_5VLTemplate`)
* ``ssid_llava1_6_vicuna_hf`` <- ``llava1_6_vicuna_hf`` (:class:`swift.template.templates.llava.Llava1_6HfTemplate`)
* ``ssid_qwen2_5`` <- ``qwen2_5`` (text only; plain :class:`swift.template.Template`)

Without ``SSID_INDEX`` they behave exactly as their parents. With it, every generation that goes
through the template (``TransformersEngine``: ``swift infer``, ``swift deploy``, ``swift eval``'s
server, ``--predict_with_generate``, ``swift-ssid retrieve``) decodes the identifier span under an
:class:`~swift_ssid.decoding.constrained.SSIDConstrainedLogitsProcessor`, appended in
:meth:`SSIDTemplateMixin.prepare_generate_kwargs`.

Settings: ``SSID_INDEX``, ``SSID_TARGET`` and ``SSID_INFER_REASON``, read by
:class:`swift_ssid.integration.settings.SSIDSettings` (the one module that names them).

Registration happens only in :mod:`swift_ssid.integration.register`, which calls :func:`register` for each of
:func:`template_metas`.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Mapping
from typing import Any

from swift.template import TEMPLATE_MAPPING, Template, TemplateMeta, register_template
from swift.template.templates.llava import Llava1_6HfTemplate
from swift.template.templates.qwen import Qwen2_5VLTemplate
from swift.template.utils import StopWordsCriteria
from transformers import LogitsProcessorList, StoppingCriteriaList

from swift_ssid.core.images import composite_alpha, has_alpha
from swift_ssid.core.index import INDEX_FILE
from swift_ssid.decoding.beam_search import BeamScoreRecorder, OneBeamPerIdentifier
from swift_ssid.decoding.constrained import SSIDConstrainedLogitsProcessor
from swift_ssid.decoding.trie import TokenTrie
from swift_ssid.decoding.trie_cache import trie_for_index
from swift_ssid.integration.compat.stop_words import BeamSafeStopWordsCriteria
from swift_ssid.integration.settings import SSIDSettings

SSID_QWEN2_5_VL = "ssid_qwen2_5_vl"
SSID_LLAVA1_6_VICUNA_HF = "ssid_llava1_6_vicuna_hf"
SSID_QWEN2_5 = "ssid_qwen2_5"


def _composited(image: Any, background: str) -> Any:
    """The image with transparency composited (a PIL image), or ``image`` itself when it has none.

    Raises:
        ValueError: a local image file cannot be decoded (names the file; ms-swift's own error does not).
    """
    from PIL import Image

    if isinstance(image, dict):
        source = image.get("bytes") or image.get("path")
    else:
        source = image
    if isinstance(source, str) and (source.startswith(("http://", "https://", "data:")) or not os.path.isfile(source)):
        return image  # URLs, base64 and paths relative to ROOT_IMAGE_DIR: ms-swift loads them as before
    try:
        if isinstance(source, Image.Image):
            return composite_alpha(source, background) if has_alpha(source) else image
        if not isinstance(source, bytes | str):
            return image
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            if not has_alpha(opened):
                return image
            opened.load()
            return composite_alpha(opened, background)
    except OSError as e:
        where = source if isinstance(source, str) else "an in-memory image"
        raise ValueError(
            f"cannot decode image {where} ({type(e).__name__}: {e}); run `swift-ssid check` on the collection and fix "
            "or drop the row (--skip-invalid)"
        ) from None


class SSIDTemplateMixin:
    """Adds the SSID trie constraint to an ms-swift template's generation (see the module docstring).

    Attributes:
        ssid_settings: explicit settings; None (default) reads :meth:`SSIDSettings.from_env` at each generation.
        ssid_last_beam_scores: beam scores of the last constrained beam-search ``generate`` call (sum of
            log-probabilities / length ** length_penalty, as transformers' ``sequences_scores``), one per returned
            sequence, input-major as the engine lays out choices; None where unknown.
    """

    ssid_settings: SSIDSettings | None = None
    ssid_last_beam_scores: list[float | None] | None = None

    def set_ssid_settings(self, settings: SSIDSettings | None) -> None:
        """Use ``settings`` instead of the environment (None: read the environment again)."""
        self.ssid_settings = settings

    def current_ssid_settings(self) -> SSIDSettings:
        """The settings in force: the explicit ones, else the environment's."""
        return self.ssid_settings if self.ssid_settings is not None else SSIDSettings.from_env()

    @property
    def ssid_eos_token_id(self) -> int:
        """The template's end-of-response token id (e.g. ``<|im_end|>`` for Qwen, ``</s>`` for Vicuna)."""
        return int(self.template_meta.stop_token_id)

    def ssid_trie(self, settings: SSIDSettings) -> TokenTrie:
        """The identifier trie for ``settings`` and this template's tokenizer (cached next to the index)."""
        index_file = settings.index_dir / INDEX_FILE
        stat = index_file.stat()
        key = (settings.index_dir, settings.trie_end, stat.st_mtime_ns, stat.st_size)
        cache = self.__dict__.setdefault("_ssid_trie_cache", {})
        if key not in cache:
            cache.clear()
            cache[key] = trie_for_index(
                settings.index_dir, self.tokenizer, end=settings.trie_end, eos_token_id=self.ssid_eos_token_id
            )
        return cache[key]

    def ssid_logits_processor(self, num_beams: int, settings: SSIDSettings) -> SSIDConstrainedLogitsProcessor:
        """A fresh constrained-decoding processor for one ``generate`` call."""
        return SSIDConstrainedLogitsProcessor(
            self.ssid_trie(settings),
            num_beams=num_beams,
            eos_token_id=self.ssid_eos_token_id,
            reason=settings.infer_reason,
        )

    def _preprocess_inputs(self, inputs: Any) -> None:
        """Composite transparent images onto ``SSID_ALPHA_BACKGROUND`` before ms-swift converts them to RGB.

        ms-swift's ``load_image`` drops alpha (transparent pixels keep their stored colour, usually black); every
        SSID template loads images here first, so generation, training and retrieval see the same picture as the
        report (:func:`swift_ssid.core.images.composite_alpha`). Opaque images pass through untouched. An image
        that cannot be decoded raises ValueError naming its file (ms-swift's own error names none).
        """
        named = [image for image in inputs.images or [] if isinstance(image, str)]
        if inputs.images:
            settings = self.ssid_settings or SSIDSettings.from_env(ignore=("index_dir",))
            inputs.images = [_composited(image, settings.alpha_background) for image in inputs.images]
        try:
            super()._preprocess_inputs(inputs)
        except OSError as e:  # PIL's "cannot identify image file <_io.BytesIO ...>" names no file
            raise ValueError(
                f"cannot decode an image of this row ({', '.join(named) or 'in-memory images'}): {e}; run "
                "`swift-ssid check` on the collection and fix or drop the row (--skip-invalid)"
            ) from e

    def prepare_generate_kwargs(self, generate_kwargs: dict[str, Any], *, model=None) -> dict[str, Any]:
        """The parent's kwargs, plus the SSID constraint when an index is set.

        Appends one :class:`SSIDConstrainedLogitsProcessor` to ``logits_processor`` (after whatever the
        engine put there). Under beam search it also appends :class:`OneBeamPerIdentifier` (when the
        reason line is generated) and swaps ms-swift's stop-word criterion for
        :class:`BeamSafeStopWordsCriteria`.
        """
        generate_kwargs = super().prepare_generate_kwargs(generate_kwargs, model=model)
        settings = self.current_ssid_settings()
        if not settings.enabled:
            return generate_kwargs
        num_beams = int(getattr(generate_kwargs["generation_config"], "num_beams", None) or 1)
        processors = generate_kwargs.get("logits_processor")
        if processors is None:
            processors = LogitsProcessorList()
        elif not isinstance(processors, LogitsProcessorList):
            processors = LogitsProcessorList(processors)
        constraint = self.ssid_logits_processor(num_beams, settings)
        budget = getattr(generate_kwargs["generation_config"], "max_new_tokens", None)
        if budget is not None and budget < constraint.trie.required_new_tokens():
            raise ValueError(
                f"max_new_tokens {budget} cannot hold the index's longest identifier "
                f"({constraint.trie.required_new_tokens()} tokens with the prefix and line end): a cut identifier "
                f"would be returned; set --max_new_tokens {constraint.trie.required_new_tokens()} or more"
            )
        processors.append(constraint)
        if num_beams > 1:
            if settings.infer_reason:
                processors.append(OneBeamPerIdentifier(constraint))
            criteria = generate_kwargs.get("stopping_criteria")
            if criteria is not None:
                generate_kwargs["stopping_criteria"] = StoppingCriteriaList(
                    BeamSafeStopWordsCriteria(c.tokenizer, c.stop_words, **c.tokenizer_kwargs)
                    if type(c) is StopWordsCriteria
                    else c
                    for c in criteria
                )
        generate_kwargs["logits_processor"] = processors
        return generate_kwargs

    def decode_generate_ids(self, generate_ids: list[int], **kwargs) -> Any:
        """The parent's decoding, done separately up to and after the first line break (the identifier line's end).

        A byte-fallback tokenizer (Llama / Vicuna: ``\\n`` is the byte token ``<0x0A>``) decodes a run of byte
        tokens together and turns every byte of an invalid UTF-8 run into U+FFFD, so a line break followed by a
        stray byte token came out as ``"��"``: the identifier line never ended and parsed as unknown.
        """
        settings = self.current_ssid_settings()
        if not settings.enabled:
            return super().decode_generate_ids(generate_ids, **kwargs)
        ids = list(generate_ids)
        cut = next((i + 1 for i, t in enumerate(ids) if "\n" in self.tokenizer.decode([t])), len(ids))
        if cut == len(ids):
            return super().decode_generate_ids(ids, **kwargs)
        head = super().decode_generate_ids(ids[:cut], **kwargs)
        return head + super().decode_generate_ids(ids[cut:], **{**kwargs, "first_token": False})

    def generate(self, model, *args, **kwargs):
        """The parent's ``generate``; under constrained beam search it also records the beam scores."""
        processors = kwargs.get("logits_processor") or []
        config = kwargs.get("generation_config")
        num_beams = int(getattr(config, "num_beams", None) or 1)
        constrained = any(isinstance(p, SSIDConstrainedLogitsProcessor) for p in processors)
        if not constrained or num_beams == 1 or getattr(config, "do_sample", False):
            return super().generate(model, *args, **kwargs)
        eos = getattr(config, "eos_token_id", None)
        n_eos = len(eos) if isinstance(eos, (list, tuple)) else 1
        eos_ids = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
        recorder = BeamScoreRecorder(num_beams, keep=(n_eos + 2) * num_beams, eos_token_ids=set(eos_ids))
        processors.append(recorder)
        self.ssid_last_beam_scores = None
        output = super().generate(model, *args, **kwargs)
        sequences = output["sequences"] if isinstance(output, Mapping) else getattr(output, "sequences", output)
        pad = getattr(config, "pad_token_id", None)
        self.ssid_last_beam_scores = recorder.sequence_scores(
            sequences,
            int(getattr(config, "num_return_sequences", None) or 1),
            {pad} if pad is not None else set(),
            float(getattr(config, "length_penalty", None) or 1.0),
        )
        return output


class SSIDQwen2_5Template(SSIDTemplateMixin, Template):
    """ms-swift's ``qwen2_5`` chat template (text only) with the SSID constraint."""


class SSIDQwen2_5VLTemplate(SSIDTemplateMixin, Qwen2_5VLTemplate):
    """ms-swift's ``qwen2_5_vl`` template with the SSID constraint."""


class SSIDLlava1_6HfTemplate(SSIDTemplateMixin, Llava1_6HfTemplate):
    """ms-swift's ``llava1_6_vicuna_hf`` template with the SSID constraint."""


# ssid template name -> (ms-swift template it derives from, its class): the three named in recipes and checkpoints.
DERIVED: dict[str, tuple[str, type[Template]]] = {
    SSID_QWEN2_5_VL: ("qwen2_5_vl", SSIDQwen2_5VLTemplate),
    SSID_LLAVA1_6_VICUNA_HF: ("llava1_6_vicuna_hf", SSIDLlava1_6HfTemplate),
    SSID_QWEN2_5: ("qwen2_5", SSIDQwen2_5Template),
}

SSID_PREFIX = "ssid_"
"""Every ms-swift template ``T`` gets an SSID form named ``ssid_T``."""

NAME_SPECIAL_CASED: frozenset[str] = frozenset({"dummy", "qwen3_5_emb"})
"""Templates ms-swift 4.6.0 special-cases by name (``template_meta.template_type == ...`` in ``template/base.py``
and ``templates/qwen.py``): ``dummy`` (the tokenizer's own chat template) and an embedding template; no SSID form."""

# ms-swift template class -> its SSID subclass (one per class: 253 templates share 136 classes in 4.6.0)
_SSID_CLASSES: dict[type[Template], type[Template]] = {
    Qwen2_5VLTemplate: SSIDQwen2_5VLTemplate,
    Llava1_6HfTemplate: SSIDLlava1_6HfTemplate,
}


def ssid_class(cls: type[Template]) -> type[Template]:
    """The SSID form of an ms-swift template class: ``SSID<Name>(SSIDTemplateMixin, cls)``, made once and cached.

    The class is set as an attribute of this module under its name, so it pickles by reference (ms-swift
    pickles templates into ``datasets.map`` worker processes).

    Args:
        cls: a :class:`swift.template.Template` subclass.

    Returns:
        The derived class (``cls`` itself when it already carries the mixin).
    """
    if issubclass(cls, SSIDTemplateMixin):
        return cls
    derived = _SSID_CLASSES.get(cls)
    if derived is None:
        name = f"SSID{cls.__name__}"
        if name in globals():  # another ms-swift class of the same name: qualify with its module
            name = f"SSID{cls.__name__}_{cls.__module__.rsplit('.', 1)[-1]}"
        doc = f"ms-swift's ``{cls.__module__}.{cls.__qualname__}`` with the SSID constraint."
        derived = type(name, (SSIDTemplateMixin, cls), {"__module__": __name__, "__qualname__": name, "__doc__": doc})
        globals()[name] = derived
        _SSID_CLASSES[cls] = derived
    return derived


def _renamed(meta: TemplateMeta, name: str, cls: type[Template]) -> TemplateMeta:
    """A copy of ``meta`` with a new name and class, every other field as ms-swift left it.

    Not ``dataclasses.replace``: that reruns ``TemplateMeta.__post_init__`` on fields it already rewrote, which is
    not idempotent (``mistral_nemo``'s ``{{SYSTEM}}`` prompt part would be lost and the system prompt ignored).
    """
    copied = copy.deepcopy(meta)
    copied.template_type, copied.template_cls = name, cls
    return copied


def ssid_meta(base: str, name: str | None = None) -> TemplateMeta:
    """The SSID meta for ms-swift template ``base``: its registered meta with a new name and the SSID class.

    Args:
        base: a registered ms-swift template type (e.g. ``"qwen2_vl"``).
        name: the SSID template's name; default ``ssid_<base>``.

    Raises:
        KeyError: ``base`` is not registered with ms-swift.
    """
    meta = TEMPLATE_MAPPING[base]
    return _renamed(meta, name or SSID_PREFIX + base, ssid_class(meta.template_cls))


def template_metas() -> list[TemplateMeta]:
    """The SSID template metas: one ``ssid_<T>`` per ms-swift template ``T`` registered now, plus :data:`DERIVED`.

    Each is ms-swift's registered meta (chat format, image placeholders, stop words: all ms-swift's) with a new
    name and the SSID subclass of its template class. Skipped: templates whose own name starts with ``ssid_``, and
    those ms-swift treats specially by name (:data:`NAME_SPECIAL_CASED`), whose behaviour a new name would change.
    """
    metas = []
    for name, (base, cls) in DERIVED.items():
        if not issubclass(cls, TEMPLATE_MAPPING[base].template_cls):
            raise TypeError(f"{cls.__name__} must subclass ms-swift's {TEMPLATE_MAPPING[base].template_cls.__name__}")
        metas.append(_renamed(TEMPLATE_MAPPING[base], name, cls))
    for base in list(TEMPLATE_MAPPING):
        if base.startswith(SSID_PREFIX) or SSID_PREFIX + base in DERIVED or base in NAME_SPECIAL_CASED:
            continue
        metas.append(ssid_meta(base))
    return metas


def ssid_template_names() -> list[str]:
    """The SSID templates registered in this process, the three of :data:`DERIVED` first."""
    names = [n for n in TEMPLATE_MAPPING if n.startswith(SSID_PREFIX) and n not in DERIVED]
    return [*DERIVED, *sorted(names)]


def is_ssid_template(name: str) -> bool:
    """Whether ``name`` is (or will be, once :mod:`~swift_ssid.integration.register` runs) an SSID template."""
    if name in DERIVED:
        return True
    if name in TEMPLATE_MAPPING:
        return issubclass(TEMPLATE_MAPPING[name].template_cls, SSIDTemplateMixin)
    base = name[len(SSID_PREFIX) :]
    return name.startswith(SSID_PREFIX) and base in TEMPLATE_MAPPING and base not in NAME_SPECIAL_CASED


def __getattr__(name: str) -> type[Template]:
    """Derive ``SSID<Name>`` on first access, so a derived class unpickles in a process that has not registered."""
    if name.startswith("SSID"):
        for meta in list(TEMPLATE_MAPPING.values()):
            cls = meta.template_cls
            if f"SSID{cls.__name__}" == name and not issubclass(cls, SSIDTemplateMixin):
                return ssid_class(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(meta: TemplateMeta) -> None:
    """Register one template with ms-swift; a second registration of the same name raises ValueError."""
    register_template(meta)
