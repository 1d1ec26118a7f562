"""Thumbnails of the images an index names, and of nothing else.

An image is addressed by its position among the index's images (``/images/3``), never by a path: the number is
looked up in the index, so no URL (``..``, an absolute path, an encoded slash) can name another file. The file the
index names must also lie inside the image root once every symlink is resolved (a link out of the collection is
refused), and it is decoded and re-encoded as a JPEG thumbnail, so only image pixels ever leave the server.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from swift_ssid.core.images import composite_alpha

logger = logging.getLogger(__name__)


class ImageStore:
    """The index's images by position, with their thumbnails (made on demand, the last ``cache_size`` kept).

    Args:
        index: an :class:`~swift_ssid.core.index.IdentifierIndex`.
        image_root: the collection folder: relative image paths resolve against it, and every served file
            (symlinks followed) must lie inside it.
        size: thumbnail edge in pixels.
        cache_size: thumbnails kept in memory.
    """

    def __init__(self, index: Any, image_root: str | os.PathLike, size: int = 320, cache_size: int = 512):
        self.root = Path(image_root).expanduser().resolve()
        self.images = [e.image for e in index.entries if e.identifier is not None]
        self.positions = {image: n for n, image in enumerate(self.images)}
        self.size = size
        self.cache_size = cache_size
        self._cache: OrderedDict[int, bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    def url(self, image: str) -> str | None:
        """The URL path of an image's thumbnail (``/images/<n>``), or None when the index does not name it."""
        n = self.positions.get(image)
        return None if n is None else f"/images/{n}"

    def path(self, key: str) -> Path | None:
        """The file of image number ``key`` (decimal), or None: not a number the index has, or outside the root."""
        if not (key.isascii() and key.isdigit()) or len(key) > 9 or int(key) >= len(self.images):
            return None
        raw = Path(self.images[int(key)]).expanduser()
        try:
            path = (raw if raw.is_absolute() else self.root / raw).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            logger.warning("image %s resolves to %s, outside the image root %s: not served", raw, path, self.root)
            return None
        return path

    def thumbnail(self, key: str) -> bytes | None:
        """The JPEG thumbnail of image number ``key``, or None when there is none to serve (see :meth:`path`)."""
        path = self.path(key)
        if path is None:
            return None
        n = int(key)
        with self._lock:
            if n in self._cache:
                self._cache.move_to_end(n)
                return self._cache[n]
        data = self._make(path)
        with self._lock:
            self._cache[n] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data

    def _make(self, path: Path) -> bytes | None:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im = composite_alpha(ImageOps.exif_transpose(im))
                im.thumbnail((self.size, self.size))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return None
        return buf.getvalue()
