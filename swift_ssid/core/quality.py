"""Identifier quality, measured without training a model: the numbers that explain why identifier kinds differ.

The paper leaves the quality of its identifiers unmeasured ("semantic consistency, discriminative capability,
and structural conformity ... are not quantitatively assessed", Sec. V). :func:`measure_quality` measures them
for any identifier index (every kind, SSID or baseline) and returns a :class:`QualityReport`, whose JSON has
these top-level keys (``swift-ssid quality`` writes it):

* ``conformity`` (:class:`Conformity`): share of images whose answer was ``ok`` / ``repaired`` / ``invalid``
  (with the rejection reasons), and the share of valid identifiers that are *sentence-like*.
* ``length`` (:class:`LengthStats`): words (and, with a tokenizer, tokens) per identifier.
* ``uniqueness`` (:class:`Uniqueness`): distinct share, collision groups, largest group, entropy.
* ``discriminability`` (:class:`Discriminability`): how well an identifier alone finds its own image among
  every image's captions: BM25 (lexical, bm25s) and, with a text embedder, cosine similarity; R@1/5/10.
* ``consistency`` (:class:`Consistency`, null without an embedder): similarity of an identifier to its own
  image's captions against other images' captions (mean margin, share with a positive margin).
* ``trie`` (:class:`TrieStats`, null without a tokenizer): nodes, depth and fan-out of the token trie.
* ``meta``: the index, the caption source and the embedder / tokenizer names.

Conventions used throughout:

* The *identifier of an image* is its raw canonical identifier (``raw_identifier``: what the generator
  produced, before a ``disambiguate`` suffix such as `` - 2``, which carries no meaning). Token lengths and
  the trie use the final identifiers, which are what the model generates.
* The *captions of an image* are its collection captions when a collection is given, else the caption line
  of the model's own answer in the index; an image may have none (its document is empty).
* *Ranks count ties against the identifier*: the rank of the own image is 1 + the number of other images
  scoring at least as high. An identifier that matches nothing (every score 0) ranks last, never first.

Pure module: numpy only (bm25s is imported when BM25 is computed); embedders are passed in (see
:class:`TextEmbedder`; :mod:`swift_ssid.encoders.text_embedder` has the sentence-transformers one).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from swift_ssid.core.answers import REJECTION_CODES, has_finite_be, identifier_words
from swift_ssid.core.index import IdentifierIndex, index_kind
from swift_ssid.core.jsonl import write_json_atomic
from swift_ssid.core.metrics import DEFAULT_KS

QUALITY_FORMAT = "swift_ssid.quality"
QUALITY_VERSION = 1
SENTENCE_WORDS = 5
_CHUNK = 256  # identifiers per similarity block: 256 x 123k images x 4 bytes = 126 MB at COCO size


class TextEmbedder(Protocol):
    """A text embedder: ``encode(texts)`` returns an ``[N, D]`` float array of L2-normalised rows."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# ---------------------------------------------------------------- result dataclasses


@dataclass
class Distribution:
    """Summary of a list of non-negative integers.

    ``p95`` is the nearest-rank 95th percentile (the smallest value with at least 95% of the values at or
    below it); ``histogram`` maps each value (as a string) to its count. All fields are None / {} when empty.
    """

    count: int
    mean: float | None
    median: float | None
    p95: int | None
    min: int | None
    max: int | None
    histogram: dict[str, int]


@dataclass
class Conformity:
    """How well the answers followed the three-line format (over every image of the index).

    Attributes:
        images: images in the index.
        ok, repaired, invalid: images per answer status (see :class:`swift_ssid.core.answers.SSIDRecord`);
            ``*_share`` are the same as fractions of ``images``.
        invalid_by_reason: rejection code -> images (an image can have several codes).
        repairs: repair code -> images, over ``repaired`` images.
        sentence_like: valid identifiers that read as a sentence rather than compact units: they contain a
            finite form of *be* (:func:`swift_ssid.core.answers.has_finite_be`), or have no `` - `` separator and
            at least :data:`SENTENCE_WORDS` words. ``sentence_like_share`` is over valid images.
    """

    images: int
    ok: int
    repaired: int
    invalid: int
    ok_share: float
    repaired_share: float
    invalid_share: float
    invalid_by_reason: dict[str, int]
    repairs: dict[str, int]
    sentence_like: int
    sentence_like_share: float


@dataclass
class LengthStats:
    """Identifier length per valid image: ``words`` (not counting `` - ``) and, with a tokenizer, ``tokens``.

    ``tokens`` is the length of the identifier's token sequence in the trie: the tokens the constrained
    decoder generates after ``identifier:``, including the token that closes the line.
    """

    words: Distribution
    tokens: Distribution | None = None
    tokenizer: str | None = None


@dataclass
class Uniqueness:
    """How many images share an identifier (over valid images, raw identifiers).

    Attributes:
        images: valid images.
        distinct: distinct raw identifiers; ``distinct_share`` = distinct / images (1.0: no collision).
        collision_groups: identifiers shared by two images or more; ``collision_images``: images in them.
        largest_group: images under the most shared identifier (1 without collisions).
        entropy_bits: Shannon entropy of the identifier over images, ``-sum p log2 p`` with
            ``p = images with that identifier / images``; ``normalized_entropy`` divides by ``log2(images)``
            (1.0: every image distinct; 0.0: one identifier for all).
        distinct_final: distinct identifiers after the index's collision policy (``disambiguate`` makes
            them unique; ``shared`` keeps the groups).
    """

    images: int
    distinct: int
    distinct_share: float
    collision_groups: int
    collision_images: int
    largest_group: int
    entropy_bits: float
    normalized_entropy: float
    distinct_final: int


@dataclass
class Discriminability:
    """Identifier -> image retrieval against every image's captions; R@K with ties counted against.

    Each valid image's identifier is a query; the documents are the index's images, each its captions
    joined. ``bm25`` ranks them by BM25 (bm25s, English stopwords removed); ``embedder`` by the mean
    cosine similarity of the identifier to the image's captions (images without captions rank last).
    R@K is the share of identifiers whose own image ranks within K; the rank is 1 + the number of other
    images scoring at least as high as the own image.

    Attributes:
        queries: valid images (identifiers queried).
        candidates: images ranked (all images of the index).
        images_without_captions: images whose document is empty.
        bm25: ``{"R@1": .., "R@5": .., "R@10": .., "mean_rank": ..}``.
        embedder: the same with the embedder, or None.
        embedder_name: which embedder.
    """

    queries: int
    candidates: int
    images_without_captions: int
    bm25: dict[str, float]
    embedder: dict[str, float] | None = None
    embedder_name: str | None = None


@dataclass
class Consistency:
    """Does an identifier mean its own image? Cosine similarities with a text embedder.

    For a valid image i with captions: ``own_i`` = mean similarity of i's identifier to i's captions;
    ``other_i`` = mean over the other images j that have captions of (mean similarity of i's identifier to
    j's captions); ``margin_i = own_i - other_i``. Images without captions are skipped (``skipped``).

    Attributes:
        embedder: the embedder's name.
        images: images measured.
        mean_own, mean_other, mean_margin: means over those images.
        positive_margin_share: share of images with ``margin_i > 0``.
        skipped: valid images without captions.
    """

    embedder: str
    images: int
    mean_own: float
    mean_other: float
    mean_margin: float
    positive_margin_share: float
    skipped: int


@dataclass
class TrieStats:
    """Shape of the token trie the constrained decoder walks (final identifiers, in-context tokens).

    Attributes:
        tokenizer: the tokenizer's name.
        identifiers: sequences stored (= leaves).
        nodes: nodes, the root included.
        depth_max, depth_mean: longest and mean leaf depth in tokens.
        fanout_root: distinct first tokens.
        fanout_mean: mean number of children over internal nodes; ``fanout_max``: the largest.
        forced_share: share of internal nodes with exactly one child (steps where the trie leaves the
            model no choice).
    """

    tokenizer: str
    identifiers: int
    nodes: int
    depth_max: int
    depth_mean: float
    fanout_root: int
    fanout_mean: float
    fanout_max: int
    forced_share: float


@dataclass
class QualityReport:
    """Every quality figure of one index; :meth:`to_dict` is the ``quality.json`` layout."""

    conformity: Conformity
    length: LengthStats
    uniqueness: Uniqueness
    discriminability: Discriminability | None
    consistency: Consistency | None = None
    trie: TrieStats | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (top-level keys as documented in the module docstring)."""
        out = {"format": QUALITY_FORMAT, "version": QUALITY_VERSION}
        out.update(asdict(self))
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically)."""
        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, data: Any, where: str = "quality report") -> QualityReport:
        """Rebuild a report from :meth:`to_dict`'s output; raises ValueError naming ``where`` when malformed."""
        if not isinstance(data, dict) or data.get("format") != QUALITY_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: not a quality report (format {found!r}); write it with `swift-ssid quality`")
        try:
            length = dict(data["length"])
            length["words"] = Distribution(**length["words"])
            if length.get("tokens") is not None:
                length["tokens"] = Distribution(**length["tokens"])

            def opt(klass: type, key: str) -> Any:
                return klass(**data[key]) if data.get(key) is not None else None

            return cls(
                conformity=Conformity(**data["conformity"]),
                length=LengthStats(**length),
                uniqueness=Uniqueness(**data["uniqueness"]),
                discriminability=opt(Discriminability, "discriminability"),
                consistency=opt(Consistency, "consistency"),
                trie=opt(TrieStats, "trie"),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed quality report ({e}); rewrite it with `swift-ssid quality`") from e

    @classmethod
    def load(cls, path: str | os.PathLike) -> QualityReport:
        """Read a ``quality.json``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quality file {path} not found; write it with `swift-ssid quality INDEX --out`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e}); rewrite it with `swift-ssid quality`") from e
        return cls.from_dict(data, str(path))


# ---------------------------------------------------------------- the measures


def distribution(values: Iterable[int]) -> Distribution:
    """Summarise integers (see :class:`Distribution`).

    Example:
        >>> d = distribution([1, 2, 2, 9])
        >>> (d.mean, d.median, d.p95, d.histogram)
        (3.5, 2.0, 9, {'1': 1, '2': 2, '9': 1})
    """
    xs = sorted(int(v) for v in values)
    if not xs:
        return Distribution(0, None, None, None, None, None, {})
    n = len(xs)
    median = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    p95 = xs[max(0, math.ceil(0.95 * n) - 1)]
    histogram = {str(k): v for k, v in sorted(Counter(xs).items())}
    return Distribution(n, round(sum(xs) / n, 4), float(median), p95, xs[0], xs[-1], histogram)


def is_sentence_like(identifier: str) -> bool:
    """True when an identifier reads as a sentence (see :class:`Conformity`).

    Example:
        >>> is_sentence_like("a man is riding a horse"), is_sentence_like("man - horse - beach")
        (True, False)
    """
    words = identifier_words(identifier)
    return has_finite_be(identifier) or (" - " not in identifier and words >= SENTENCE_WORDS)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def conformity(index: IdentifierIndex) -> Conformity:
    """Answer-format conformity over every image of ``index`` (see :class:`Conformity`)."""
    entries = index.entries
    status = Counter(e.status for e in entries)
    invalid_by = Counter(p for e in entries if e.status == "invalid" for p in dict.fromkeys(e.problems))
    repairs = Counter(
        p for e in entries if e.status == "repaired" for p in dict.fromkeys(e.problems) if p not in REJECTION_CODES
    )
    valid = [e.raw_identifier for e in entries if e.raw_identifier is not None]
    sentence = sum(1 for identifier in valid if is_sentence_like(identifier))
    n = len(entries)
    return Conformity(
        images=n,
        ok=status["ok"],
        repaired=status["repaired"],
        invalid=status["invalid"],
        ok_share=_share(status["ok"], n),
        repaired_share=_share(status["repaired"], n),
        invalid_share=_share(status["invalid"], n),
        invalid_by_reason={k: v for k, v in invalid_by.most_common() if k in REJECTION_CODES},
        repairs=dict(repairs.most_common()),
        sentence_like=sentence,
        sentence_like_share=_share(sentence, len(valid)),
    )


def uniqueness(index: IdentifierIndex) -> Uniqueness:
    """Collisions and entropy of the raw identifiers over valid images (see :class:`Uniqueness`)."""
    counts = Counter(e.raw_identifier for e in index.entries if e.raw_identifier is not None)
    n = sum(counts.values())
    groups = [c for c in counts.values() if c > 1]
    entropy = -sum((c / n) * math.log2(c / n) for c in counts.values()) if n else 0.0
    entropy = abs(entropy)  # -0.0 for a single identifier
    return Uniqueness(
        images=n,
        distinct=len(counts),
        distinct_share=_share(len(counts), n),
        collision_groups=len(groups),
        collision_images=sum(groups),
        largest_group=max(counts.values(), default=0),
        entropy_bits=round(entropy, 6),
        normalized_entropy=round(entropy / math.log2(n), 6) if n > 1 else (1.0 if n == 1 else 0.0),
        distinct_final=len(index),
    )


def length(
    index: IdentifierIndex, token_lengths: Mapping[str, int] | None = None, tokenizer: str | None = None
) -> LengthStats:
    """Words (and tokens) per valid image's identifier (see :class:`LengthStats`).

    Args:
        index: the index.
        token_lengths: final identifier -> tokens in its trie sequence (e.g. from the decoding layer).
        tokenizer: the tokenizer's name, recorded with the token lengths.
    """
    valid = [e for e in index.entries if e.identifier is not None]
    words = distribution(identifier_words(e.raw_identifier or e.identifier) for e in valid)
    tokens = None
    if token_lengths is not None:
        missing = [e.identifier for e in valid if e.identifier not in token_lengths]
        if missing:
            raise ValueError(f"no token length for identifier(s) {missing[:3]}; tokenise every identifier")
        tokens = distribution(token_lengths[e.identifier] for e in valid)
    return LengthStats(words=words, tokens=tokens, tokenizer=tokenizer if token_lengths is not None else None)


def trie_stats(keys: np.ndarray, vocab_size: int, leaf_depths: Sequence[int], tokenizer: str) -> TrieStats:
    """Shape of a token trie stored as :class:`swift_ssid.decoding.trie.TokenTrie` keys.

    Args:
        keys: the trie's sorted ``int64`` keys (``parent * vocab_size + token`` for every node but the root).
        vocab_size: ``V`` of the keys.
        leaf_depths: the token length of every stored sequence (the leaves' depths).
        tokenizer: name recorded in the result.
    """
    parents = np.asarray(keys, dtype=np.int64) // int(vocab_size)
    fanout = np.bincount(parents, minlength=1) if parents.size else np.zeros(1, dtype=np.int64)
    internal = fanout[fanout > 0]
    depths = list(leaf_depths)
    return TrieStats(
        tokenizer=tokenizer,
        identifiers=len(depths),
        nodes=int(parents.size) + 1,
        depth_max=max(depths, default=0),
        depth_mean=round(sum(depths) / len(depths), 4) if depths else 0.0,
        fanout_root=int(fanout[0]),
        fanout_mean=round(float(internal.mean()), 4) if internal.size else 0.0,
        fanout_max=int(internal.max()) if internal.size else 0,
        forced_share=_share(int((internal == 1).sum()), int(internal.size)),
    )


def image_captions(
    index: IdentifierIndex, collection: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[list[str]], str]:
    """The captions of each index image, in index order, and where they came from.

    Args:
        index: the index.
        collection: image path -> captions (e.g. from :func:`swift_ssid.core.collection.load_collection`);
            an index image is matched by its path as stored or made absolute. Without it, each image's
            caption line in the index is used.

    Returns:
        ``(captions per image, source)`` with source ``"collection"`` or ``"index caption line"``.
    """
    out: list[list[str]] = []
    if collection is None:
        for e in index.entries:
            out.append([e.caption] if e.caption and e.caption.strip() else [])
        return out, "index caption line"
    for e in index.entries:
        found = collection.get(e.image)
        if found is None:
            found = collection.get(os.path.normpath(os.path.abspath(e.image)), ())
        out.append([c for c in found if c and c.strip()])
    return out, "collection"


def pessimistic_ranks(scores: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Rank of each row's own column: 1 + other columns scoring at least as high.

    Args:
        scores: ``[Q, N]`` scores of Q queries against N candidates.
        own: ``[Q]`` column of each query's own candidate.

    Example:
        >>> pessimistic_ranks(np.array([[0.5, 0.5, 0.1], [0.0, 0.0, 0.0]]), np.array([0, 2]))
        array([2, 3])
    """
    own_scores = scores[np.arange(len(own)), own]
    return (scores >= own_scores[:, None]).sum(axis=1)


def _recall(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    ranks = np.asarray(ranks)
    out = {f"R@{k}": round(float((ranks <= k).mean()), 6) if ranks.size else 0.0 for k in ks}
    out["mean_rank"] = round(float(ranks.mean()), 4) if ranks.size else 0.0
    return out


def bm25_ranks(
    queries: Sequence[str], own: Sequence[int], documents: Sequence[str], progress: bool = False
) -> np.ndarray:
    """Rank of each query's own document under BM25 (bm25s; English stopwords; ties against the query).

    Args:
        queries: query texts (identifiers).
        own: the index of each query's own document.
        documents: one text per candidate (may be empty).
        progress: show a tqdm bar over the queries.

    Returns:
        ``[Q]`` ranks, 1 = first.
    """
    import bm25s

    n = len(documents)
    corpus = bm25s.tokenize(list(documents), stopwords="en", show_progress=False)
    if not any(corpus.ids):  # no document has a content word: every image ties at 0
        return np.full(len(queries), n, dtype=np.int64)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    vocab = corpus.vocab
    from tqdm.auto import tqdm

    ranks = np.empty(len(queries), dtype=np.int64)
    pairs = tqdm(zip(tokens, own, strict=True), total=len(queries), desc="BM25", disable=not progress)
    for i, (query_tokens, own_doc) in enumerate(pairs):
        known = [t for t in query_tokens if t in vocab]
        if not known:
            ranks[i] = n  # matches no document: every image ties at 0, the own one counts last
            continue
        scores = np.asarray(retriever.get_scores(known), dtype=np.float64)
        ranks[i] = int((scores >= scores[own_doc]).sum())
    return ranks


def _embedding_measures(
    identifiers: Sequence[str], own: Sequence[int], captions: Sequence[Sequence[str]], embedder: TextEmbedder
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Ranks (for discriminability) and (own, other) similarities (for consistency), in chunks of identifiers.

    The mean cosine similarity of a unit vector to an image's captions equals its dot product with the
    mean of the captions' unit embeddings, so each image is one vector and the work is ``[Q, N]``.
    """
    counts = np.array([len(caps) for caps in captions], dtype=np.int64)
    has = counts > 0
    flat = [c for caps in captions for c in caps]
    id_emb = np.asarray(embedder.encode(list(identifiers)), dtype=np.float32)
    image_emb = np.zeros((len(captions), id_emb.shape[1]), dtype=np.float32)
    if flat:
        cap_emb = np.asarray(embedder.encode(flat), dtype=np.float32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[has]
        image_emb[has] = np.add.reduceat(cap_emb, starts, axis=0) / counts[has, None]
    ranks = np.empty(len(identifiers), dtype=np.int64)
    sims: list[tuple[float, float]] = []
    own = np.asarray(own, dtype=np.int64)
    others = int(has.sum()) - 1
    for start in range(0, len(identifiers), _CHUNK):
        per_image = id_emb[start : start + _CHUNK] @ image_emb.T  # [chunk, images], float32
        # An image without captions has no similarity: -inf, so it never outranks a captioned own image.
        scored = np.where(has[None, :], per_image, -np.inf)
        chunk_own = own[start : start + len(per_image)]
        ranks[start : start + len(per_image)] = pessimistic_ranks(scored, chunk_own)
        totals = per_image[:, has].sum(axis=1, dtype=np.float64)
        for row, total, j in zip(per_image, totals, chunk_own, strict=True):
            if has[j]:
                other = float((total - row[j]) / others) if others > 0 else float("nan")
                sims.append((float(row[j]), other))
    return ranks, sims


def measure_quality(
    index: IdentifierIndex,
    *,
    collection: Mapping[str, Sequence[str]] | None = None,
    embedder: TextEmbedder | None = None,
    token_lengths: Mapping[str, int] | None = None,
    trie: TrieStats | None = None,
    tokenizer: str | None = None,
    discriminability_bm25: bool = True,
    meta: Mapping[str, Any] | None = None,
    index_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> QualityReport:
    """Measure every quality figure of an index (see the module docstring for each definition).

    Args:
        index: the identifier index.
        collection: image path -> captions; default: the index's own caption lines.
        embedder: a :class:`TextEmbedder` for the embedding-based discriminability and the consistency.
        token_lengths: final identifier -> trie tokens (with ``tokenizer``), for ``length.tokens``.
        trie: :func:`trie_stats` of the index's trie.
        tokenizer: the tokenizer's name.
        discriminability_bm25: compute the BM25 discriminability (the only part that needs bm25s).
        meta: extra entries for the report's ``meta``.
        index_dir: the index folder, whose ``index_meta.json`` names the identifier kind (``meta.kind``).
        progress: show progress bars for the long steps.

    Returns:
        The :class:`QualityReport`.

    Raises:
        ValueError: the index has no image, or a collection is given but matches none of its images.
    """
    if not index.entries:
        raise ValueError("the index has no image; build it first (swift-ssid build-index)")
    captions, source = image_captions(index, collection)
    if collection is not None and not any(captions):
        first = index.entries[0].image
        raise ValueError(
            f"the collection has captions for none of the index's {len(index.entries)} images (first: {first!r}); "
            "pass the collection the index was built from (image paths must match as stored or made absolute)"
        )
    position = {e.image: i for i, e in enumerate(index.entries)}
    valid = [e for e in index.entries if e.raw_identifier is not None]
    queries = [e.raw_identifier for e in valid]
    own = [position[e.image] for e in valid]
    without = sum(1 for caps in captions if not caps)

    disc = None
    consistency = None
    if valid and (discriminability_bm25 or embedder is not None):
        documents = [" ".join(c) for c in captions]
        bm25 = _recall(bm25_ranks(queries, own, documents, progress)) if discriminability_bm25 else {}
        disc = Discriminability(len(valid), len(captions), without, bm25)
    if embedder is not None and valid:
        ranks, sims = _embedding_measures(queries, own, captions, embedder)
        disc.embedder = _recall(ranks)
        disc.embedder_name = embedder.name
        measured = [(o, t) for o, t in sims if not math.isnan(t)]
        margins = [o - t for o, t in measured]
        consistency = Consistency(
            embedder=embedder.name,
            images=len(measured),
            mean_own=round(float(np.mean([o for o, _ in measured])), 6) if measured else 0.0,
            mean_other=round(float(np.mean([t for _, t in measured])), 6) if measured else 0.0,
            mean_margin=round(float(np.mean(margins)), 6) if margins else 0.0,
            positive_margin_share=_share(sum(1 for m in margins if m > 0), len(margins)),
            skipped=len(valid) - len(measured),
        )
    info = {
        "kind": index_kind(index_dir) if index_dir is not None else None,
        "images": len(index.entries),
        "policy": index.policy,
        "captions": source,
        "embedder": embedder.name if embedder is not None else None,
        "tokenizer": tokenizer,
    }
    info.update(meta or {})
    return QualityReport(
        conformity=conformity(index),
        length=length(index, token_lengths, tokenizer),
        uniqueness=uniqueness(index),
        discriminability=disc,
        consistency=consistency,
        trie=trie,
        meta=info,
    )
