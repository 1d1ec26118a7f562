"""A transformers dual encoder (CLIP, SigLIP, any model with ``get_image_features``/``get_text_features``).

Example:
    >>> enc = DualEncoder("/models/clip-vit-large-patch14")  # doctest: +SKIP
    >>> img = enc.embed_images(["a.jpg", "b.png"], cache="emb.npz")  # [2, D] float32, L2-normalised  # doctest: +SKIP
    >>> txt = enc.embed_texts(["a dog on a beach"])  # doctest: +SKIP
    >>> scores = txt @ img.T  # doctest: +SKIP

Image embeddings are cached in one ``.npz`` file keyed by :attr:`DualEncoder.fingerprint`, the image paths, the
dtype and the background colour; a run that stops part-way leaves finished chunks in ``<cache>.parts/`` and the
next call with the same key resumes from them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json")
_CHUNK = 1024  # images per resumable cache chunk


class DualEncoder:
    """Image and text embeddings from a local transformers dual encoder.

    Args:
        path: Model folder (``config.json``, weights, tokenizer, image processor), loaded offline.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: torch dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``).
        batch_size: Images or texts per forward pass.
    """

    def __init__(
        self, path: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 32
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"encoder folder {self.path} has no config.json: pass --encoder <folder of a transformers dual "
                "encoder such as CLIP or SigLIP, saved with save_pretrained>"
            )
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype: use float32, float16 or bfloat16")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be at least 1")
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.model = AutoModel.from_pretrained(str(self.path), dtype=getattr(torch, dtype)).to(device).eval()
        for name in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, name):
                raise ValueError(
                    f"model at {self.path} ({type(self.model).__name__}) has no {name}: use a dual encoder "
                    "(CLIP, SigLIP, ...)"
                )
        self.image_processor = AutoImageProcessor.from_pretrained(str(self.path))
        self._tokenizer: Any = None
        self.fingerprint: str = encoder_fingerprint(self.path)

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer, loaded on first use (image-only callers never need it)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        return self._tokenizer

    def embed_images(
        self,
        images: Sequence[str],
        *,
        cache: str | os.PathLike | None = None,
        background: tuple[int, int, int] = (255, 255, 255),
        progress: bool = True,
    ) -> np.ndarray:
        """Embed image files with ``model.get_image_features``.

        Args:
            images: Image file paths.
            cache: ``.npz`` file to reuse or write (None: no cache). A file made for other images or another
                encoder is recomputed and overwritten; finished chunks of an interrupted run are reused.
            background: RGB colour that transparent pixels (RGBA, LA, palette transparency) are composited onto.
            progress: Show a tqdm bar.

        Returns:
            ``[len(images), D]`` float32, rows L2-normalised.
        """
        images = [str(p) for p in images]
        key = self._cache_key(images, background)
        cache_path = Path(cache) if cache is not None else None
        if cache_path is not None and cache_path.is_file():
            cached = _load_cache(cache_path, key)
            if cached is not None:
                return cached
        parts = _parts_dir(cache_path, key) if cache_path is not None else None
        if parts is not None:
            parts.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        chunks: list[np.ndarray] = []
        bar = tqdm(total=len(images), desc="embed images", unit="img", disable=not progress)
        for start in range(0, len(images), _CHUNK):
            part = parts / f"{start:09d}.npy" if parts is not None else None
            if part is not None and part.is_file():
                chunk = np.load(part)
                bar.update(len(chunk))
            else:
                chunk = self._embed_image_chunk(images[start : start + _CHUNK], background, bar)
                if part is not None:
                    _atomic_save_npy(part, chunk)
            chunks.append(chunk)
        bar.close()
        dim = self._embedding_dim()
        out = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, dim), np.float32)
        if cache_path is not None:
            _save_cache(cache_path, key, out)
            shutil.rmtree(parts, ignore_errors=True)  # type: ignore[arg-type]
            try:
                parts.parent.rmdir()  # type: ignore[union-attr]
            except OSError:
                pass
        return out

    def embed_texts(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        """Embed texts with ``model.get_text_features`` (truncated to the text model's length).

        Args:
            texts: Strings to embed.
            progress: Show a tqdm bar.

        Returns:
            ``[len(texts), D]`` float32, rows L2-normalised.
        """
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        # SigLIP was trained on max_length-padded text; CLIP pads to the longest in the batch.
        padding = "max_length" if "siglip" in str(self.model.config.model_type) else True
        max_len = _text_max_length(self.model.config, self.tokenizer)
        rows = []
        for start in tqdm(
            range(0, len(texts), self.batch_size), desc="embed texts", unit="batch", disable=not progress
        ):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=padding,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                feats = _features(self.model.get_text_features(**batch))
            rows.append(_normalise(feats))
        return np.concatenate(rows, axis=0) if rows else np.zeros((0, self._embedding_dim()), np.float32)

    # -- internals -------------------------------------------------------------------------------------------

    def _embed_image_chunk(self, paths: list[str], background: tuple[int, int, int], bar: Any) -> np.ndarray:
        import torch

        rows = []
        for start in range(0, len(paths), self.batch_size):
            batch = [load_rgb(p, background) for p in paths[start : start + self.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, dtype=self.model.dtype)
            with torch.inference_mode():
                feats = _features(self.model.get_image_features(pixel_values=pixels))
            rows.append(_normalise(feats))
            bar.update(len(batch))
        return np.concatenate(rows, axis=0)

    def _cache_key(self, images: list[str], background: tuple[int, int, int]) -> str:
        h = hashlib.sha256()
        h.update(f"{self.fingerprint}\n{self.dtype}\n{tuple(background)}\n".encode())
        for p in images:
            h.update(p.encode("utf-8") + b"\n")
        return h.hexdigest()

    def _embedding_dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "projection_dim", None) or cfg.vision_config.hidden_size)


def encoder_fingerprint(path: str | os.PathLike) -> str:
    """Stable hash of an encoder folder: its config files' contents and its weight files' names and sizes.

    Args:
        path: Model folder.

    Returns:
        A 16-hex-digit digest.
    """
    root = Path(path)
    h = hashlib.sha256()
    for name in _CONFIG_FILES:
        f = root / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    for f in sorted(root.iterdir()):
        if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES):
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def load_rgb(path: str | os.PathLike, background: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Open an image as RGB, compositing any transparency onto ``background``.

    Args:
        path: Image file.
        background: RGB colour behind transparent pixels.

    Returns:
        A PIL RGB image.
    """
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}; check --image-root and the collection's paths") from exc
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def _features(out: Any) -> Any:
    """The embedding tensor from a ``get_*_features`` return: a tensor or a ModelOutput (``pooler_output``)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0]


def _normalise(feats: Any) -> np.ndarray:
    arr = feats.detach().float().cpu().numpy()
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, 1e-12)).astype(np.float32)


def _text_max_length(config: Any, tokenizer: Any) -> int:
    text_cfg = getattr(config, "text_config", config)
    limit = getattr(text_cfg, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        return tok_limit
    return int(limit)


def _parts_dir(cache: Path, key: str) -> Path:
    return cache.with_name(cache.name + ".parts") / key[:16]


def _load_cache(path: Path, key: str) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return data["embeddings"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None


def _save_cache(path: Path, key: str, embeddings: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=np.array(key), embeddings=embeddings)
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def describe(encoder: DualEncoder) -> dict[str, Any]:
    """JSON-ready description of an encoder for stats/meta records."""
    return {
        "path": str(encoder.path),
        "fingerprint": encoder.fingerprint,
        "model_type": encoder.model.config.model_type,
    }


__all__ = ["DualEncoder", "describe", "encoder_fingerprint", "load_rgb"]
