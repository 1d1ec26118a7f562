"""A self-contained HTML report of a run: metrics, an R@K-against-K plot and per-query cases.

The page opens from disk with no server: the plot (matplotlib, Agg canvas) and every thumbnail
(Pillow, JPEG) are embedded as base64 ``data:`` URIs, and all text is HTML-escaped. Its layout
follows the paper: a metrics table as in its Tables I-IV (R@K in percent, one decimal), and cases
as in its Fig. 4 (query, generated identifiers with their reasons, the retrieved images),
successes and failures side by side.

Two metrics are shown, labelled: the image-level hit rate (:func:`swift_ssid.core.metrics.evaluate_run`,
the paper's R@K) and, for contrast only, the identifier-level hit rate, which overstates R@K when
identifiers are shared by several images.

Items of a text collection (a description standing in for an image, or a document) have no image: given their
texts (``texts``: item id -> text), the report shows each one's text, cut at :data:`MAX_TEXT_CHARS`, where an image
would have its thumbnail.

Pure module: no torch, no ms-swift; needs Pillow and matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from swift_ssid.core.images import composite_alpha
from swift_ssid.core.jsonl import write_text_atomic
from swift_ssid.core.metrics import (
    DEFAULT_KS,
    RunMetrics,
    chance_hit_rate,
    check_k,
    evaluate_run,
    evaluate_run_identifier_level,
    first_relevant_rank,
    gold_identifiers,
)
from swift_ssid.core.runs import RunRow
from swift_ssid.reporting.tables import format_percent

MAX_THUMBS_PER_IDENTIFIER = 8
MAX_TEXT_CHARS = 240


class ReportIndex(Protocol):
    """What the report needs from an identifier index (e.g. :class:`swift_ssid.core.index.IdentifierIndex`).

    ``images_for`` and ``identifier_for`` may raise ``KeyError`` (or return ``[]`` / ``None``) for
    unknown keys. If the index has ``entries`` (objects with ``image`` and optionally ``path`` or
    ``image_path``, ``identifier``, ``caption``, ``reason``), image paths and the gold images'
    captions and reasons come from them; otherwise the image id is taken as its path.
    """

    def images_for(self, identifier: str) -> list[str]: ...

    def identifier_for(self, image: str) -> str | None: ...


@dataclass
class ReportStats:
    """What a rendered report contains (also printed by ``swift-ssid report``)."""

    n_queries: int
    k: int
    n_successes: int
    n_failures: int
    shown_successes: int
    shown_failures: int
    n_thumbnails: int
    missing_images: list[str]
    metrics: RunMetrics
    identifier_level: RunMetrics
    size_bytes: int = 0

    @property
    def omitted(self) -> int:
        """Queries whose case is not shown (over ``max_cases``)."""
        return self.n_queries - self.shown_successes - self.shown_failures


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _safe_lookup(fn: Callable[[str], Any], key: str, default: Any) -> Any:
    try:
        found = fn(key)
    except KeyError:
        return default
    return default if found is None else found


class _Images:
    """Image id -> path and index entry; thumbnails made once per image and cached."""

    def __init__(
        self,
        index: Any,
        image_root: str | os.PathLike | None,
        thumb_size: int,
        alpha_background: str | None = None,
        texts: Mapping[str, str] | None = None,
    ):
        entries = getattr(index, "entries", None) or []
        if isinstance(entries, dict):
            entries = entries.values()
        self.entries = {str(e.image): e for e in entries if getattr(e, "image", None) is not None}
        self.root = Path(image_root) if image_root is not None else Path.cwd()
        self.thumb_size = thumb_size
        self.alpha_background = alpha_background
        self.cache: dict[str, str | None] = {}
        self.missing: set[str] = set()
        self.texts = dict(texts or {})

    def entry(self, image: str) -> Any:
        return self.entries.get(image)

    def path(self, image: str) -> Path:
        entry = self.entries.get(image)
        raw = image
        for attr in ("path", "image_path"):
            value = getattr(entry, attr, None) if entry is not None else None
            if value:
                raw = str(value)
                break
        path = Path(raw).expanduser()
        return path if path.is_absolute() else self.root / path

    def thumbnail(self, image: str) -> str | None:
        """A ``data:image/jpeg;base64,...`` URI of the image's thumbnail, or ``None`` if it cannot be read."""
        if image not in self.cache:
            self.cache[image] = self._make(self.path(image))
            if self.cache[image] is None:
                self.missing.add(image)
        return self.cache[image]

    def _make(self, path: Path) -> str | None:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                # Transparency onto the same background the model saw (swift_ssid.core.images), not black.
                im = composite_alpha(ImageOps.exif_transpose(im), self.alpha_background)
                im.thumbnail((self.thumb_size, self.thumb_size))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=80)
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_r_at_k(curves: dict[str, list[float]], k: int, styles: Sequence[dict[str, Any]] | None = None) -> str:
    """R@K against K as a PNG ``data:`` URI (matplotlib's Agg canvas; pyplot's global state is untouched).

    Args:
        curves: label -> R@1..R@k as fractions.
        k: the largest K.
        styles: one matplotlib style per curve (``fmt`` is the format string); default: the paper's metric
            green and solid, the contrast grey and dashed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency of the report
        raise RuntimeError("the report's plot needs matplotlib: pip install 'matplotlib>=3.8'") from e
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.96)
    xs = list(range(1, k + 1))
    if styles is None:
        styles = [
            {"marker": "o", "linewidth": 2.2, "color": "#1b7f3b"},
            {"marker": "s", "linestyle": "--", "color": "#999"},
        ]
    for (label, values), style in zip(curves.items(), styles, strict=False):
        style = dict(style)
        fmt = style.pop("fmt", None)
        ax.plot(xs, [100 * v for v in values], *([fmt] if fmt else []), label=label, **style)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_xticks(xs if k <= 20 else xs[:: max(1, k // 10)])
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:16px 24px;
color:#222;background:#fafafa}
h1{margin:0 0 6px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.meta,.counts{margin:2px 0;color:#444}.warn{color:#a33;font-weight:600}
table.metrics{border-collapse:collapse;margin:8px 0}
table.metrics th,table.metrics td{border:1px solid #ccc;padding:6px 12px;text-align:right}
table.metrics th.label{text-align:left;font-weight:normal}table.metrics tr.paper{background:#eaf6ee;font-weight:600}
table.metrics tr.contrast{color:#666}.note{font-size:90%;color:#555;max-width:900px}
figure.plot{margin:12px 0}figure.plot img{border:1px solid #ddd;background:#fff}
.columns{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:20px;align-items:start}
.case,.meta,header{overflow-wrap:anywhere}.path{overflow-wrap:anywhere;word-break:break-all}
@media (max-width:1000px){.columns{grid-template-columns:1fr}}
.col h3{margin:0 0 8px;padding:6px 10px;border-radius:4px;color:#fff}
.successes h3{background:#1b7f3b}.failures h3{background:#b3261e}
.case{background:#fff;border:1px solid #ddd;border-left:6px solid #bbb;border-radius:4px;padding:10px 12px;
margin:0 0 14px}
.case.hit{border-left-color:#1b7f3b}.case.miss{border-left-color:#b3261e}
.badge{display:inline-block;font-weight:700;font-size:85%;padding:1px 8px;border-radius:10px;color:#fff}
.badge.hit{background:#1b7f3b}.badge.miss{background:#b3261e}.qid{color:#777;font-size:85%;margin-left:6px}
.query{font-size:110%;margin:6px 0 8px}
.gold{display:flex;gap:10px;align-items:flex-start;margin-bottom:8px;font-size:90%}
ol.ranked{margin:0;padding-left:26px}ol.ranked li{margin:0 0 8px;padding:4px 6px;border-radius:4px}
ol.ranked li.has-gold{background:#eaf6ee}ol.ranked li.unknown{background:#fff4e5}
code.identifier{font-weight:600;color:#123}.score{color:#888;font-size:85%;margin-left:6px}
.reason{color:#555;font-size:90%;font-style:italic;margin:2px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;margin-top:3px}
figure.thumb{margin:0;text-align:center;font-size:75%;color:#555}
figure.thumb img,.missing{display:block;border:3px solid transparent;border-radius:3px;max-width:128px;max-height:128px}
figure.thumb.is-gold img,figure.thumb.is-gold .missing,figure.thumb.is-gold .text-item{border-color:#1b7f3b}
.text-item{display:block;width:200px;max-height:128px;overflow:hidden;border:3px solid #ddd;border-radius:3px;
padding:3px;font-size:85%;text-align:left;background:#fff;color:#222}
figure.thumb.beyond{opacity:.45}
.missing{width:96px;height:72px;background:repeating-linear-gradient(45deg,#eee,#eee 6px,#ddd 6px,#ddd 12px);
color:#a33;font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center;overflow:hidden;
word-break:break-all;padding:2px}
.tag{font-size:75%;padding:0 5px;border-radius:3px;background:#fde3c0;color:#8a4b00;margin-left:4px}
"""

# Sets data-images-* on <body> once everything has loaded, for a quick check (and the browser test).
LOADED_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-loaded', ok === imgs.length ? 'true' : 'false');
});
"""


def _thumb_html(images: _Images, image: str, caption: str, classes: str = "") -> str:
    text = images.texts.get(image)
    if text is not None:  # a text item: its text where the thumbnail would be
        shown = text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "\u2026"
        body = f'<div class="text-item" title="{_esc(image)}">{_esc(shown)}</div>'
        return f'<figure class="thumb {classes}">{body}<figcaption>{caption}</figcaption></figure>'
    uri = images.thumbnail(image)
    if uri is None:
        body = f'<div class="missing" title="{_esc(images.path(image))}">image missing<br>{_esc(image)}</div>'
    else:
        body = f'<img src="{uri}" alt="{_esc(image)}" title="{_esc(image)}">'
    return f'<figure class="thumb {classes}">{body}<figcaption>{caption}</figcaption></figure>'


def _case_html(row: RunRow, index: Any, images: _Images, k: int) -> str:
    gold = set(row.gold_images)
    rank = first_relevant_rank(row.images, gold)
    hit = rank is not None and rank <= k
    badge = f'<span class="badge hit">HIT @{rank}</span>' if hit else '<span class="badge miss">MISS</span>'
    if not hit and rank is not None:
        badge += f'<span class="tag">gold at image rank {rank} &gt; K</span>'
    image_rank = {image: i for i, image in enumerate(row.images, start=1)}
    parts = [f'<article class="case {"hit" if hit else "miss"}" id="case-{_esc(row.query_id)}">']
    parts.append(f'<div>{badge}<span class="qid">query {_esc(row.query_id)}</span></div>')
    parts.append(f'<p class="query">&ldquo;{_esc(row.query)}&rdquo;</p>')
    gold_ids = gold_identifiers(row, index.identifier_for)
    for g in row.gold_images:
        entry = images.entry(g)
        gold_identifier = _safe_lookup(index.identifier_for, g, None)
        info = [f'<div><b>gold image</b> <span class="path">{_esc(g)}</span></div>']
        if gold_identifier is not None:
            info.append(f'<div>its identifier: <code class="identifier">{_esc(gold_identifier)}</code></div>')
        if entry is not None and getattr(entry, "reason", None):
            info.append(f'<div class="reason">{_esc(entry.reason)}</div>')
        thumb = _thumb_html(images, g, "gold", "is-gold")
        parts.append(f'<div class="gold">{thumb}<div>{"".join(info)}</div></div>')
    parts.append('<ol class="ranked">')
    for identifier, score, reason in list(zip(row.identifiers, row.scores, row.reasons, strict=True))[:k]:
        expanded = list(_safe_lookup(index.images_for, identifier, []))
        classes = []
        if gold.intersection(expanded):
            classes.append("has-gold")
        if not expanded:
            classes.append("unknown")
        tags = ""
        if identifier in gold_ids:
            tags += '<span class="tag">gold identifier</span>'
        if len(expanded) > 1:
            tags += f'<span class="tag">shared by {len(expanded)} images</span>'
        if not expanded:
            tags += '<span class="tag">not in the index</span>'
        li = [
            f'<li class="{" ".join(classes)}"><div><code class="identifier">{_esc(identifier)}</code>'
            f'<span class="score">score {score + 0.0:.3f}</span>{tags}</div>'
        ]
        if reason:
            li.append(f'<div class="reason">{_esc(reason)}</div>')
        if expanded:
            li.append('<div class="thumbs">')
            for image in expanded[:MAX_THUMBS_PER_IDENTIFIER]:
                r = image_rank.get(image)
                caption = f"#{r}" if r is not None else "not in run"
                thumb_classes = ["is-gold"] if image in gold else []
                if r is not None and r > k:
                    caption += " (beyond K)"
                    thumb_classes.append("beyond")
                li.append(_thumb_html(images, image, _esc(caption), " ".join(thumb_classes)))
            if len(expanded) > MAX_THUMBS_PER_IDENTIFIER:
                li.append(f'<span class="tag">+{len(expanded) - MAX_THUMBS_PER_IDENTIFIER} more</span>')
            li.append("</div>")
        li.append("</li>")
        parts.append("".join(li))
    if not row.identifiers:
        parts.append("<li>no identifier generated</li>")
    parts.append("</ol></article>")
    return "\n".join(parts)


def _select_cases(hits: list[RunRow], misses: list[RunRow], max_cases: int) -> tuple[list[RunRow], list[RunRow]]:
    """Up to ``max_cases`` cases, half successes and half failures (the rest to the other side if one is short)."""
    n_hit = min(len(hits), (max_cases + 1) // 2)
    n_miss = min(len(misses), max_cases - n_hit)
    n_hit = min(len(hits), max_cases - n_miss)
    return hits[:n_hit], misses[:n_miss]


def _chance_note(index: Any, ks: Iterable[int]) -> str:
    """A note with the chance level of each R@K: K / indexed images (a random ranking), or ``""`` if unknown."""
    entries = getattr(index, "entries", None) or []
    n = len({e.image for e in entries if getattr(e, "identifier", None) is not None})
    if not n:
        return ""
    levels = ", ".join(f"R@{k} {format_percent(chance_hit_rate(k, n))}%" for k in ks)
    return f'<p class="note" id="chance"><b>Chance</b> (a random ranking of the {n} indexed images): {levels}.</p>'


def _metrics_table(metrics: RunMetrics, contrast: RunMetrics, ks: Iterable[int]) -> str:
    ks = list(ks)
    head = "".join(f"<th>R@{k}</th>" for k in ks)
    paper = "".join(f"<td>{format_percent(metrics.r_at(k))}</td>" for k in ks)
    other = "".join(f"<td>{format_percent(contrast.r_at(k))}</td>" for k in ks)
    return (
        f'<table class="metrics" id="metrics-table"><thead><tr><th class="label">Metric</th>{head}</tr></thead><tbody>'
        '<tr class="paper"><th class="label">Image-level R@K (hit_rate@k) &mdash; the paper&#x27;s metric</th>'
        f"{paper}</tr>"
        f'<tr class="contrast"><th class="label">Identifier-level hit rate &mdash; for contrast only, overstates '
        f"with shared identifiers</th>{other}</tr></tbody></table>"
    )


def render_report(
    rows: Sequence[RunRow],
    index: ReportIndex,
    *,
    k: int = 10,
    max_cases: int = 200,
    image_root: str | os.PathLike | None = None,
    thumb_size: int = 128,
    title: str = "SSID retrieval report",
    run_name: str = "",
    index_name: str = "",
    quality: Any = None,
    comparison: Sequence[tuple[str, Sequence[RunRow]]] = (),
    alpha_background: str | None = None,
    texts: Mapping[str, str] | None = None,
) -> tuple[str, ReportStats]:
    """Render the report of a run as one self-contained HTML page.

    Args:
        rows: the run (see :mod:`swift_ssid.core.runs`).
        index: the identifier index the run was made with (see :class:`ReportIndex`).
        k: cases show the top-k identifiers and count a success when the gold image is within the
            first k images; the plot runs over K = 1..k.
        max_cases: at most this many cases (half successes, half failures, in run order); the
            header says how many were omitted.
        image_root: folder that relative image paths are resolved against (default: cwd).
        thumb_size: longest side of a thumbnail, in pixels.
        title: the page title.
        run_name: shown in the header (e.g. the run file's path).
        index_name: shown in the header (e.g. the index folder).
        quality: a :class:`swift_ssid.core.quality.QualityReport` of the index: adds an "Identifier quality"
            section.
        comparison: ``(label, rows)`` of other runs over the same queries (dense, hybrid, other kinds): adds a
            "Comparison" section with their R@K next to this run's and one R@K-against-K curve each.
        alpha_background: colour transparent image areas are composited onto (None: white, the default the
            SSID templates use; see :mod:`swift_ssid.core.images`).
        texts: item id -> text for the items of a text collection, shown in place of their thumbnails.

    Returns:
        ``(html, stats)``.

    Raises:
        ValueError: ``k`` or ``max_cases`` is invalid, or the run is empty (see :func:`evaluate_run`).
    """
    k = check_k(k)
    if isinstance(max_cases, bool) or not isinstance(max_cases, int) or max_cases < 0:
        raise ValueError(f"max_cases must be an integer >= 0, got {max_cases!r}")
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, int) or thumb_size < 16:
        raise ValueError(f"thumb_size must be an integer >= 16 pixels, got {thumb_size!r}")
    ks = sorted(set(DEFAULT_KS) | {k})
    metrics = evaluate_run(rows, ks)
    contrast = evaluate_run_identifier_level(rows, index.identifier_for, ks)
    curve_ks = range(1, k + 1)
    image_curve = evaluate_run(rows, curve_ks)
    identifier_curve = evaluate_run_identifier_level(rows, index.identifier_for, curve_ks)
    curves = {
        "image-level R@K (the paper's metric)": [image_curve.r_at(i) for i in curve_ks],
        "identifier-level (overstates)": [identifier_curve.r_at(i) for i in curve_ks],
    }
    plot_uri = plot_r_at_k(curves, k)

    hits, misses = [], []
    for row in rows:
        rank = first_relevant_rank(row.images, row.gold_images)
        (hits if rank is not None and rank <= k else misses).append(row)
    shown_hits, shown_misses = _select_cases(hits, misses, max_cases)
    images = _Images(index, image_root, thumb_size, alpha_background, texts)
    hit_html = "\n".join(_case_html(row, index, images, k) for row in shown_hits)
    miss_html = "\n".join(_case_html(row, index, images, k) for row in shown_misses)

    stats = ReportStats(
        n_queries=len(rows),
        k=k,
        n_successes=len(hits),
        n_failures=len(misses),
        shown_successes=len(shown_hits),
        shown_failures=len(shown_misses),
        n_thumbnails=sum(1 for uri in images.cache.values() if uri is not None),
        missing_images=sorted(images.missing),
        metrics=metrics,
        identifier_level=contrast,
    )
    header = [f"<h1>{_esc(title)}</h1>"]
    meta = [f"queries: {stats.n_queries}", f"K = {k}"]
    if run_name:
        meta.insert(0, f"run: <code>{_esc(run_name)}</code>")
    if index_name:
        meta.insert(1 if run_name else 0, f"index: <code>{_esc(index_name)}</code>")
    header.append(f'<p class="meta">{" &middot; ".join(meta)}</p>')
    counts = (
        f"Cases shown: {stats.shown_successes} of {stats.n_successes} successes and "
        f"{stats.shown_failures} of {stats.n_failures} failures"
    )
    counts += (
        f"; <b>{stats.omitted} omitted</b> (raise --max-cases to see more)." if stats.omitted else "; none omitted."
    )
    header.append(f'<p class="counts" id="case-counts">{counts}</p>')
    if stats.missing_images:
        root = _esc(images.root)
        header.append(
            f'<p class="counts warn" id="missing-images">Missing images: {len(stats.missing_images)} could not be read '
            f"and are shown as placeholders (relative paths resolve against <code>{root}</code>; "
            "set --image-root).</p>"
        )
    else:
        header.append('<p class="counts" id="missing-images">Missing images: 0.</p>')

    body = [
        "<header>",
        *header,
        "</header>",
        '<section id="metrics"><h2>Metrics</h2>',
        _metrics_table(metrics, contrast, ks),
        '<p class="note"><b>Image-level R@K</b> is the paper&#x27;s metric (ranx hit_rate@k, trec_eval success): '
        "the generated identifiers are expanded to their images in beam order, repeats dropped, and a query is a hit "
        "when a gold image is among the first K images. The <b>identifier-level</b> row counts a shared identifier "
        "as a hit for every image that has it, so it overstates R@K when identifiers collide; it is shown only for "
        f"contrast. Unknown identifiers: {format_percent(metrics.unknown_identifier_rate or 0.0)}% of those "
        "generated.</p>",
        _chance_note(index, ks),
        f'<figure class="plot"><img src="{plot_uri}" alt="R@K against K" width="640" height="360">'
        f"<figcaption>R@K against K (K = 1..{k}).</figcaption></figure>",
        "</section>",
        '<section id="cases"><h2>Cases</h2>',
        '<p class="note">As in the paper&#x27;s Fig. 4: per query, the generated identifiers (top K, beam order) '
        "with their reasons and the images they expand to; <b>#n</b> is the image rank R@K counts, the gold image is "
        "framed in green.</p>",
        '<div class="columns">',
        f'<div class="col successes"><h3>Successes: gold image within the top {k} '
        f"({stats.shown_successes} of {stats.n_successes} shown)</h3>{hit_html}</div>",
        f'<div class="col failures"><h3>Failures: gold image not within the top {k} '
        f"({stats.shown_failures} of {stats.n_failures} shown)</h3>{miss_html}</div>",
        "</div></section>",
    ]
    extra = []
    if comparison:
        extra.append(comparison_section(Path(run_name).stem if run_name else "this run", rows, comparison, k))
    if quality is not None:
        extra.append(quality_section(quality))
    body[body.index('<section id="cases"><h2>Cases</h2>') : body.index('<section id="cases"><h2>Cases</h2>')] = extra
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n"
        '<body data-images-loaded="pending">\n'
        + "\n".join(body)
        + f"\n<script>{LOADED_SCRIPT}</script>\n</body></html>\n"
    )
    stats.size_bytes = len(page.encode("utf-8"))
    return page, stats


def write_report(out_path: str | os.PathLike, rows: Sequence[RunRow], index: ReportIndex, **kwargs: Any) -> ReportStats:
    """Render the report (see :func:`render_report`) and write it atomically to ``out_path``."""
    page, stats = render_report(rows, index, **kwargs)
    write_text_atomic(out_path, page)
    return stats


# ---------------------------------------------------------------- comparison with dense / hybrid runs

_CURVE_STYLES = ("o-", "s--", "^-.", "d:", "v-", "x--", "*-.", "p:")


def plot_comparison(curves: dict[str, list[float]], k: int) -> str:
    """R@K against K for several runs, one curve each, as a PNG ``data:`` URI."""
    styles = [{"fmt": _CURVE_STYLES[i % len(_CURVE_STYLES)]} for i in range(len(curves))]
    return plot_r_at_k(curves, k, styles)


def _kind_of(rows: Sequence[RunRow]) -> str:
    kinds = {str(row.setting.get("kind")) for row in rows if row.setting.get("kind") is not None}
    return kinds.pop() if len(kinds) == 1 else ""


def comparison_section(
    name: str, rows: Sequence[RunRow], others: Sequence[tuple[str, Sequence[RunRow]]], k: int
) -> str:
    """HTML of the "Comparison" section: this run and the others, R@1/5/10 and R@K-against-K curves.

    Every run is scored by :func:`evaluate_run` (image-level R@K). Runs over other queries are refused.
    """
    ids = {row.query_id for row in rows}
    for label, other in others:
        if {row.query_id for row in other} != ids:
            raise ValueError(
                f"comparison run {label!r} was made from other queries than the report's run; compare runs made "
                "from the same queries file"
            )
    runs = [(name, rows), *others]
    ks = sorted(set(DEFAULT_KS) | {k})
    head = "".join(f"<th>R@{i}</th>" for i in ks)
    body = []
    curves = {}
    for label, run_rows in runs:
        metrics = evaluate_run(run_rows, ks)
        kind = _kind_of(run_rows)
        cells = "".join(f"<td>{format_percent(metrics.r_at(i))}</td>" for i in ks)
        body.append(f'<tr><th class="label">{_esc(label)}</th><td class="kind">{_esc(kind)}</td>{cells}</tr>')
        curve = evaluate_run(run_rows, range(1, k + 1))
        curves[f"{label} ({kind})" if kind else label] = [curve.r_at(i) for i in range(1, k + 1)]
    plot = plot_comparison(curves, k)
    return (
        '<section id="comparison"><h2>Comparison: generative, dense and hybrid</h2>'
        f'<table class="metrics" id="comparison-table"><thead><tr><th class="label">Run</th><th>kind</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="note">Image-level R@K of every run over the same queries. <b>dense</b>: a dual encoder ranks '
        "every image by cosine similarity (<code>swift-ssid dense</code>); <b>hybrid-*</b>: runs fused with ranx "
        "(<code>swift-ssid fuse --method</code>); <b>*+rerank</b>: a generative run&#x27;s images ordered by "
        "dense similarity (<code>swift-ssid fuse --rerank</code>).</p>"
        f'<figure class="plot"><img src="{plot}" alt="R@K against K per run" width="640" height="360">'
        f"<figcaption>R@K against K (K = 1..{k}), one curve per run.</figcaption></figure></section>"
    )


# ---------------------------------------------------------------- identifier quality

_QUALITY_NOTES = {
    "conformity": "answers in the three-line format: ok / repaired / invalid (by reason); sentence-like: valid "
    "identifiers with a finite form of <i>be</i>, or with no &quot; - &quot; and 5 words or more",
    "length": "words (and tokens in the trie, line end included) per valid image's identifier",
    "uniqueness": "raw identifiers over valid images: distinct share, collision groups, Shannon entropy "
    "(normalised by log2 of the images)",
    "discriminability": "each identifier as a query against every image's captions; R@K of its own image, "
    "ties counted against it (BM25, and the text embedder when given)",
    "consistency": "mean similarity of an identifier to its own image's captions minus that to other images' "
    "captions (text embedder)",
    "trie": "the token trie the constrained decoder walks: nodes, depth, fan-out, share of forced steps",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "–"
    return "–" if value is None else str(value)


def quality_section(quality: Any) -> str:
    """HTML of the "Identifier quality" section from a :class:`swift_ssid.core.quality.QualityReport`."""
    from dataclasses import asdict, is_dataclass

    parts = ['<section id="quality"><h2>Identifier quality</h2>']
    kind = quality.meta.get("kind")
    parts.append(
        f'<p class="note">Measured on the index{f" (kind <b>{_esc(kind)}</b>)" if kind else ""} with '
        "<code>swift-ssid quality</code>, before any training; definitions in docs/quality-dense-hybrid.md. "
        f"Captions from: {_esc(quality.meta.get('captions', '–'))}.</p>"
    )
    for key, note in _QUALITY_NOTES.items():
        value = getattr(quality, key)
        if value is None:
            parts.append(f'<h3>{key}</h3><p class="note">not measured ({note}).</p>')
            continue
        data = asdict(value) if is_dataclass(value) else dict(value)
        cells = "".join(
            f'<tr><th class="label">{_esc(name)}</th><td>{_esc(_fmt(item))}</td></tr>'
            for name, item in data.items()
            if not (isinstance(item, dict) and "histogram" in item)
        )
        for name, item in data.items():  # length distributions: one row per statistic
            if isinstance(item, dict) and "histogram" in item:
                summary = {k: v for k, v in item.items() if k != "histogram"}
                cells += f'<tr><th class="label">{_esc(name)}</th><td>{_esc(_fmt(summary))}</td></tr>'
        parts.append(
            f'<h3>{key}</h3><p class="note">{note}</p><table class="metrics quality" id="quality-{key}">'
            f"<tbody>{cells}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)
