"""Message templates are compiled once to format strings: they must render exactly as
``string.Template`` does (``$name``, ``${name}``, ``$$``, braces in the text), and refuse what it
refuses."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.domain.templates import Template, TemplateError, TopicTemplate

NAMES = st.sampled_from(["reference", "site_id", "answer_by", "n", "centre_name"])
PIECES = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="$"), max_size=12),  # braces included
    NAMES.map(lambda name: f"${name}"),
    NAMES.map(lambda name: f"${{{name}}}"),
    st.just("$$"),
    st.just("{reference}"),  # a literal that would be a field in a format string
)


def _outcome(render: Callable[[], str]) -> str:
    try:
        return render()
    except KeyError as missing:  # "$n" followed by "ame" is "$name": both must agree on it
        return f"KeyError {missing}"


@given(st.lists(PIECES, max_size=12), st.dictionaries(NAMES, st.text(max_size=8)))
def test_renders_as_string_template_does(pieces: list[str], facts: dict[str, str]) -> None:
    text = "".join(pieces)
    ours, theirs = Template(text), string.Template(text)
    assert _outcome(lambda: ours.substitute(facts)) == _outcome(lambda: theirs.substitute(facts))


def test_a_missing_fact_is_a_key_error_and_a_bad_placeholder_refused_at_parse() -> None:
    with pytest.raises(KeyError):
        Template("Réf. $reference").substitute({})
    with pytest.raises(TemplateError):
        Template("coût : 5 $ par place")
    with pytest.raises(TemplateError):
        TopicTemplate.parse("bad", "[subject]\n$\n[text]\nx\n[email]\ny")
