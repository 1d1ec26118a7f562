"""Every ``SSID_*`` setting, read from the environment in one place.

ms-swift refuses unknown flags and imports plugins after parsing its arguments, so a plugin's settings
travel as environment variables (a recipe's ``ENV:`` block sets them). This module is the only one that
names them; everything else takes an :class:`SSIDSettings` object.

- ``SSID_INDEX``: identifier index folder; with it set, every SSID-template generation is trie-constrained
- ``SSID_TARGET``: ``reason`` (default: identifier line, then a reason line) or ``noreason`` (identifier only)
- ``SSID_INFER_REASON``: ``true`` (default) or ``false``: only the end of response may follow the identifier line
- ``SSID_COLLECTION``: the images and captions: Karpathy JSON or a collection ``.jsonl``
- ``SSID_IMAGE_ROOT``: the folder image paths are relative to (default: the collection's)
- ``SSID_PROTOCOL``: ``standard`` (memorise every image, the paper and GRACE) or ``zeroshot``
- ``SSID_TRAIN_SIZE``: only the first N training images (default: all)
- ``SSID_SKIP_INVALID``: ``true``: leave out the collection rows ``swift-ssid check`` flags (each one logged);
  default ``false``: such a row stops the dataset with its ``file:line`` and the fix
- ``SSID_ALPHA_BACKGROUND``: the colour transparent image areas are composited onto (default ``#ffffff``, white;
  any PIL colour), identically in generation, training, retrieval and the report

Pure module: no torch, no ms-swift.

Example:
    >>> s = SSIDSettings.from_env({"SSID_TARGET": "noreason", "SSID_TRAIN_SIZE": "100"})
    >>> s.target, s.infer_reason, s.train_size, s.enabled
    ('noreason', False, 100, False)
    >>> SSIDSettings.env_var("collection")
    'SSID_COLLECTION'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, Literal

from swift_ssid.core.checks import check_collection
from swift_ssid.core.collection import CollectionItem, load_collection
from swift_ssid.core.images import DEFAULT_BACKGROUND, parse_background
from swift_ssid.core.index import INDEX_FILE, IdentifierIndex
from swift_ssid.core.rows import PROTOCOLS

Target = Literal["reason", "noreason"]
TARGETS: tuple[str, ...] = ("reason", "noreason")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

logger = logging.getLogger(__name__)

ENV_VARS: dict[str, str] = {
    "index_dir": "SSID_INDEX",
    "target": "SSID_TARGET",
    "infer_reason": "SSID_INFER_REASON",
    "collection": "SSID_COLLECTION",
    "image_root": "SSID_IMAGE_ROOT",
    "protocol": "SSID_PROTOCOL",
    "train_size": "SSID_TRAIN_SIZE",
    "skip_invalid": "SSID_SKIP_INVALID",
    "alpha_background": "SSID_ALPHA_BACKGROUND",
}
"""Settings field -> environment variable."""

ENV_KEYS: tuple[str, ...] = tuple(ENV_VARS.values())
"""Every environment variable the plugin reads."""


@dataclass(frozen=True)
class SSIDSettings:
    """The plugin's settings (see the module docstring for each variable).

    Args:
        index_dir: identifier index folder (holds ``index.jsonl``), or None: unconstrained generation.
        target: ``reason`` or ``noreason``.
        infer_reason: let the model write the reason line at inference (forced False for ``noreason``).
        collection: the collection file, or None when unset.
        image_root: the image folder, or None for the collection's default.
        protocol: ``standard`` or ``zeroshot``.
        train_size: only the first N training images, or None for all.
        skip_invalid: leave out the rows :func:`swift_ssid.core.checks.check_collection` flags (logged).
        alpha_background: the colour transparency is composited onto (:mod:`swift_ssid.core.images`).
    """

    index_dir: Path | None = None
    target: Target = "reason"
    infer_reason: bool = True
    collection: str | None = None
    image_root: str | None = None
    protocol: str = "standard"
    train_size: int | None = None
    skip_invalid: bool = False
    alpha_background: str = DEFAULT_BACKGROUND

    ENV: ClassVar[dict[str, str]] = ENV_VARS

    def __post_init__(self) -> None:
        env = self.ENV
        if self.target not in TARGETS:
            raise ValueError(
                f"{env['target']}={self.target!r} is not valid; use one of {', '.join(TARGETS)} "
                "(reason: the target has a reason line after the identifier; noreason: it ends after the identifier)"
            )
        if not isinstance(self.infer_reason, bool):
            raise ValueError(f"{env['infer_reason']} must be true or false, got {self.infer_reason!r}")
        if not isinstance(self.skip_invalid, bool):
            raise ValueError(f"{env['skip_invalid']} must be true or false, got {self.skip_invalid!r}")
        try:
            parse_background(self.alpha_background)
        except ValueError as e:
            raise ValueError(f"{env['alpha_background']}={self.alpha_background!r}: {e}") from None
        if self.target == "noreason" and self.infer_reason:
            object.__setattr__(self, "infer_reason", False)  # no reason line exists to infer
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"{env['protocol']}={self.protocol!r} is not a protocol; use one of {', '.join(PROTOCOLS)}"
            )
        if self.train_size is not None and (
            isinstance(self.train_size, bool) or not isinstance(self.train_size, int) or self.train_size < 0
        ):
            raise ValueError(
                f"{env['train_size']}={self.train_size!r} must be a whole number >= 0 "
                "(or unset for all training images)"
            )
        for name in ("collection", "image_root"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        if self.index_dir is not None:
            index_dir = Path(self.index_dir).expanduser().resolve()
            if not (index_dir / INDEX_FILE).is_file():
                raise ValueError(
                    f"{env['index_dir']}={str(self.index_dir)!r} is not an identifier index directory (no {INDEX_FILE} "
                    f"in {index_dir}); build one with `swift-ssid build-index`, or unset {env['index_dir']} for "
                    "unconstrained generation"
                )
            object.__setattr__(self, "index_dir", index_dir)

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable of a settings field (``collection`` -> ``SSID_COLLECTION``)."""
        return cls.ENV[field]

    @classmethod
    def is_set(cls, field: str, environ: Mapping[str, str] | None = None) -> bool:
        """Whether the environment sets a field explicitly (a blank value counts as unset, as in :meth:`from_env`).

        >>> [SSIDSettings.is_set("target", {"SSID_TARGET": value}) for value in (" ", "noreason")]
        [False, True]
        """
        env = os.environ if environ is None else environ
        return bool(env.get(cls.ENV[field], "").strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, ignore: tuple[str, ...] = ()) -> SSIDSettings:
        """Read every ``SSID_*`` variable (blank counts as unset).

        Args:
            environ: the environment to read (defaults to ``os.environ``).
            ignore: settings fields to leave at their defaults (e.g. ``("index_dir",)`` to validate the rest of
                a recipe's environment before its index exists).

        Raises:
            ValueError: a value is not one of the documented ones (the message names the variable, the value
                seen and the accepted values).
        """
        env = os.environ if environ is None else environ

        def get(field: str) -> str | None:
            if field in ignore:
                return None
            value = env.get(cls.ENV[field], "").strip()
            return value or None

        target = (get("target") or "reason").lower()
        if target not in TARGETS:
            raise ValueError(f"{cls.ENV['target']}={get('target')!r} is not valid; use one of {', '.join(TARGETS)}")
        raw_reason = (get("infer_reason") or "").lower()
        if raw_reason in ("", *_TRUE):
            infer_reason = True
        elif raw_reason in _FALSE:
            infer_reason = False
        else:
            raise ValueError(
                f"{cls.ENV['infer_reason']}={get('infer_reason')!r} is not valid; use true or false "
                "(false: only the end of the response may follow the identifier line)"
            )
        if target == "noreason" and raw_reason in _TRUE:
            raise ValueError(
                f"{cls.ENV['infer_reason']}={get('infer_reason')!r} needs {cls.ENV['target']}=reason, but "
                f"{cls.ENV['target']}=noreason has no reason line; unset {cls.ENV['infer_reason']} or set it to false"
            )
        size: int | None = None
        if (raw_size := get("train_size")) is not None:
            try:
                size = int(raw_size)
            except ValueError:
                raise ValueError(
                    f"{cls.ENV['train_size']}={raw_size!r} is not a whole number; set e.g. "
                    f"{cls.ENV['train_size']}=1000 or unset it for all training images"
                ) from None
        raw_skip = (get("skip_invalid") or "false").lower()
        if raw_skip not in (*_TRUE, *_FALSE):
            raise ValueError(
                f"{cls.ENV['skip_invalid']}={get('skip_invalid')!r} is not valid; use true (leave out the rows "
                "`swift-ssid check` flags) or false"
            )
        index = get("index_dir")
        return cls(
            skip_invalid=raw_skip in _TRUE,
            alpha_background=get("alpha_background") or DEFAULT_BACKGROUND,
            index_dir=Path(index) if index else None,
            target=target,  # type: ignore[arg-type]
            infer_reason=infer_reason,
            collection=get("collection"),
            image_root=get("image_root"),
            protocol=get("protocol") or "standard",
            train_size=size,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for a subprocess or a recipe's ``ENV:``).

        Every variable is present; unset settings are blank, so a caller's own ``SSID_*`` cannot leak in.
        """
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            out[self.ENV[f.name]] = "" if value is None else str(value)
        return out

    @property
    def enabled(self) -> bool:
        """True when an index is configured (generation is constrained)."""
        return self.index_dir is not None

    @property
    def reason_label(self) -> str:
        """The paper's Table III row for these settings, as run rows record it in ``setting.reason``.

        ``train+infer`` (reason target, reason generated), ``train-only`` (reason target, the response ends after the
        identifier line) or ``none`` (identifier-only target).
        """
        if self.target == "noreason":
            return "none"
        return "train+infer" if self.infer_reason else "train-only"

    @property
    def trie_end(self) -> Literal["newline", "eos"]:
        """How the identifier's token sequences end in the trie: ``newline`` (reason target) or ``eos``."""
        return "newline" if self.target == "reason" else "eos"

    def load_collection(self) -> list[CollectionItem]:
        """Read the collection, or raise ValueError when ``SSID_COLLECTION`` is unset."""
        if self.collection is None:
            raise ValueError(
                f"{self.ENV['collection']} is not set: set it in the recipe's ENV: block or export it, e.g. "
                f"{self.ENV['collection']}=data/dataset_flickr30k.json {self.ENV['image_root']}=data/flickr30k-images"
            )
        try:
            if self.skip_invalid:
                return self._checked_collection()
            return load_collection(self.collection, self.image_root)
        except (OSError, ValueError) as e:  # name the settings the user wrote, keep the error's type
            env = f"{self.ENV['collection']}={self.collection} {self.ENV['image_root']}={self.image_root or ''}"
            raise type(e)(f"{e} (from {env})") from None

    def _checked_collection(self) -> list[CollectionItem]:
        """The rows ``swift-ssid check`` finds usable; each left-out row is logged with its problem and fix."""
        report = check_collection(self.collection, self.image_root)
        for problem in report.problems:
            logger.warning("%s=true: leaving out %s", self.ENV["skip_invalid"], problem.line())
        if report.problems:
            logger.warning("%s (run `swift-ssid check` for the list as a file)", report.summary())
        if not report.items:
            raise ValueError(f"{report.summary()}: no usable row; fix the collection (`swift-ssid check`)")
        return report.items

    def load_index(self) -> IdentifierIndex:
        """Read the identifier index, or raise ValueError when ``SSID_INDEX`` is unset."""
        if self.index_dir is None:
            raise ValueError(
                f"{self.ENV['index_dir']} is not set: memorise/retrieve rows need the identifier index; build it "
                f"with `swift-ssid build-index` and set {self.ENV['index_dir']}=<its directory>"
            )
        return IdentifierIndex.load(self.index_dir)
