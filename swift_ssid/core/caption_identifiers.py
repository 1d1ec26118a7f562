"""A deterministic, caption-derived identifier source: the labelled fallback when no capable MLLM is at hand.

It is *not* the paper's method (an MLLM choosing the salient concepts). It exists so the pipeline
can run end to end where only tiny random models are available (offline demo, tests): the first
caption of each image is cut at function words into phrases, and the content words of up to three
phrases are joined with `` - `` in the SSID format, e.g.

    >>> caption_identifier("Two young, White males are outside near many bushes.")
    'white males - outside - many bushes'

Results are written in the same three-line form as ``swift infer`` results, marked with
``"identifier_source": "caption-derived"``, so ``swift-ssid build-index`` treats them alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from swift_ssid.core.answers import canonical_identifier
from swift_ssid.core.jsonl import write_jsonl_atomic

SOURCE_LABEL = "caption-derived"

# Words that end a phrase (verbs of being, prepositions, conjunctions) and words dropped inside one.
_BREAKS = frozenset(
    "is are was were be being been has have had and or but while as at in on of to into onto from with by "
    "near next behind under over above below beside between through across along around for during "
    "that which who whose where when".split()
)
_DROP = frozenset("a an the its their his her this these those some there here very".split())
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def caption_identifier(caption: str, max_phrases: int = 3, max_words_per_phrase: int = 2) -> str:
    """SSID-style identifier from one caption (content-word phrases joined by `` - ``).

    Args:
        caption: one human caption.
        max_phrases: how many phrases to keep (first ones).
        max_words_per_phrase: content words kept per phrase (the last ones, nearest the head noun).

    Returns:
        The canonical identifier; ``""`` if the caption has no content word.
    """
    phrases: list[list[str]] = [[]]
    for word in _WORD.findall(caption.lower()):
        if word in _BREAKS:
            if phrases[-1]:
                phrases.append([])
        elif word not in _DROP:
            phrases[-1].append(word)
    kept = [p[-max_words_per_phrase:] for p in phrases if p][:max_phrases]
    return canonical_identifier(" - ".join(" ".join(p) for p in kept))


def write_caption_results(items: Iterable[tuple[str, str]], out_path: str | Path) -> int:
    """Write ``swift infer``-style result rows whose responses carry caption-derived identifiers.

    Args:
        items: ``(image_path, caption)`` pairs.
        out_path: the JSON Lines file to write (atomically).

    Returns:
        The number of rows written.
    """
    rows = []
    for image, caption in items:
        ident = caption_identifier(caption)
        reason = f"Derived from the caption's content words ({SOURCE_LABEL}), not written by a model."
        rows.append(
            {
                "response": f"caption:{caption}\nidentifier:{ident}\nreason:{reason}",
                "images": [{"bytes": None, "path": image}],
                "identifier_source": SOURCE_LABEL,
            }
        )
    return write_jsonl_atomic(out_path, rows)
