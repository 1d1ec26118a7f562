"""The report in a real headless Chromium: metrics render, every embedded image decodes, layout is side by side.

Needs the Debian package ``chromium`` (CI's ``.ci/run`` installs it); skipped with the install
command when it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from test_report import build_example, metrics_rows

from swift_ssid.reporting.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: apt-get update && apt-get install -y chromium"
)
WIDTH, HEIGHT = 1400, 2000
SUCCESS_GREEN, FAILURE_RED = (0x1B, 0x7F, 0x3B), (0xB3, 0x26, 0x1E)  # the column headers' colours


def chromium(profile: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local file (no network, a throw-away profile)."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def body_attributes(dom: str) -> dict[str, str]:
    return dict(re.findall(r'(data-[\w-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("report")
    rows, index = build_example(root)
    write_report(root / "report.html", rows, index, image_root=root)
    return root, (root / "report.html").read_text(encoding="utf-8")


def test_metrics_render_and_every_image_loads(report):
    root, page = report
    dom = chromium(root / "profile", root / "report.html", "--dump-dom").stdout
    n_images = page.count("<img ")
    assert n_images == 16  # 15 thumbnails + the plot
    assert body_attributes(dom) == {
        "data-images-loaded": "true",
        "data-images-total": str(n_images),
        "data-images-ok": str(n_images),
    }
    assert metrics_rows(dom) == {"paper": ["20.0", "60.0", "60.0"], "contrast": ["40.0", "60.0", "60.0"]}
    assert "Successes: gold image within the top 10 (3 of 3 shown)" in dom
    assert "Missing images: 1 could not be read" in dom


def test_a_broken_image_is_detected(report):
    root, page = report
    first = re.search(r'src="data:image/jpeg;base64,[^"]+"', page).group(0)
    broken = root / "broken.html"
    broken.write_text(page.replace(first, 'src="data:image/jpeg;base64,AAAA"', 1), encoding="utf-8")
    dom = chromium(root / "profile-broken", broken, "--dump-dom").stdout
    assert body_attributes(dom) == {"data-images-loaded": "false", "data-images-total": "16", "data-images-ok": "15"}


def test_screenshot_shows_successes_and_failures_side_by_side(report):
    root, _ = report
    shot = root / "report.png"
    chromium(root / "profile-shot", root / "report.html", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = image.load()

    def near(colour, target):
        return all(abs(a - b) <= 6 for a, b in zip(colour, target, strict=True))

    # Some row holds both column headers: a wide green bar on the left and a wide red bar on the right.
    header_rows = []
    for y in range(0, HEIGHT, 2):
        greens = [x for x in range(0, WIDTH, 4) if near(pixels[x, y], SUCCESS_GREEN)]
        reds = [x for x in range(0, WIDTH, 4) if near(pixels[x, y], FAILURE_RED)]
        if len(greens) > 100 and len(reds) > 100:
            header_rows.append((max(greens), min(reds)))
    assert header_rows, "no row shows both column headers side by side"
    assert all(green_end < red_start for green_end, red_start in header_rows)
    # The photos rendered: the page has thousands of distinct colours, far more than its flat CSS palette.
    assert len(image.getcolors(maxcolors=1_000_000)) > 5_000
