"""DualEncoder on a tiny random CLIP built from config: shapes, normalisation, cache reuse and resume, alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swift_ssid.encoders import DualEncoder
from swift_ssid.encoders import dual_encoder as de
from swift_ssid.testing.tiny_models import DEMO_DIR, build_tiny_clip

DEMO_IMAGES = sorted(str(p) for p in (DEMO_DIR / "images").iterdir())


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def encoder(clip_dir) -> DualEncoder:
    return DualEncoder(clip_dir, batch_size=5)


def test_image_and_text_embeddings_are_normalised_and_deterministic(encoder, clip_dir):
    x = encoder.embed_images(DEMO_IMAGES, progress=False)
    assert x.shape == (len(DEMO_IMAGES), 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in x}) == len(DEMO_IMAGES)  # distinct images, distinct rows
    again = DualEncoder(clip_dir, batch_size=3).embed_images(DEMO_IMAGES, progress=False)
    np.testing.assert_allclose(x, again, atol=1e-5)  # batch size does not change the result
    t = encoder.embed_texts(["A dog runs on the beach.", "a man", "A dog runs on the beach."], progress=False)
    assert t.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t[0], t[2], atol=1e-6)
    assert not np.allclose(t[0], t[1])


def test_fingerprint_is_stable_and_tracks_the_weights(clip_dir, tmp_path, encoder):
    assert de.encoder_fingerprint(clip_dir) == encoder.fingerprint
    other = build_tiny_clip(tmp_path / "other", seed=1)
    assert de.encoder_fingerprint(other) == encoder.fingerprint  # same config and file sizes: same fingerprint
    (other / "config.json").write_text(
        (other / "config.json").read_text().replace('"projection_dim": 32', '"projection_dim": 16')
    )
    assert de.encoder_fingerprint(other) != encoder.fingerprint


def test_cache_is_reused_keyed_and_resumed(encoder, tmp_path, monkeypatch):
    cache = tmp_path / "emb.npz"
    first = encoder.embed_images(DEMO_IMAGES, cache=cache, progress=False)
    assert cache.is_file() and not (tmp_path / "emb.npz.parts").exists()
    # A reused cache is read, not recomputed: plant a marker value under the same key.
    with np.load(cache) as data:
        key = str(data["key"])
    marked = first.copy()
    marked[0, 0] = 7.0
    de._save_cache(cache, key, marked)
    assert encoder.embed_images(DEMO_IMAGES, cache=cache, progress=False)[0, 0] == 7.0
    # Other images: another key, recomputed and overwritten.
    fewer = encoder.embed_images(DEMO_IMAGES[:4], cache=cache, progress=False)
    np.testing.assert_allclose(fewer, first[:4], atol=1e-5)
    # Resume: chunks of 5, the first chunk already on disk (marked) from an interrupted run.
    monkeypatch.setattr(de, "_CHUNK", 5)
    resumed_cache = tmp_path / "resume.npz"
    parts = de._parts_dir(resumed_cache, encoder._cache_key(DEMO_IMAGES, (255, 255, 255)))
    parts.mkdir(parents=True)
    done = first[:5].copy()
    done[:, 0] = 9.0
    np.save(parts / f"{0:09d}.npy", done)
    resumed = encoder.embed_images(DEMO_IMAGES, cache=resumed_cache, progress=False)
    assert (resumed[:5, 0] == 9.0).all()
    np.testing.assert_allclose(resumed[5:], first[5:], atol=1e-5)
    assert not parts.exists()


def test_transparent_pixels_take_the_background(encoder, tmp_path):
    from PIL import Image

    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (40, 40), (255, 255, 255)).save(tmp_path / "white.png")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(tmp_path / "blue.png")
    x = encoder.embed_images([str(tmp_path / n) for n in ("clear.png", "white.png", "blue.png")], progress=False)
    np.testing.assert_allclose(x[0], x[1], atol=1e-5)
    blue_bg = encoder.embed_images([str(tmp_path / "clear.png")], background=(0, 0, 255), progress=False)
    np.testing.assert_allclose(blue_bg[0], x[2], atol=1e-5)


def test_bad_inputs_name_the_fix(tmp_path, encoder):
    with pytest.raises(FileNotFoundError, match="--encoder"):
        DualEncoder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        encoder.embed_images([str(tmp_path / "broken.jpg")], progress=False)
