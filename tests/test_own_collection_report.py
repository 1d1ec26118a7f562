"""The report's layout holds with long image paths: headless Chromium at 1280 px, no horizontal overflow.

Own collections have deep folders and long file names (one unbreakable token of ~400 characters here); before
the fix a long gold-image path widened its grid column and pushed the failures column off a 1280-pixel window.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from test_report_browser import CHROMIUM, FAILURE_RED, SUCCESS_GREEN, body_attributes, chromium

from swift_ssid.core.index import IdentifierIndex, IndexEntry
from swift_ssid.core.runs import RunRow
from swift_ssid.reporting.report import write_report

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: apt-get update && apt-get install -y chromium"
)
WIDTH, HEIGHT = 1280, 1600
MEASURE = """<script>
window.addEventListener('load', function () {
  document.body.setAttribute('data-scroll-width', String(document.documentElement.scrollWidth));
});
</script></body>"""


def long_path_report(root: Path) -> Path:
    folder = root / ("a_very_long_folder_name_without_any_break_" * 5) / ("deeper_" * 30)
    folder.mkdir(parents=True)
    entries, images = [], []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        path = folder / f"image_{i}_{'x' * 80}.png"
        Image.new("RGB", (64, 48), colour).save(path)
        images.append(str(path))
        entries.append(IndexEntry(str(path), f"identifier {i}", "ok", reason=f"reason {i}"))
    index = IdentifierIndex(entries)
    rows = [  # one hit, one miss
        RunRow(
            "q0", "first query", [images[0]], ["identifier 0", "identifier 1"], [0.0, -1.0], [None, None], images[:2]
        ),
        RunRow(
            "q1", "second query", [images[2]], ["identifier 0", "identifier 1"], [0.0, -1.0], [None, None], images[:2]
        ),
    ]
    out = root / "report.html"
    write_report(out, rows, index, run_name=str(folder / "run.jsonl"), index_name=str(folder / "index"))
    assert len(images[0]) > 400
    return out


def test_long_paths_do_not_push_the_failures_column_off_a_1280_px_window(tmp_path: Path) -> None:
    page = long_path_report(tmp_path)
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE, 1), encoding="utf-8")
    dom = chromium(tmp_path / "profile", measured, f"--window-size={WIDTH},{HEIGHT}", "--dump-dom").stdout
    attributes = body_attributes(dom)
    assert attributes["data-images-loaded"] == "true"
    assert int(attributes["data-scroll-width"]) <= WIDTH, attributes  # nothing wider than the window

    shot = tmp_path / "report.png"
    chromium(tmp_path / "profile-shot", page, f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}")
    pixels = Image.open(shot).convert("RGB").load()

    def near(colour: tuple[int, int, int], target: tuple[int, int, int]) -> bool:
        return all(abs(a - b) <= 6 for a, b in zip(colour, target, strict=True))

    rows = []
    for y in range(0, HEIGHT, 2):
        greens = [x for x in range(0, WIDTH, 4) if near(pixels[x, y], SUCCESS_GREEN)]
        reds = [x for x in range(0, WIDTH, 4) if near(pixels[x, y], FAILURE_RED)]
        if len(greens) > 60 and len(reds) > 60:
            rows.append((min(greens), max(greens), min(reds), max(reds)))
    assert rows, "no row shows both column headers side by side within the window"
    left, green_end, red_start, right = rows[0]
    assert green_end < red_start and right < WIDTH - 4
    assert abs((green_end - left) - (right - red_start)) < 40  # two equal columns, whatever the paths
    assert re.search(r'class="path"', page.read_text(encoding="utf-8"))
