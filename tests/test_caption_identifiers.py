"""The caption-derived fallback identifier source."""

from __future__ import annotations

from swift_ssid.core.answers import MAX_IDENTIFIER_WORDS, canonical_identifier, parse_response
from swift_ssid.core.caption_identifiers import SOURCE_LABEL, caption_identifier, write_caption_results
from swift_ssid.core.index import build_index
from swift_ssid.core.jsonl import read_jsonl


def test_paper_example_and_shape():
    assert caption_identifier("Two young, White males are outside near many bushes.") == (
        "white males - outside - many bushes"
    )
    assert caption_identifier("A dog runs with a ball in the park") == "dog runs - ball - park"
    assert caption_identifier("The the a") == ""


def test_real_captions_give_valid_compact_identifiers(flickr_captions):
    idents = [caption_identifier(c) for c in flickr_captions[::5]]  # first caption of each image
    assert all(i == canonical_identifier(i) for i in idents)
    assert all(0 < len(i.replace(" - ", " ").split()) <= MAX_IDENTIFIER_WORDS for i in idents)
    parsed = [parse_response(f"caption:c\nidentifier:{i}\nreason:r") for i in idents]
    assert all(p.status == "ok" and p.identifier == i for p, i in zip(parsed, idents, strict=True))
    # Distinct enough to be a usable index on 1,000 real images.
    assert len(set(idents)) >= 900  # collisions go to the index's policy


def test_written_results_build_an_index(tmp_path):
    images = []
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8\xff")
        images.append(str(tmp_path / name))
    out = tmp_path / "results.jsonl"
    assert (
        write_caption_results(zip(images, ["A man in an orange hat.", "Two dogs play on grass."], strict=True), out)
        == 2
    )
    rows = read_jsonl(out)
    assert all(r["identifier_source"] == SOURCE_LABEL for r in rows)
    stats = build_index(out, tmp_path / "idx")
    assert stats.valid == 2
