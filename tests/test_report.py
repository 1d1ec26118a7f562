"""The HTML report on a small real example: real photos, a shared identifier, a missing image, hostile text."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from matplotlib import cbook
from PIL import Image, ImageOps

from swift_ssid.cli import main
from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.runs import RunRow, expand_identifiers, write_run
from swift_ssid.reporting.report import render_report, write_report

PORTRAIT = "woman - navy uniform - portrait"  # shared by hopper_face.jpg and hopper_full.jpg
IDENTIFIERS = {
    "img/hopper_face.jpg": PORTRAIT,
    "img/hopper_full.jpg": PORTRAIT,
    "img/hopper_flag.jpg": "officer - flag - smile",
    "img/hopper_gray.jpg": "old photo - woman - medals",
    "img/hopper_mirror.jpg": "woman - mirror - uniform",
    "img/missing.jpg": "empty room - chair",  # in the index, but the file does not exist
}
HOSTILE_QUERY = '<script>alert("x")</script> & a woman'
# query id -> (query, gold image, generated identifiers, reasons)
QUERIES = {
    "q1": ("A woman in a navy uniform smiles.", "img/hopper_face.jpg", [PORTRAIT, "officer - flag - smile"]),
    "q2": ("Portrait of an officer in uniform.", "img/hopper_full.jpg", [PORTRAIT, "officer - flag - smile"]),
    "q3": (
        "An old photo of a woman wearing medals.",
        "img/hopper_gray.jpg",
        ["woman - mirror - uniform", "empty room - chair", "old photo - woman - medals"],
    ),
    "q4": ("A mirrored picture of a woman.", "img/hopper_mirror.jpg", ["officer - flag - smile", "unicorn - moon"]),
    "q5": (HOSTILE_QUERY, "img/hopper_flag.jpg", ["old photo - woman - medals"]),
}
# Image-level first-hit ranks: q1 1, q2 2 (gold is the shared identifier's second image), q3 3, q4 and q5 none
# -> R@1 1/5, R@5 3/5, R@10 3/5. Identifier-level: q1, q2 at 1, q3 at 3 -> 2/5, 3/5, 3/5.


def make_photos(folder: Path) -> None:
    """Five distinct real photos cut from matplotlib's bundled portrait of Grace Hopper."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f).convert("RGB")
    w, h = hopper.size
    folder.mkdir(parents=True, exist_ok=True)
    hopper.crop((w // 4, 0, 3 * w // 4, h // 2)).save(folder / "hopper_face.jpg")
    hopper.save(folder / "hopper_full.jpg")
    hopper.crop((0, h // 3, w, h)).save(folder / "hopper_flag.jpg")
    ImageOps.grayscale(hopper).save(folder / "hopper_gray.jpg")
    ImageOps.mirror(hopper).resize((w // 2, h // 2)).save(folder / "hopper_mirror.jpg")


def build_example(root: Path) -> tuple[list[RunRow], IdentifierIndex]:
    """Photos under ``root/img``, the index over them, and the five-query run."""
    make_photos(root / "img")
    entries = [
        IndexEntry(image, identifier, "ok", reason=f"Memorised reason for {Path(image).stem}.")
        for image, identifier in IDENTIFIERS.items()
    ]
    index = IdentifierIndex(entries, policy="shared")
    rows = []
    for query_id, (query, gold, identifiers) in QUERIES.items():
        images, unknown = expand_identifiers(identifiers, index.images_for)
        reasons = ["<b>not bold</b>" if query_id == "q5" else f"Because of {i.split(' - ')[0]}." for i in identifiers]
        scores = [-0.5 * i for i in range(len(identifiers))]
        rows.append(RunRow(query_id, query, [gold], identifiers, scores, reasons, images, unknown))
    return rows, index


@pytest.fixture
def example(tmp_path):
    rows, index = build_example(tmp_path)
    return rows, index, tmp_path


def metrics_rows(page: str) -> dict[str, list[str]]:
    """The metrics table as {row class: [cell texts]}."""
    table = re.search(r'<table class="metrics".*?</table>', page, re.S).group(0)
    return {
        cls: re.findall(r"<td>([^<]*)</td>", body) for cls, body in re.findall(r'<tr class="(\w+)">(.*?)</tr>', table)
    }


def data_uris(page: str, kind: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(rf'src="data:image/{kind};base64,([^"]+)"', page)]


def test_metrics_table_shows_image_level_and_identifier_level_r_at_k(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root)
    assert metrics_rows(page) == {"paper": ["20.0", "60.0", "60.0"], "contrast": ["40.0", "60.0", "60.0"]}
    assert "the paper&#x27;s metric" in page and "for contrast only, overstates" in page
    assert stats.metrics.r_at(1) == 0.2 and stats.identifier_level.r_at(1) == 0.4
    assert "Unknown identifiers: 10.0% of those generated." in page  # "unicorn - moon": 1 of 10 generated


def test_cases_split_into_successes_and_failures_with_ranks_and_tags(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root)
    assert (stats.n_successes, stats.n_failures, stats.omitted) == (3, 2, 0)
    successes, failures = page.split('<div class="col failures">')
    assert successes.count('<article class="case hit"') == 3 and failures.count('<article class="case miss"') == 2
    assert "HIT @1" in successes and "HIT @2" in successes and "HIT @3" in successes
    q2 = re.search(r'<article class="case hit" id="case-q2">.*?</article>', page, re.S).group(0)
    assert "shared by 2 images" in q2 and "gold identifier" in q2
    assert re.search(r'figure class="thumb is-gold"><img [^>]*title="img/hopper_full.jpg"><figcaption>#2<', q2)
    q4 = re.search(r'id="case-q4">.*?</article>', page, re.S).group(0)
    assert "not in the index" in q4  # the unknown identifier "unicorn - moon"


def test_k_cuts_cases_and_marks_images_beyond_k(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root, k=2)
    assert (stats.n_successes, stats.n_failures) == (2, 3)
    q3 = re.search(r'id="case-q3">.*?</article>', page, re.S).group(0)
    assert "MISS" in q3 and "gold at image rank 3 &gt; K" in q3
    assert 'old photo - woman - medals</code><span class="score"' not in q3  # identifier #3 is beyond k=2
    page_k1, stats_k1 = render_report(rows, index, image_root=root, k=1)
    assert "#2 (beyond K)" in re.search(r'id="case-q2">.*?</article>', page_k1, re.S).group(0)
    assert stats_k1.n_successes == 1


def test_everything_is_embedded_and_escaped(example):
    rows, index, root = example
    page, _ = render_report(rows, index, image_root=root, title="Report <for> R&D")
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "http://" not in page and "https://" not in page
    assert HOSTILE_QUERY not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a woman" in page
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert "<title>Report &lt;for&gt; R&amp;D</title>" in page
    assert page.count("<script>") == 1  # only the image-loaded check


def test_thumbnails_and_plot_are_real_images(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root, thumb_size=96)
    thumbs = [Image.open(io.BytesIO(b)) for b in data_uris(page, "jpeg")]
    assert thumbs and all(t.format == "JPEG" and max(t.size) == 96 for t in thumbs)
    assert stats.n_thumbnails == 5  # five photos, each encoded once
    (plot,) = [Image.open(io.BytesIO(b)) for b in data_uris(page, "png")]
    assert plot.size == (640, 360)
    assert len(plot.convert("RGB").getcolors(maxcolors=100_000)) > 10  # a drawn plot, not a blank canvas


def test_missing_images_get_placeholders_and_a_count(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root)
    assert stats.missing_images == ["img/missing.jpg"]
    assert "Missing images: 1 could not be read" in page
    assert page.count('<div class="missing"') == 1  # q3 retrieved the missing image
    _, none_found = render_report(rows, index, image_root=root / "elsewhere")
    assert len(none_found.missing_images) == 6


def test_max_cases_caps_and_reports_omitted(example):
    rows, index, root = example
    page, stats = render_report(rows, index, image_root=root, max_cases=2)
    assert (stats.shown_successes, stats.shown_failures, stats.omitted) == (1, 1, 3)
    assert "<b>3 omitted</b> (raise --max-cases to see more)" in page
    _, stats = render_report(rows, index, image_root=root, max_cases=4)
    assert (stats.shown_successes, stats.shown_failures) == (2, 2)
    _, stats = render_report(rows, index, image_root=root, max_cases=5)
    assert (stats.shown_successes, stats.shown_failures) == (3, 2)
    page, stats = render_report(rows, index, image_root=root, max_cases=0)
    assert stats.omitted == 5 and '<article class="case' not in page


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": 0}, "k must be a positive integer"), ({"max_cases": -1}, "max_cases must be an integer >= 0")],
)
def test_invalid_arguments(example, kwargs, message):
    rows, index, _ = example
    with pytest.raises(ValueError, match=message):
        render_report(rows, index, **kwargs)


def test_report_command_end_to_end(example, capsys):
    rows, index, root = example
    index.save(root / "index")
    write_run(root / "run.jsonl", rows)
    out = root / "out" / "report.html"
    argv = ["report", str(root / "run.jsonl"), "--index", str(root / "index"), "--out", str(out)]
    assert main([*argv, "--image-root", str(root), "--max-cases", "3"]) == 0
    printed = capsys.readouterr().out
    assert "5 queries, R@1 20.0%, R@5 60.0%, R@10 60.0% (image-level)" in printed
    assert "2/3 successes, 1/2 failures shown, 2 omitted; missing images: 0" in printed  # q3 is not shown
    page = out.read_text(encoding="utf-8")
    assert metrics_rows(page)["paper"] == ["20.0", "60.0", "60.0"]
    assert main(["report", str(root / "run.jsonl"), "--index", str(root / "no-index"), "--out", str(out)]) == 2
    assert "index_meta.json: missing" in capsys.readouterr().err


def test_write_report_is_atomic_and_returns_the_size(example):
    rows, index, root = example
    stats = write_report(root / "r.html", rows, index, image_root=root)
    assert (root / "r.html").stat().st_size == stats.size_bytes
    assert not list(root.glob(".r.html.*"))
    assert json.loads(json.dumps(stats.metrics.to_dict()))["n_queries"] == 5
