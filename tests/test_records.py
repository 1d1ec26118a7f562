"""Tests for the prompt, the canonical identifier form and the three-line response parser."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from swift_ssid.core.answers import (
    MAX_IDENTIFIER_WORDS,
    MAX_RESPONSE_CHARS,
    NOTE_CODES,
    PLACEHOLDER_VALUES,
    REJECTION_CODES,
    SSIDRecord,
    canonical_identifier,
    identifier_words,
    parse_response,
)
from swift_ssid.core.prompt import ANSWER_MARKER, load_prompt, render_prompt

# ---------------------------------------------------------------- prompt


def test_load_prompt_is_the_papers_template():
    prompt = load_prompt()
    assert prompt.startswith("You are given an image.\n")
    assert "identifier:two white males - bushes\n" in prompt
    assert prompt.endswith(f"{ANSWER_MARKER}\ncaption:\nidentifier:\nreason:\n")
    assert "<image>" not in prompt


def test_render_prompt_without_caption_is_the_template():
    assert render_prompt() == load_prompt()
    assert render_prompt(None) == load_prompt()
    assert render_prompt("   ") == load_prompt()


def test_render_prompt_fills_only_the_final_caption_line():
    template = load_prompt()
    rendered = render_prompt("A dog runs\n on grass.")
    assert rendered.endswith(f"{ANSWER_MARKER}\ncaption:A dog runs on grass.\nidentifier:\nreason:\n")
    # Everything before the answer block is unchanged, the example's caption included.
    head = template[: template.rindex(ANSWER_MARKER)]
    assert rendered.startswith(head)
    assert rendered.count("caption:A dog runs on grass.") == 1
    assert len(rendered.splitlines()) == len(template.splitlines())


def test_render_prompt_rejects_non_string_caption():
    with pytest.raises(TypeError, match="caption must be a str"):
        render_prompt(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- canonical form

CANONICAL_CASES = [
    ("two white males - bushes", "two white males - bushes"),
    ("Two White Males - Bushes", "two white males - bushes"),
    ("cheerleaders – chairs – spectators", "cheerleaders - chairs - spectators"),  # en dash (the paper's example)
    ("dog—ball", "dog - ball"),  # em dash without spaces is still a separator
    ("dog − ball", "dog - ball"),  # minus sign
    ("dog--ball", "dog - ball"),
    ("dog - - ball", "dog - ball"),
    ("dog -ball", "dog - ball"),
    ("t-shirt man - beach", "t-shirt man - beach"),  # a hyphen inside a word stays
    ("mother-in-law - hat", "mother-in-law - hat"),
    ("2-3 dogs", "2-3 dogs"),
    ("t\u2010shirt", "t-shirt"),  # Unicode hyphen inside a word becomes ASCII
    ("ｄｏｇ　－　ｂａｌｌ", "dog - ball"),  # full-width letters, space and hyphen (NFKC)
    ("  dog \t\n ball  ", "dog ball"),
    ('"dog - ball"', "dog - ball"),
    ("“dog - ball”", "dog - ball"),
    ("<dog - ball>", "dog - ball"),
    ("[dog - ball]", "dog - ball"),
    ("**dog - ball**", "dog - ball"),
    ("`dog - ball`", "dog - ball"),
    ("dog - ball.", "dog - ball"),
    ('"dog - ball."', "dog - ball"),
    ("- dog - ball -", "dog - ball"),
    ("(a) - (b)", "(a) - (b)"),  # brackets that do not wrap the whole identifier stay
    ("dog (small) - ball", "dog (small) - ball"),
    ("dog's ball", "dog's ball"),
    ("dog\u200b - ball", "dog - ball"),  # zero-width space dropped
    ("", ""),
    ("---", ""),
    ('""', ""),
]


@pytest.mark.parametrize(("raw", "expected"), CANONICAL_CASES)
def test_canonical_identifier_examples(raw, expected):
    assert canonical_identifier(raw) == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_canonical_identifier_is_idempotent_and_single_line(text):
    once = canonical_identifier(text)
    assert canonical_identifier(once) == once
    assert len(once.splitlines()) <= 1
    assert "\n" not in once and "\r" not in once
    assert once == once.strip()
    assert "  " not in once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="-–—− \t\n\"'*`.<>()[]ab", max_size=40))
def test_canonical_identifier_is_idempotent_on_separator_soup(text):
    once = canonical_identifier(text)
    assert canonical_identifier(once) == once
    # Every hyphen left is either inside a word ("a-b") or a " - " separator between two words.
    for m in re.finditer("-", once):
        left, right = once[m.start() - 1 : m.start()], once[m.end() : m.end() + 1]
        assert (left.isalnum() and right.isalnum()) or (left == " " and right == " "), once


def test_identifier_words_skips_separators():
    assert identifier_words("two white males - bushes") == 4
    assert identifier_words("t-shirt - beach") == 2
    assert identifier_words("") == 0


# ---------------------------------------------------------------- parse_response: accepted as is

GOOD = "caption:A dog runs on grass.\nidentifier:dog - grass - ball\nreason:The image shows a dog on grass."


def test_well_formed_answer_is_ok():
    record = parse_response(GOOD)
    assert record == SSIDRecord(
        caption="A dog runs on grass.",
        identifier="dog - grass - ball",
        reason="The image shows a dog on grass.",
        status="ok",
        problems=(),
    )
    assert record.to_dict() == {
        "caption": "A dog runs on grass.",
        "identifier": "dog - grass - ball",
        "reason": "The image shows a dog on grass.",
        "status": "ok",
        "problems": [],
    }


def test_papers_example_is_ok():
    prompt_lines = load_prompt().splitlines()
    start = prompt_lines.index("CORRECT FORMAT EXAMPLE:") + 1
    record = parse_response("\n".join(prompt_lines[start : start + 3]))
    assert record.status == "ok"
    assert record.identifier == "two white males - bushes"
    assert record.caption == "Two young, White males are outside near many bushes."


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "\n",  # trailing newline
        GOOD.replace("\n", "\r\n"),  # Windows line endings
        GOOD.replace(":", ": "),  # a space after the colon
        "\n" + GOOD,  # leading newline
        GOOD.replace("dog - grass - ball", "Dog – Grass – Ball"),  # case and dash style are canonicalised, not repairs
    ],
)
def test_harmless_variations_stay_ok(text):
    record = parse_response(text)
    assert record.status == "ok", record.problems
    assert record.identifier == "dog - grass - ball"


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("caption:A dog.\nidentifier:dog - ball", "missing_reason"),
        ("identifier:dog - ball\nreason:It is a dog.", "missing_caption"),
        ("caption:\nidentifier:dog - ball\nreason:It is a dog.", "empty_caption"),
        ("caption:A dog.\nidentifier:dog - ball\nreason:", "empty_reason"),
    ],
)
def test_missing_caption_or_reason_is_noted_but_ok(text, note):
    record = parse_response(text)
    assert record.status == "ok"
    assert record.identifier == "dog - ball"
    assert note in record.problems
    assert note in NOTE_CODES


# ---------------------------------------------------------------- parse_response: repaired

REPAIRS = [
    ("Caption: A dog.\nIdentifier: dog - ball\nReason: It is a dog.", {"key_case"}, "A dog.", "It is a dog."),
    ("caption :A dog.\nidentifier : dog - ball\nreason :It is a dog.", {"key_spacing"}, "A dog.", "It is a dog."),
    ("caption：A dog.\nidentifier：dog - ball\nreason：It is a dog.", {"fullwidth_colon"}, "A dog.", "It is a dog."),
    ("caption:A dog.\n\nidentifier:dog - ball\n\nreason:It is a dog.", {"blank_lines"}, "A dog.", "It is a dog."),
    ("- caption: A dog.\n- identifier: dog - ball\n- reason: It is a dog.", {"markdown"}, "A dog.", "It is a dog."),
    ("* caption: A dog.\n* identifier: dog - ball\n* reason: It is a dog.", {"markdown"}, "A dog.", "It is a dog."),
    ("1. caption: A dog.\n2. identifier: dog - ball\n3. reason: It is a dog.", {"numbering"}, "A dog.", "It is a dog."),
    ("1) caption: A dog.\n2) identifier: dog - ball\n3) reason: It is a dog.", {"numbering"}, "A dog.", "It is a dog."),
    (
        "**caption:** A dog.\n**identifier:** dog - ball\n**reason:** It is a dog.",
        {"markdown"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "**Caption**: A dog.\n**Identifier**: dog - ball\n**Reason**: It is a dog.",
        {"markdown", "key_case"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "### Identifier: dog - ball\ncaption: A dog.\nreason: It is a dog.",
        {"markdown", "key_case", "out_of_order"},
        "A dog.",
        "It is a dog.",
    ),
    ("```\ncaption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\n```", {"code_fence"}, "A dog.", "It is a dog."),
    (
        "```text\ncaption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\n```",
        {"code_fence"},
        "A dog.",
        "It is a dog.",
    ),
    ("caption:<A dog.>\nidentifier:<dog - ball>\nreason:<It is a dog.>", {"angle_brackets"}, "A dog.", "It is a dog."),
    ('caption:"A dog."\nidentifier:"dog - ball"\nreason:"It is a dog."', {"quotes"}, "A dog.", "It is a dog."),
    ("caption:A dog.\nidentifier:`dog - ball`\nreason:It is a dog.", {"markdown"}, "A dog.", "It is a dog."),
    ("caption:A dog.\nidentifier:dog - ball.\nreason:It is a dog.", {"trailing_period"}, "A dog.", "It is a dog."),
    ("reason:It is a dog.\nidentifier:dog - ball\ncaption:A dog.", {"out_of_order"}, "A dog.", "It is a dog."),
    (
        "Sure! Here is the result:\ncaption:A dog.\nidentifier:dog - ball\nreason:It is a dog.",
        {"preamble"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "caption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\nLet me know if you need more!",
        {"trailing_chatter"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "caption:A dog.\nNote: bright day.\nidentifier:dog - ball\nreason:It is a dog.",
        {"stray_lines"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "caption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\ncaption:\nidentifier:\nreason:",
        {"echoed_template"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "caption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\ncaption:<your caption here>\n"
        "identifier:<your identifier here>\nreason:<your explanation here>",
        {"echoed_template"},
        "A dog.",
        "It is a dog.",
    ),
    ("caption: A dog. identifier: dog - ball reason: It is a dog.", {"single_line"}, "A dog.", "It is a dog."),
    (
        "Caption: A dog. Identifier: dog - ball Reason: It is a dog.",
        {"single_line", "key_case"},
        "A dog.",
        "It is a dog.",
    ),
    ("caption:A dog.\nidentifier: dog - ball reason: It is a dog.", {"single_line"}, "A dog.", "It is a dog."),
    ("caption:A dog.\nidentifier:\ndog - ball\nreason:It is a dog.", {"value_next_line"}, "A dog.", "It is a dog."),
    ("caption:A dog.\nidentifier:dog - ball\nrationale:It is a dog.", {"key_alias"}, "A dog.", "It is a dog."),
    (
        "caption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\nidentifier:cat - hat",
        {"multiple_identifiers"},
        "A dog.",
        "It is a dog.",
    ),
    (
        "caption:A dog.\nidentifier:dog - ball\nreason:It is a dog.\ncaption:A dog.\nidentifier:dog - ball\n"
        "reason:It is a dog.",
        {"repeated_fields"},
        "A dog.",
        "It is a dog.",
    ),
    # A messy but readable answer: several slips at once.
    (
        'Here you go!\n\n```markdown\n1. **Caption :** "A dog."\n2. **Identifier：** <Dog – Ball>.\n'
        "3. **Reason:** It is a dog.\n```\nHope it helps.",
        {
            "preamble",
            "code_fence",
            "numbering",
            "markdown",
            "key_spacing",
            "key_case",
            "fullwidth_colon",
            "quotes",
            "angle_brackets",
            "trailing_period",
            "trailing_chatter",
            "blank_lines",
        },
        "A dog.",
        "It is a dog.",
    ),
]


@pytest.mark.parametrize(("text", "codes", "caption", "reason"), REPAIRS)
def test_repairs(text, codes, caption, reason):
    record = parse_response(text)
    assert record.status == "repaired", record.problems
    assert record.identifier == "dog - ball"
    assert record.caption == caption
    assert record.reason == reason
    assert codes <= set(record.problems), record.problems
    assert not set(record.problems) & REJECTION_CODES


def test_echoed_whole_prompt_before_the_answer_picks_the_answer():
    text = load_prompt() + "caption:A cat on a sofa.\nidentifier:cat - sofa\nreason:The cat sits on the sofa."
    record = parse_response(text)
    assert record.status == "repaired"
    assert record.identifier == "cat - sofa"
    assert record.caption == "A cat on a sofa."
    assert record.reason == "The cat sits on the sofa."
    assert {"preamble", "echoed_template"} <= set(record.problems)


def test_prompts_own_example_is_kept_when_it_is_the_only_answer():
    record = parse_response("caption:Two men.\nidentifier:two white males - bushes\nreason:Two men near bushes.")
    assert record.status == "ok"
    assert record.identifier == "two white males - bushes"


# ---------------------------------------------------------------- parse_response: rejected

REJECTS = [
    ("", "empty_response"),
    ("   \n\t\n", "empty_response"),
    ("A dog is playing with a ball.", "no_keys"),
    ("dog - ball", "no_keys"),
    ("caption:A dog.\nreason:It is a dog.", "missing_identifier"),
    ("caption:A dog.\nidentifier:\nreason:It is a dog.", "empty_identifier"),
    ("caption:A dog.\nidentifier:   \nreason:It is a dog.", "empty_identifier"),
    ('caption:A dog.\nidentifier:""\nreason:It is a dog.', "empty_identifier"),
    ("caption:A dog.\nidentifier:<your identifier here>\nreason:It is a dog.", "placeholder_identifier"),
    ("caption:A dog.\nidentifier:your identifier here\nreason:It is a dog.", "placeholder_identifier"),
    ("caption:A dog.\nidentifier:<identifier>\nreason:It is a dog.", "placeholder_identifier"),
    ("caption:A dog.\nidentifier:[insert identifier]\nreason:It is a dog.", "placeholder_identifier"),
    ("caption:A dog.\nidentifier:N/A\nreason:It is a dog.", "placeholder_identifier"),
    ("caption:A dog.\nidentifier:...\nreason:It is a dog.", "empty_identifier"),  # nothing left once "." is stripped
    (load_prompt(), "template_echo"),  # the prompt echoed back with nothing else: its example is not an answer
    ("caption:A dog.\nidentifier:A brown dog is playing with a red ball.\nreason:x", "sentence_identifier"),
    ("caption:A dog.\nidentifier:the dog is running\nreason:x", "sentence_identifier"),
    ("caption:A dog.\nidentifier:dogs are playing - park.\nreason:x", "sentence_identifier"),
    ("caption:A dog.\nidentifier:" + " ".join(["word"] * (MAX_IDENTIFIER_WORDS + 1)) + "\nreason:x", "too_many_words"),
    ("caption:A dog.\nidentifier:" + "x" * 500 + "\nreason:x", "too_long"),
]


@pytest.mark.parametrize(("text", "code"), REJECTS)
def test_rejections(text, code):
    record = parse_response(text)
    assert record.status == "invalid"
    assert record.identifier is None
    assert code in record.problems
    assert code in REJECTION_CODES


def test_invalid_record_keeps_readable_caption_and_reason():
    record = parse_response("caption:A dog.\nidentifier:\nreason:It is a dog.")
    assert (record.caption, record.reason) == ("A dog.", "It is a dog.")


@pytest.mark.parametrize(
    "identifier",
    [
        "man wearing orange hat - glasses",  # a noun phrase with a participle is compact enough
        "a man in a blue shirt holding a red umbrella",  # 10 words, no finite verb
        "dog - is running",  # finite verb, but structured with a separator and no sentence end
        " ".join(["w"] * MAX_IDENTIFIER_WORDS),  # exactly at the bound
    ],
)
def test_identifier_bound_accepts(identifier):
    record = parse_response(f"caption:c\nidentifier:{identifier}\nreason:r")
    assert record.status == "ok", record.problems


def test_response_is_truncated_to_the_cap():
    long_tail = "\n" + "chatter " * (MAX_RESPONSE_CHARS // 4)
    record = parse_response(GOOD + long_tail)
    assert record.identifier == "dog - grass - ball"
    assert {"truncated", "trailing_chatter"} <= set(record.problems)
    assert record.status == "repaired"


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,
        " " * 1_000_000 + "x",
        "-" * 1_000_000,
        "- " * 500_000,
        "caption:" * 200_000,
        "identifier:" + "a - " * 300_000,
        "identifier:" + "<" * 500_000,
        "\n" * 1_000_000,
        ("caption: a identifier: b reason: c " * 50_000),
    ],
)
def test_pathological_inputs_are_fast(text):
    start = time.perf_counter()
    record = parse_response(text)
    assert time.perf_counter() - start < 2.0
    assert record.status in ("ok", "repaired", "invalid")


def test_non_string_input_does_not_raise():
    assert parse_response(None).problems == ("empty_response",)  # type: ignore[arg-type]
    assert parse_response(12).status == "invalid"  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parse_response_never_raises(text):
    record = parse_response(text)
    assert record.status in ("ok", "repaired", "invalid")
    assert (record.identifier is None) == (record.status == "invalid")
    if record.identifier is not None:
        assert canonical_identifier(record.identifier) == record.identifier
        assert record.identifier


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "caption:",
                "identifier:",
                "reason:",
                "\n",
                " ",
                "a",
                "-",
                "**",
                "1.",
                "<",
                ">",
                "：",
                "```",
                '"',
                "is",
                ".",
            ]
        ),
        max_size=60,
    )
)
def test_parse_response_never_raises_on_key_soup(parts):
    record = parse_response("".join(parts))
    assert (record.identifier is None) == (record.status == "invalid")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(_word, min_size=1, max_size=3), min_size=1, max_size=4),
    st.lists(_word, min_size=1, max_size=10),
    st.lists(_word, min_size=1, max_size=10),
)
def test_well_formed_answer_round_trips(units, caption_words, reason_words):
    identifier = " - ".join(" ".join(unit) for unit in units)
    caption, reason = " ".join(caption_words).capitalize() + ".", " ".join(reason_words) + "."
    assume(identifier_words(identifier) <= MAX_IDENTIFIER_WORDS)
    assume(not re.search(r"\b(is|are|was|were|am)\b", identifier))  # rejected as a sentence by design
    assume(not {canonical_identifier(v) for v in (caption, identifier, reason)} & PLACEHOLDER_VALUES)
    record = parse_response(f"caption:{caption}\nidentifier:{identifier}\nreason:{reason}")
    assert record.status == "ok", record.problems
    assert record.identifier == canonical_identifier(identifier) == identifier
    assert (record.caption, record.reason) == (caption, reason)


def test_real_flickr_captions_parse_ok(flickr_captions):
    assert len(flickr_captions) == 5000
    for caption in flickr_captions[:1000]:
        words = caption.split()
        last = re.findall(r"\w+", caption)[-1]
        identifier = f"{' '.join(words[:4])} - {last}"
        record = parse_response(f"caption:{caption}\nidentifier:{identifier}\nreason:The image matches the caption.")
        assert record.status == "ok", (caption, record.problems)
        assert record.identifier == canonical_identifier(identifier)
        assert record.caption == " ".join(caption.split())
        assert record.reason == "The image matches the caption."
