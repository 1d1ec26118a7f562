"""Reliability of the answer parser (issue 9, classes 7 and 8): linear time on hostile answers, tokenizer-safe
identifiers, and a property test with a per-input time bound."""

from __future__ import annotations

import gc
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swift_ssid.core.answers import MAX_RESPONSE_CHARS, canonical_identifier, parse_choice, parse_response

# One answer may cost a few milliseconds per 10 kB; the bound leaves room for a busy 2-core machine.
SECONDS_PER_ANSWER = 0.25

# Repeated lines of one key: a per-line scan over all lines made these quadratic.
REPEATED = ["identifier:\nx\n", "caption:\n", "identifier:x\n", "x identifier:\n"]

NESTED = [
    "(" * 10_000 + "a" + ")" * 10_000,
    "<" * 10_000 + "a" + ">" * 10_000,
    "([{" * 3_000 + "a" + "}])" * 3_000,
    "\u300c" * 5_000 + "\u00ab" * 4_000 + "a" + "\u00bb" * 4_000 + "\u300d" * 5_000,
    "\"'" * 9_000 + "a" + "'\"" * 9_000,
    "*(" * 9_000 + "a" + ")*" * 9_000,
    "- (" * 6_000 + "a" + ") -" * 6_000,
]


def _cpu_seconds(fn, *args) -> float:
    """CPU seconds of one call, the cyclic GC paused (a full collection of other tests' objects is not the parser's)."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        fn(*args)
        return time.process_time() - start
    finally:
        gc.enable()


@pytest.mark.parametrize("body", NESTED, ids=lambda b: repr(b[:6]))
def test_nested_decoration_costs_linear_time(body):
    """``identifier:`` + 10,000 nested brackets took 37 CPU seconds with the until-stable rescans."""
    text = "identifier:" + body + "\nreason:x"
    assert _cpu_seconds(parse_response, text) < SECONDS_PER_ANSWER
    assert _cpu_seconds(canonical_identifier, body) < SECONDS_PER_ANSWER
    assert _cpu_seconds(parse_choice, text) < SECONDS_PER_ANSWER
    assert parse_response(text).status == "invalid"  # far over the identifier length bound


@pytest.mark.parametrize("unit", REPEATED)
def test_many_repeated_keys_cost_linear_time(unit):
    text = (unit * 20_000)[:MAX_RESPONSE_CHARS]
    assert _cpu_seconds(parse_response, text) < SECONDS_PER_ANSWER / 5


def test_short_nested_decoration_is_still_stripped():
    assert canonical_identifier("((<[ Dog - Ball ]>))") == "dog - ball"
    assert parse_response('identifier:"<<dog - ball>>"').identifier == "dog - ball"


@pytest.mark.parametrize(
    "value",
    [
        "dog </s> ball",
        "<|im_end|> dog",
        "dog - <pad>",
        "a <unk> b",
        "<image> dog - ball",
        "dog <0x0A> ball",
        "[INST] dog",
    ],
)
def test_special_token_text_is_rejected(value):
    record = parse_response(f"caption:a\nidentifier:{value}\nreason:b")
    assert record.status == "invalid" and record.identifier is None
    assert "special_token" in record.problems


def test_sentencepiece_word_marker_is_a_space():
    assert canonical_identifier("dog\u2581ball - park") == "dog ball - park"
    assert parse_response("identifier:x\u2581y\nreason:z").identifier == "x y"
    # A bracketed word alone is decoration, not a special token.
    assert parse_response("identifier:<dog - ball>").identifier == "dog - ball"


_ALPHABET = st.sampled_from(
    list("ab -*_`.,;:\"'<>()[]{}|/\n\t") + ["\u2581", "\u201c", "\u201d", "\uff1a", "\uff1c", "identifier:", "reason:"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(unit=st.lists(_ALPHABET, min_size=1, max_size=12).map("".join), repeat=st.integers(1, 4000))
def test_parser_is_bounded_and_total(unit, repeat):
    """Any repeated pattern up to the response cap: no exception, a few ms per 10 kB, an idempotent identifier."""
    text = (unit * repeat)[: MAX_RESPONSE_CHARS + 100]
    seconds = _cpu_seconds(parse_response, text)
    assert seconds < SECONDS_PER_ANSWER * max(1, len(text) / 20_000)
    record = parse_response(text)
    if record.identifier is not None:
        assert canonical_identifier(record.identifier) == record.identifier
        assert "\u2581" not in record.identifier and "\n" not in record.identifier
