"""Deterministic, realistic SSID-style identifiers built from real Flickr30K caption text.

An identifier is 2-3 segments joined by `` - `` (the paper's format: ``two white males - bushes``,
``man - orange hat - glasses``), 3-6 words in all. Segments are the 1-3 word runs of content
words (no stop words) that occur in the captions, sampled with their caption frequency, so the
first words (the trie root's fan-out) and shared prefixes follow real caption statistics.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = REPO_ROOT.parent / "shared" / "data" / "flickr30k_karpathy_test_captions.txt"

STOP_WORDS = frozenset(
    "a an the is are was were be been being in on of with and or at to by for from into onto over under "
    "near while his her their its it he she they them this that these those who which as out up down off "
    "some one's there here has have having other another each".split()
)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")


def caption_segments(captions: list[str]) -> Counter[str]:
    """Count every run of 1-3 adjacent content words in ``captions`` (lower-cased, stop words split runs).

    Args:
        captions: caption lines.

    Returns:
        segment text -> number of occurrences.
    """
    counts: Counter[str] = Counter()
    for caption in captions:
        run: list[str] = []
        for word in [*_WORD.findall(caption.lower()), ""]:
            if word and word not in STOP_WORDS:
                run.append(word)
                continue
            for n in (1, 2, 3):
                for i in range(len(run) - n + 1):
                    counts[" ".join(run[i : i + n])] += 1
            run = []
    return counts


def make_identifiers(n: int, seed: int = 0, captions_path: Path = CAPTIONS) -> list[str]:
    """``n`` unique identifiers, always the same for the same ``n`` prefix and ``seed``.

    The list for a larger ``n`` starts with the list for a smaller one (same seed), so every
    benchmark size is a subset of the next.

    Args:
        n: number of identifiers.
        seed: random seed.
        captions_path: the Flickr30K caption file (read from ``../shared/data``, never copied).

    Returns:
        ``n`` distinct identifiers, 2-3 segments and 3-6 words each.
    """
    if not captions_path.is_file():
        raise FileNotFoundError(f"missing {captions_path}: the benchmark reads captions from ../shared/data")
    captions = [line for line in captions_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts = caption_segments(captions)
    segments = sorted(counts)  # fixed order, so sampling is reproducible across Python versions
    weights = np.array([counts[s] for s in segments], dtype=np.float64)
    weights /= weights.sum()
    n_words = np.array([s.count(" ") + 1 for s in segments])
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        batch = 1 << 16  # fixed draw size: the stream of identifiers does not depend on n
        parts = rng.choice(len(segments), size=(batch, 3), p=weights)
        k = rng.integers(2, 4, size=batch)  # 2 or 3 segments
        words = n_words[parts[:, 0]] + n_words[parts[:, 1]] + np.where(k == 3, n_words[parts[:, 2]], 0)
        ok = (words >= 3) & (words <= 6)
        ok &= parts[:, 0] != parts[:, 1]
        for row, kk in zip(parts[ok].tolist(), k[ok].tolist(), strict=True):
            out.setdefault(" - ".join(segments[j] for j in row[:kk]), None)
            if len(out) == n:
                break
    return list(out)
