"""The paper's identifier-generation prompt (Sec. III-E), kept verbatim as package data.

The template ends with an empty three-line answer block (``caption:`` / ``identifier:`` /
``reason:``) after the line ``Now generate the result for the image below:``. For a
caption-conditioned request the empty ``caption:`` line of that block is filled in, so the model
sees the given caption; nothing else changes. No ``<image>`` tag is added here: dataset rows add it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

PROMPT_RESOURCE = "ssid_prompt.txt"
ANSWER_MARKER = "Now generate the result for the image below:"


@lru_cache(maxsize=1)
def load_prompt() -> str:
    """Return the prompt template exactly as shipped in ``swift_ssid/data/ssid_prompt.txt``.

    Returns:
        The template text, including its trailing newline.
    """
    return resources.files("swift_ssid").joinpath("data", PROMPT_RESOURCE).read_text(encoding="utf-8")


def render_prompt(caption: str | None = None) -> str:
    """Return the user prompt for one image, optionally conditioned on a caption.

    Args:
        caption: The image's caption, or None (or blank) for image-only generation, where the model
            writes its own caption. Line breaks inside the caption are joined with spaces so the
            answer block keeps its three lines.

    Returns:
        The template unchanged when there is no caption; otherwise the template with its final
        empty ``caption:`` line replaced by ``caption:<caption>``.

    Example:
        >>> render_prompt("A dog runs.").splitlines()[-3]
        'caption:A dog runs.'
    """
    template = load_prompt()
    if caption is None:
        return template
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str or None, got {type(caption).__name__} {caption!r}")
    text = " ".join(caption.split())
    if not text:
        return template
    marker = template.rfind(ANSWER_MARKER)
    if marker < 0:
        raise ValueError(
            f"prompt template has no line {ANSWER_MARKER!r}; restore swift_ssid/data/{PROMPT_RESOURCE} from git"
        )
    head, tail = template[:marker], template[marker:]
    line = "\ncaption:\n"
    at = tail.find(line)
    if at < 0:
        raise ValueError(
            f"prompt template has no empty 'caption:' line after {ANSWER_MARKER!r}; "
            f"restore swift_ssid/data/{PROMPT_RESOURCE} from git"
        )
    return head + tail[:at] + f"\ncaption:{text}\n" + tail[at + len(line) :]


MEMORIZE_PROMPT = "<image>Which identifier does this image have?"
RETRIEVE_PROMPT = "Which image matches this caption? {caption}"


def retrieve_prompt(caption: str) -> str:
    """Return the retrieval user turn for a caption (training rows and queries alike).

    Args:
        caption: The caption; whitespace runs are collapsed.

    Returns:
        ``RETRIEVE_PROMPT`` with the caption filled in.

    Example:
        >>> retrieve_prompt("A dog  runs.")
        'Which image matches this caption? A dog runs.'
    """
    return RETRIEVE_PROMPT.format(caption=" ".join(caption.split()))
