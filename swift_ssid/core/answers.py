"""Parse, repair and validate the model's three-line answer (``caption:`` / ``identifier:`` / ``reason:``).

Two public functions:

* :func:`canonical_identifier` is the one canonical form of an identifier. The index is built from
  it and generated identifiers are decoded through it, so two spellings that differ only in case,
  Unicode width, spacing, dash style or decoration name the same identifier.
* :func:`parse_response` reads one raw model response into an :class:`SSIDRecord`. It never raises
  on model output: whatever a careful reader could recover is recovered (status ``repaired``, with
  a short problem code per repair) and what cannot be used is rejected (status ``invalid``, with
  codes that say why).

Problem codes (stable strings, counted in the build stats):

* repairs: ``key_case``, ``key_spacing`` (space before the colon or an indented key), ``key_alias``
  (``rationale:`` / ``explanation:`` read as ``reason:``), ``fullwidth_colon``, ``markdown`` (bullets,
  headings, emphasis, rules), ``numbering``, ``code_fence``, ``angle_brackets``, ``quotes``,
  ``trailing_period``, ``out_of_order``, ``preamble``, ``trailing_chatter``, ``stray_lines`` (unkeyed
  lines between the used ones), ``echoed_template`` (extra empty, placeholder or example lines),
  ``single_line`` (keys inside one line), ``blank_lines``, ``value_next_line`` (``identifier:`` with
  its value on the next line), ``multiple_identifiers`` (the first usable one is kept),
  ``repeated_fields``, ``truncated`` (input over :data:`MAX_RESPONSE_CHARS`).
* notes that leave the status alone: ``missing_caption``, ``empty_caption``, ``missing_reason``,
  ``empty_reason``.
* rejections (status ``invalid``): see :data:`REJECTION_CODES`.

Identifier bound: an identifier is rejected as ``too_many_words`` above :data:`MAX_IDENTIFIER_WORDS`
(12) words, and as ``sentence_identifier`` when it reads as a clause: it contains a finite form of
*be* (``is``, ``are``, ``was``...) and either ends in ``.``, ``!`` or ``?`` or has no `` - ``
separator. The paper's identifiers are 3-6 tokens of "compact semantic units" that "avoid
full-sentence structures" (Sec. III-C); 12 words is twice the upper end, so long noun phrases pass
and paragraphs do not.

Tokenizer-safe identifiers: an identifier must come back unchanged from the model's tokens. The canonical
form turns SentencePiece's word marker ``▁`` (U+2581, which tokenises like a space) into a space, and an
identifier holding special-token text (``</s>``, ``<s>``, ``<pad>``, ``<unk>``, ``<image>``, ``<|im_end|>``,
``<0x0A>``, ``[INST]``, ``<<SYS>>``: tokenizers turn such text into the control token itself, so generation
would stop inside the identifier or drop it) is rejected as ``special_token``. The trie build checks the
round trip again for each tokenizer (:func:`swift_ssid.decoding.tokenisation.round_trip_offenders`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

from swift_ssid.core.prompt import load_prompt

Status = Literal["ok", "repaired", "invalid"]

MAX_RESPONSE_CHARS = 20_000
MAX_IDENTIFIER_WORDS = 12
MAX_IDENTIFIER_CHARS = 200
KEYS = ("caption", "identifier", "reason")

REJECTION_CODES = frozenset(
    {
        "empty_response",
        "no_keys",
        "missing_identifier",
        "empty_identifier",
        "placeholder_identifier",
        "too_long",
        "too_many_words",
        "sentence_identifier",
        "template_echo",
        "special_token",
    }
)
NOTE_CODES = frozenset({"missing_caption", "empty_caption", "missing_reason", "empty_reason"})


# ---------------------------------------------------------------- canonical form

# Dash-like characters that, used as separators, become " - ". After NFKC the full-width and small
# hyphen-minus forms are already U+002D and the small em dash is U+2014.
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d"  # a regex class body
# A single hyphen between two letters or digits ("t-shirt", "mother-in-law", "2-3") is part of the word;
# any other run of dashes, with the spaces around it, is one separator. Linear: no nested repeats.
_DASH_RE = re.compile(
    rf"(?P<word>(?<=[^\W_])[-\u2010\u2011](?=[^\W_]))|(?P<sep> ?[{_DASHES}](?:[ {_DASHES}]*[{_DASHES}])? ?)"
)
_SPACE_RE = re.compile(r"[\s\u2581]+")  # U+2581: SentencePiece's word marker, a space to any tokenizer
# Special-token text (after canonicalising: lower case): <|...|>, <word>, </word>, <0xNN>, [inst], <<sys>>.
SPECIAL_TOKEN_RE = re.compile(r"<\|[^<>|]*\|>|</?[a-z][a-z0-9_.:-]*>|<0x[0-9a-f]{2}>|\[/?inst\]|<</?sys>>")
_PAIRS = {
    '"': '"',
    "'": "'",
    "\u201c": "\u201d",
    "\u2018": "\u2019",
    "<": ">",
    "(": ")",
    "[": "]",
    "{": "}",
    "\u300c": "\u300d",
    "\u300e": "\u300f",
    "\u00ab": "\u00bb",
}
_ALWAYS_STRIP = "*`_"
_TRAILING_PUNCT = ".,;:"


def _strip_controls(text: str) -> str:
    """Drop format characters (zero-width spaces, BOMs) and turn other control characters into spaces."""
    if text.isprintable():  # fast path: no Cc, Cf, Zl or Zp character
        return text
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cf":
            continue
        out.append(" " if cat in ("Cc", "Zl", "Zp") else ch)
    return "".join(out)


def _fold(text: str) -> str:
    """NFKC-normalise and lower-case until stable (lower-casing can denormalise a few characters)."""
    for _ in range(4):
        folded = unicodedata.normalize("NFKC", text).lower()
        if folded == text:
            break
        text = folded
    return text


class _Wraps:
    """Answers "does ``text[lo]`` open a bracket or quote that ``text[hi - 1]`` closes, wrapping all of
    ``text[lo:hi]``?" in O(1) after one linear pass per bracket kind, so stripping nested pairs stays linear.

    An opener's partner is the first later position where that kind's depth returns to zero, which depends
    only on what follows the opener: one stack pass over the whole text finds it for every opener.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._partner: dict[str, dict[int, int]] = {}

    def _partners(self, opener: str) -> dict[int, int]:
        if opener not in self._partner:
            closer, stack, partner = _PAIRS[opener], [], {}
            for i, ch in enumerate(self.text):
                if ch == opener:
                    stack.append(i)
                elif ch == closer and stack:
                    partner[stack.pop()] = i
            self._partner[opener] = partner
        return self._partner[opener]

    def __call__(self, lo: int, hi: int) -> bool:
        text = self.text
        if hi - lo < 2 or text[lo] not in _PAIRS or _PAIRS[text[lo]] != text[hi - 1]:
            return False
        opener = text[lo]
        if opener == _PAIRS[opener]:  # symmetric quote: the inner text must not contain it
            return text.find(opener, lo + 1, hi - 1) < 0
        return self._partners(opener).get(lo) == hi - 1


def _closing_match(text: str) -> bool:
    """Return True when ``text[0]`` opens a bracket or quote that is closed by ``text[-1]`` and wraps the whole text."""
    return _Wraps(text)(0, len(text))


def _strip_decoration(text: str) -> str:
    """Strip surrounding quotes, brackets, markdown markers, dash separators and trailing punctuation until stable.

    Works on two indices into ``text`` (no copies per pass), so nested decoration costs linear time.
    """
    wraps = _Wraps(text)
    lo, hi = 0, len(text)
    while True:
        before = (lo, hi)
        while lo < hi and text[lo] == " ":
            lo += 1
        while hi > lo and text[hi - 1] == " ":
            hi -= 1
        while lo < hi and text[lo] in _ALWAYS_STRIP:
            lo += 1
        while hi > lo and text[hi - 1] in _ALWAYS_STRIP:
            hi -= 1
        while hi > lo and text[hi - 1] in _TRAILING_PUNCT:
            hi -= 1
        if hi > lo and text[lo] == "-" and (hi - lo == 1 or text[lo + 1] == " "):
            lo += 1
        if hi > lo and text[hi - 1] == "-" and (hi - lo == 1 or text[hi - 2] == " "):
            hi -= 1
        if wraps(lo, hi):
            lo, hi = lo + 1, hi - 1
        if (lo, hi) == before:
            return text[lo:hi]


def canonical_identifier(text: str) -> str:
    """Return the one canonical spelling of an identifier, used both to build the index and to decode.

    Steps: drop zero-width/format characters; Unicode NFKC; **lower-case** (the paper's example
    ``two white males - bushes`` is lower case, and case carries no identity here); collapse all
    whitespace, line breaks included, to single spaces; every run of hyphens, en/em dashes, minus
    signs and similar used as a separator becomes `` - `` (a single hyphen inside a word, as in
    ``t-shirt``, stays); strip surrounding quotes, brackets, backticks, asterisks, leading/trailing
    separators and trailing ``.,;:``. Idempotent, and the result never contains a line break.

    Args:
        text: An identifier as written by a model or a person.

    Returns:
        The canonical identifier; ``""`` when nothing is left.

    Example:
        >>> canonical_identifier("**Two White Males – Bushes.**")
        'two white males - bushes'
    """
    # Short values are cached: a parse looks at each value several times. Long ones are rare and not kept.
    return _canonical_cached(text) if len(text) <= MAX_IDENTIFIER_CHARS else _canonical(text)


def _canonical(text: str) -> str:
    """Compute :func:`canonical_identifier`."""
    text = _fold(_strip_controls(text))
    text = _SPACE_RE.sub(" ", text).strip()
    text = _DASH_RE.sub(lambda m: "-" if m.group("word") else " - ", text)
    return _strip_decoration(_SPACE_RE.sub(" ", text))


_canonical_cached = lru_cache(maxsize=8192)(_canonical)


def identifier_words(identifier: str) -> int:
    """Return the number of words in an identifier, not counting `` - `` separators.

    Args:
        identifier: A canonical identifier.

    Returns:
        The word count, e.g. 4 for ``two white males - bushes``.
    """
    return sum(1 for token in identifier.split() if token != "-")


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class SSIDRecord:
    """One parsed model answer.

    Attributes:
        caption: The caption line's value (stripped of decoration, case kept), or None.
        identifier: The canonical identifier, or None when the answer is invalid.
        reason: The reason line's value, or None.
        status: ``ok`` (read as is), ``repaired`` (recovered from a format slip) or ``invalid``.
        problems: Problem codes in the order found; see the module docstring.
    """

    caption: str | None
    identifier: str | None
    reason: str | None
    status: Status
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Return the record as a JSON-ready dict (problems as a list)."""
        row = asdict(self)
        row["problems"] = list(self.problems)
        return row


# ---------------------------------------------------------------- parsing

_KEY_ALIASES = {
    "caption": "caption",
    "identifier": "identifier",
    "reason": "reason",
    "rationale": "reason",
    "explanation": "reason",
}
_KEY_NAMES = "caption|identifier|reason|rationale|explanation"
_EMPHASIS = r"(?:\*{1,2}|_{1,2}|`)"
# One keyed line: optional bullet / heading / block quote, optional numbering, optional markdown
# emphasis around the key, the key, optional spaces, an ASCII or full-width colon, the value.
# Every repeat is bounded or followed by a literal, so matching is linear in the line length.
_LINE_RE = re.compile(
    r"^(?P<indent>[ \t]*)"
    r"(?P<bullet>(?:[-*+\u2022]|#{1,6}|>)[ \t]+)?"
    r"(?P<num>\(?\d{1,3}[.)][ \t]*)?"
    rf"(?P<em1>{_EMPHASIS})?"
    rf"(?P<key>(?i:{_KEY_NAMES}))"
    rf"(?P<em2>{_EMPHASIS})?"
    r"(?P<space>[ \t]*)"
    r"(?P<colon>[:\uff1a])"
    rf"(?P<em3>{_EMPHASIS})?"
    r"(?P<value>.*)$"
)
# A key inside a line ("caption: a dog identifier: dog - ball reason: ..."), not glued to a preceding letter.
_INLINE_RE = re.compile(rf"(?<![^\W\d_])(?P<key>(?i:{_KEY_NAMES}))(?:\*{{1,2}})?[ \t]*[:\uff1a](?:\*{{1,2}})?")
_FENCE_RE = re.compile(r"^\s*(?:```|~~~)")
_RULE_RE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$")
# Canonical values that stand in for an answer (the bracketed template placeholders are caught by shape).
PLACEHOLDER_VALUES = frozenset(
    {
        "your identifier here",
        "your caption here",
        "your explanation here",
        "your reason here",
        "your identifier",
        "identifier",
        "caption",
        "reason",
        "explanation",
        "n/a",
        "tbd",
        "todo",
        "placeholder",
    }
)
_FIELD_WORD_RE = re.compile(r"\b(?:caption|identifier|reason|explanation)\b")
_BRACKETED_RE = re.compile(r"^\s*[<\[{(\uff1c].*[>\]})\uff1e]\s*$")
_FINITE_BE_RE = re.compile(r"\b(?:is|are|was|were|am)(?:n't|n\u2019t)?\b")
_WRAP_QUOTES = "\"'\u201c\u2018"


@dataclass
class _Field:
    """One occurrence of a key in the response: its key (None for an unkeyed line), line number and value."""

    key: str | None
    line: int
    value: str


def _dedupe(codes: list[str]) -> tuple[str, ...]:
    """Return the codes without repeats, first occurrence first."""
    return tuple(dict.fromkeys(codes))


def _is_placeholder(value: str) -> bool:
    """Return True for the template's placeholder or a stand-in (``<your identifier here>``, ``<identifier>``)."""
    inner = canonical_identifier(value)
    if inner in PLACEHOLDER_VALUES:
        return True
    return bool(_BRACKETED_RE.match(value) and _FIELD_WORD_RE.search(inner))


def _unwrap(value: str, problems: list[str]) -> str:
    """Strip markdown emphasis, angle brackets and quotes around a value, noting each repair (linear time)."""
    text = unicodedata.normalize("NFKC", value) if "\uff1c" in value else value
    wraps = _Wraps(text)
    lo, hi = 0, len(text)

    def trim() -> None:
        nonlocal lo, hi
        while lo < hi and text[lo].isspace():
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1

    trim()
    while True:
        before = (lo, hi)
        if lo < hi and (text[lo] in _ALWAYS_STRIP or text[hi - 1] in _ALWAYS_STRIP):
            while lo < hi and text[lo] in _ALWAYS_STRIP:
                lo += 1
            while hi > lo and text[hi - 1] in _ALWAYS_STRIP:
                hi -= 1
            trim()
            problems.append("markdown")
        if lo < hi and text[lo] == "<" and wraps(lo, hi):
            lo, hi = lo + 1, hi - 1
            trim()
            problems.append("angle_brackets")
        if lo < hi and text[lo] in _WRAP_QUOTES and wraps(lo, hi):
            lo, hi = lo + 1, hi - 1
            trim()
            problems.append("quotes")
        if (lo, hi) == before:
            return text[lo:hi]


def _identifier_repairs(value: str) -> list[str]:
    """Return the repair codes for the decoration that canonicalising this raw identifier removes."""
    codes: list[str] = []
    text = _unwrap(value, codes)
    while text.endswith("."):
        codes.append("trailing_period")
        text = _unwrap(text.rstrip("."), codes)
    return codes


def _scan_lines(text: str, problems: list[str]) -> list[_Field]:
    """Split the response into fields, one per non-blank line (key None for unkeyed lines), noting format slips."""
    fields: list[_Field] = []
    seen_content = False
    pending_blank = False
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            pending_blank = seen_content
            continue
        if pending_blank:
            problems.append("blank_lines")
            pending_blank = False
        seen_content = True
        if _FENCE_RE.match(line):
            problems.append("code_fence")
            continue
        if _RULE_RE.match(line):
            problems.append("markdown")
            continue
        m = _LINE_RE.match(line)
        if not m:
            fields.append(_Field(None, i, line))
            continue
        key_text = m.group("key")
        key = _KEY_ALIASES[key_text.lower()]
        if key_text != key_text.lower():
            problems.append("key_case")
        if key_text.lower() != key:
            problems.append("key_alias")
        if m.group("space") or m.group("indent"):
            problems.append("key_spacing")
        if m.group("colon") != ":":
            problems.append("fullwidth_colon")
        if m.group("bullet") or m.group("em1") or m.group("em2") or m.group("em3"):
            problems.append("markdown")
        if m.group("num"):
            problems.append("numbering")
        fields.append(_Field(key, i, m.group("value")))
    return fields


def _split_inline(fields: list[_Field], problems: list[str]) -> list[_Field]:
    """Split out keys that no line starts with but that appear inside a line (all three keys on one line)."""
    present = {f.key for f in fields}
    missing = {k for k in KEYS if k not in present}
    if not missing:
        return fields
    out: list[_Field] = []
    for field in fields:
        matches = [m for m in _INLINE_RE.finditer(field.value) if _KEY_ALIASES[m.group("key").lower()] in missing]
        if not matches:
            out.append(field)
            continue
        problems.append("single_line")
        head = field.value[: matches[0].start()]
        if field.key is not None or head.strip():
            out.append(_Field(field.key, field.line, head))
        for j, m in enumerate(matches):
            end = matches[j + 1].start() if j + 1 < len(matches) else len(field.value)
            key = m.group("key")
            if key != key.lower():
                problems.append("key_case")
            out.append(_Field(_KEY_ALIASES[key.lower()], field.line, field.value[m.end() : end]))
    return out


def _fill_next_line(fields: list[_Field], problems: list[str]) -> list[_Field]:
    """Take the value of an empty key from the next line when that line has no key (``identifier:\\n dog - ball``)."""
    out: list[_Field] = []
    skip = False
    valued = {f.key for f in fields if f.value.strip()}  # keys with a value somewhere (one pass: linear time)
    for i, field in enumerate(fields):
        if skip:
            skip = False
            continue
        nxt = fields[i + 1] if i + 1 < len(fields) else None
        has_value = field.key in valued
        if field.key is not None and not field.value.strip() and not has_value and nxt is not None and nxt.key is None:
            problems.append("value_next_line")
            out.append(_Field(field.key, field.line, nxt.value))
            skip = True
            continue
        out.append(field)
    return out


def has_finite_be(identifier: str) -> bool:
    """Whether an identifier holds a finite form of *be* (is, are, was, were, am, also with n't): a clause's mark.

    The one sentence test of the package: :func:`parse_response` rejects such an identifier when it also ends
    like a sentence or has no `` - `` separator (``sentence_identifier``), and
    :func:`swift_ssid.core.quality.is_sentence_like` counts it.

    Example:
        >>> has_finite_be("a dog is running"), has_finite_be("dog - isn't running"), has_finite_be("island - sun")
        (True, True, False)
    """
    return bool(_FINITE_BE_RE.search(identifier))


def _check_identifier(raw: str, identifier: str) -> str | None:
    """Return the rejection code for a non-empty identifier value, or None when it is usable."""
    if len(raw.strip()) > MAX_IDENTIFIER_CHARS:
        return "too_long"
    if SPECIAL_TOKEN_RE.search(identifier):
        return "special_token"
    if identifier_words(identifier) > MAX_IDENTIFIER_WORDS:
        return "too_many_words"
    if has_finite_be(identifier):
        ends_like_sentence = raw.strip().rstrip(_ALWAYS_STRIP + _WRAP_QUOTES + "\u201d\u2019> ")[-1:] in ".!?"
        if ends_like_sentence or " - " not in identifier:
            return "sentence_identifier"
    return None


@lru_cache(maxsize=1)
def _template_values() -> frozenset[str]:
    """Return the canonical values of the prompt's own keyed lines (placeholders and the in-context example).

    A model that echoes the prompt repeats them; they are skipped when the response has a genuine answer.
    """
    values = set()
    for line in load_prompt().splitlines():
        m = _LINE_RE.match(line)
        if m and canonical_identifier(m.group("value")):
            values.add(canonical_identifier(m.group("value")))
    return frozenset(values)


def _usable(field: _Field) -> bool:
    """Return True when a field has a value that is neither empty nor a placeholder."""
    return bool(canonical_identifier(field.value)) and not _is_placeholder(field.value)


def _pick(candidates: list[_Field], anchor: int, before: bool) -> _Field | None:
    """Return the usable candidate nearest to position ``anchor``, on the preferred side first."""
    usable = [(i, f) for i, f in candidates if _usable(f)]
    side = [p for p in usable if (p[0] < anchor if before else p[0] > anchor)]
    if side:
        return (side[-1] if before else side[0])[1]
    return usable[0][1] if usable else None


def _text_value(field: _Field | None, key: str, present: bool, problems: list[str]) -> str | None:
    """Return the cleaned caption or reason value, noting a missing or empty one."""
    if field is None:
        problems.append(f"empty_{key}" if present else f"missing_{key}")
        return None
    return " ".join(_unwrap(field.value, problems).split()) or None


def parse_response(text: str) -> SSIDRecord:
    """Parse one model response into an :class:`SSIDRecord`; never raises on model output.

    The identifier is the first usable ``identifier:`` value (empty values, placeholders and, when
    another candidate exists, the prompt's own in-context example are skipped). The caption is the nearest
    usable ``caption:`` before it (else after), the reason the nearest ``reason:`` after it (else before).

    Args:
        text: The raw ``response`` string from ``swift infer`` (None and non-strings are tolerated).
            Only the first :data:`MAX_RESPONSE_CHARS` characters are read, so time and memory are bounded.

    Returns:
        The record. ``identifier`` is canonical (see :func:`canonical_identifier`), or None when the
        status is ``invalid``; ``problems`` lists every repair, note and rejection code.

    Example:
        >>> parse_response("caption:A dog.\\nidentifier:Dog - Ball\\nreason:It shows a dog.").identifier
        'dog - ball'
    """
    problems: list[str] = []
    if text is None:
        text = ""
    elif not isinstance(text, str):
        text = str(text)
    if len(text) > MAX_RESPONSE_CHARS:
        text = text[:MAX_RESPONSE_CHARS]
        problems.append("truncated")
    if not text.strip():
        return SSIDRecord(None, None, None, "invalid", _dedupe(problems + ["empty_response"]))

    fields = _fill_next_line(_split_inline(_scan_lines(text, problems), problems), problems)
    keyed = [(i, f) for i, f in enumerate(fields) if f.key is not None]
    if not keyed:
        return SSIDRecord(None, None, None, "invalid", _dedupe(problems + ["no_keys"]))
    by_key = {key: [(i, f) for i, f in keyed if f.key == key] for key in KEYS}

    # The identifier: first usable occurrence; the prompt's example only if nothing else is there.
    identifiers = by_key["identifier"]
    usable = [(i, f) for i, f in identifiers if _usable(f)]
    genuine = [(i, f) for i, f in usable if canonical_identifier(f.value) not in _template_values()] or usable
    rejection = None
    if not identifiers:
        rejection = "missing_identifier"
    elif not any(canonical_identifier(f.value) for _, f in identifiers):
        rejection = "empty_identifier"
    elif not usable:
        rejection = "placeholder_identifier"
    anchor, chosen = genuine[0] if genuine else (keyed[0][0], None)
    identifier = None
    if chosen is not None:
        problems.extend(_identifier_repairs(chosen.value))
        identifier = canonical_identifier(chosen.value)
        rejection = _check_identifier(chosen.value, identifier)
        if identifier in _template_values() and len(usable) < len(identifiers):
            rejection = "template_echo"  # only the prompt echoed back: its example beside its placeholders

    cap = _pick(by_key["caption"], anchor, before=True)
    rea = _pick(by_key["reason"], anchor, before=False)
    caption = _text_value(cap, "caption", bool(by_key["caption"]), problems)
    reason = _text_value(rea, "reason", bool(by_key["reason"]), problems)

    if chosen is not None:
        used = {id(f) for f in (cap, chosen, rea) if f is not None}
        order = [f.key for f in fields if id(f) in used]
        if order != [k for k in KEYS if k in order]:
            problems.append("out_of_order")
        used_keys = {f.key for f in (cap, chosen, rea) if f is not None}
        extras = [f for _, f in keyed if id(f) not in used]
        genuine_extras = [f for f in extras if _usable(f) and canonical_identifier(f.value) not in _template_values()]
        genuine_ids = {id(f) for f in genuine_extras}  # a set: list membership made this quadratic
        # An unused empty/placeholder line beside a used one of the same key, or the prompt's example: an echo.
        if any(id(f) not in genuine_ids and (f.key in used_keys or _usable(f)) for f in extras):
            problems.append("echoed_template")
        if any(f.key == "identifier" and canonical_identifier(f.value) != identifier for f in genuine_extras):
            problems.append("multiple_identifiers")
        elif genuine_extras:
            problems.append("repeated_fields")
        positions = [i for i, f in enumerate(fields) if id(f) in used]
        for i, f in enumerate(fields):
            if f.key is None:
                problems.append(
                    "preamble" if i < positions[0] else "trailing_chatter" if i > positions[-1] else "stray_lines"
                )

    if rejection:
        return SSIDRecord(caption, None, reason, "invalid", _dedupe(problems + [rejection]))
    repaired = any(p not in NOTE_CODES for p in problems)
    return SSIDRecord(caption, identifier, reason, "repaired" if repaired else "ok", _dedupe(problems))


# ---------------------------------------------------------------- training targets and retrieval choices

IDENTIFIER_PREFIX = "identifier:"
REASON_PREFIX = "reason:"


def _one_line(text: str) -> str:
    """Collapse whitespace (line breaks included) so a value stays on its line."""
    return " ".join(text.split())


def format_target(identifier: str, reason: str | None = None, with_reason: bool = True) -> str:
    """Return the assistant turn: ``identifier:<id>\\nreason:<reason>``, or the identifier line alone.

    Args:
        identifier: The identifier (canonical form, from the index).
        reason: The reason sentence; required when ``with_reason``.
        with_reason: False for the no-reason ablation.

    Returns:
        The target text (no trailing newline).
    """
    line = f"{IDENTIFIER_PREFIX}{_one_line(identifier)}"
    if not with_reason:
        return line
    if reason is None or not _one_line(reason):
        raise ValueError(
            f"identifier {identifier!r} has no reason; the reason datasets need one (use the "
            "-noreason datasets, or regenerate the image)"
        )
    return f"{line}\n{REASON_PREFIX}{_one_line(reason)}"


def parse_choice(text: str) -> tuple[str, str | None]:
    """Read the identifier and reason from one generated response.

    Args:
        text: e.g. ``"identifier:dog - park\\nreason:A dog runs in a park."``.

    Returns:
        ``(canonical identifier, reason or None)``; the identifier is the text after the first
        ``identifier:`` up to the line end (the whole first line when the prefix is missing).
    """
    start = text.find(IDENTIFIER_PREFIX)
    body = text[start + len(IDENTIFIER_PREFIX) :] if start >= 0 else text
    line, _, rest = body.partition("\n")
    reason = None
    at = rest.find(REASON_PREFIX)
    if at >= 0:
        reason = " ".join(rest[at + len(REASON_PREFIX) :].split()) or None
    return canonical_identifier(line), reason
