"""Dual encoders (CLIP, SigLIP, ...) through transformers: image and text embeddings, cached on disk.

This layer uses torch + transformers only (no ms-swift); it may import ``swift_ssid.core`` and
``swift_ssid.decoding``.
"""

from swift_ssid.encoders.dual_encoder import DualEncoder

__all__ = ["DualEncoder"]
