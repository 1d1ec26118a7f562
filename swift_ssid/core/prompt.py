"""The paper's identifier-generation prompt (Sec. III-E), kept verbatim as package data.

The template ends with an empty three-line answer block (``caption:`` / ``identifier:`` /
``reason:``) after the line ``Now generate the result for the image below:``. For a
caption-conditioned request the empty ``caption:`` line of that block is filled in, so the model
sees the given caption; nothing else changes. No ``<image>`` tag is added here: dataset rows add it.

Text rows of a collection (a description standing in for an image, or a document) use a text variant,
``ssid_prompt_text.txt``: ours, not the paper's. It is the paper's prompt with "image" read as "text", and its
answer block starts with a ``text:`` line that holds the text (:func:`render_text_prompt`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

PROMPT_RESOURCE = "ssid_prompt.txt"
TEXT_PROMPT_RESOURCE = "ssid_prompt_text.txt"
ANSWER_MARKER = "Now generate the result for the image below:"
TEXT_ANSWER_MARKER = "Now generate the result for the text below:"


@lru_cache(maxsize=2)
def load_prompt(resource: str = PROMPT_RESOURCE) -> str:
    """Return a prompt template exactly as shipped in ``swift_ssid/data/`` (default: the paper's).

    Args:
        resource: :data:`PROMPT_RESOURCE` (the paper's, verbatim) or :data:`TEXT_PROMPT_RESOURCE` (our text variant).

    Returns:
        The template text, including its trailing newline.
    """
    return resources.files("swift_ssid").joinpath("data", resource).read_text(encoding="utf-8")


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
    return _fill(template, PROMPT_RESOURCE, ANSWER_MARKER, "caption", caption)


def render_text_prompt(text: str, caption: str | None = None) -> str:
    """Return the user prompt for one text item (our text variant of the paper's prompt), optionally with a caption.

    Args:
        text: The description or document the model reads in place of an image (line breaks joined with spaces).
        caption: A caption to condition on, or None (or blank): the model writes its own.

    Returns:
        The text template with its empty ``text:`` line (and ``caption:`` line, when given) filled in.

    Example:
        >>> render_text_prompt("A dog runs on grass.", "A dog.").splitlines()[-4:-2]
        ['text:A dog runs on grass.', 'caption:A dog.']
    """
    if not isinstance(text, str) or not text.split():
        raise ValueError(f"text must be a non-empty string, got {text!r:.80}")
    prompt = _fill(load_prompt(TEXT_PROMPT_RESOURCE), TEXT_PROMPT_RESOURCE, TEXT_ANSWER_MARKER, "text", text)
    return prompt if caption is None else _fill(prompt, TEXT_PROMPT_RESOURCE, TEXT_ANSWER_MARKER, "caption", caption)


def _fill(template: str, resource: str, marker_line: str, field: str, value: str) -> str:
    """Fill the empty ``<field>:`` line after ``marker_line`` with ``value`` (one line); blank changes nothing."""
    value = " ".join(value.split())
    if not value:
        return template
    marker = template.rfind(marker_line)
    if marker < 0:
        raise ValueError(f"prompt template has no line {marker_line!r}; restore swift_ssid/data/{resource} from git")
    head, tail = template[:marker], template[marker:]
    line = f"\n{field}:\n"
    at = tail.find(line)
    if at < 0:
        raise ValueError(
            f"prompt template has no empty '{field}:' line after {marker_line!r}; "
            f"restore swift_ssid/data/{resource} from git"
        )
    return head + tail[:at] + f"\n{field}:{value}\n" + tail[at + len(line) :]


MEMORIZE_PROMPT = "<image>Which identifier does this image have?"
MEMORIZE_TEXT_PROMPT = "Which identifier does this text have? {text}"
RETRIEVE_PROMPT = "Which image matches this caption? {caption}"


def memorize_text_prompt(text: str) -> str:
    """Return the memorise user turn of a text item (the text in place of the image).

    Example:
        >>> memorize_text_prompt("A dog  runs.")
        'Which identifier does this text have? A dog runs.'
    """
    return MEMORIZE_TEXT_PROMPT.format(text=" ".join(text.split()))


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
