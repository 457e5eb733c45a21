"""--model-arg NAME=VALUE: literals only, nothing evaluated, every bad string one clear line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import UsageError
from toolkit.source.model_args import parse_model_arg, parse_model_args


@pytest.mark.parametrize(("text", "expected"), [
    ("num_classes=5", ("num_classes", 5)),
    ("weights=None", ("weights", None)),
    ("flag=True", ("flag", True)),
    ("thresh=0.25", ("thresh", 0.25)),
    ("name='small'", ("name", "small")),
    ("size=(320, 320)", ("size", (320, 320))),
    (" min_size = 320 ", ("min_size", 320)),
])
def test_literals_parse(text, expected):
    assert parse_model_arg(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("num_classes", "expected NAME=VALUE"),
    ("=5", "not a Python argument name"),
    ("class=5", "not a Python argument name"),
    ("x=", "no value"),
    ("backbone=resnet50", "quote text: backbone='resnet50'"),
    ("a\nb=1", "is not a Python argument name"),
    ("x=__import__('os').system('true')", "not a Python literal"),
    ("x=open('/etc/passwd')", "not a Python literal"),
])
def test_bad_arguments_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_model_arg(text)


def test_a_name_given_twice_is_refused():
    with pytest.raises(UsageError, match="given twice"):
        parse_model_args(["a=1", "a=2"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_string_parses_or_is_one_usage_error(text):
    try:
        name, _ = parse_model_arg(text)
    except UsageError as err:
        assert "\n" not in str(err)
    else:
        assert name.isidentifier()


_LITERALS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(_LITERALS)
def test_any_literal_round_trips_through_its_repr(value):
    assert parse_model_arg(f"v={value!r}") == ("v", value)
