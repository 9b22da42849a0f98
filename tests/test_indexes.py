"""uphooks/indexes.py: how a value appears in an index or lookup name."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from uphooks import indexes


def _by_the_regex(value: str) -> str:
    if indexes._PLAIN.match(value):
        return value
    return "h:" + hashlib.sha256(value.encode()).hexdigest()[:32]


@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=110))
def test_a_term_value_is_what_the_regex_alone_made_it(value: str) -> None:
    # The ASCII check runs first for speed; the console hashes what an operator types the same
    # way, so any difference would make stored entries unfindable.
    assert indexes.term_value(value) == _by_the_regex(value)


def test_plain_values_stay_and_others_are_hashed() -> None:
    assert indexes.term_value("upload_completed") == "upload_completed"
    assert indexes.term_value("a" * 100) == "a" * 100
    for odd in ("", "a b", "a|b", "a" * 101, "tab\there", "x\x7f", "caf\u00e9 bar"):
        assert indexes.term_value(odd) == _by_the_regex(odd)
        assert indexes.term_value(odd).startswith("h:")
    assert indexes.term_value("caf\u00e9") == "caf\u00e9"  # non-ASCII, plain by the regex
