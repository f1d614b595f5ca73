"""The ``when`` and ``depends`` expression languages: parsed, never eval'ed."""

from __future__ import annotations

import pytest

from server.domain.expressions import ExpressionError, parse_depends, parse_when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("heads == heads", True),
        ("tails == heads", False),
        ("tails != heads", True),
        ("5 > 2", True),
        ("10 > 9", True),  # numbers, not text ("10" < "9")
        ("1.0 == 1", True),
        ("01 == 1", True),
        ("-1.5 < 0", True),
        ("1e3 >= 1000", True),
        ("2 <= 1", False),
        ("'a b' == \"a b\"", True),
        ("'it\\'s' == \"it's\"", True),
        ("train-full == train-full", True),
        ("1.10.0 == 1.10.0", True),  # not a number: text
        ("1.10.0 == 1.1.0", False),
        ("true", True),
        ("!false", True),
        ("!(1 == 1)", False),
        ("true && false", False),
        ("true || false && false", True),  # && binds tighter
        ("(true || false) && false", False),
        ("1 == 1 && 2 == 2 || 3 == 4", True),
        ("!true || !false", True),
        ("a==a&&b!=c", True),
        ("model-v2 =~ '^model-v[0-9]+$'", True),
        ("model-v2 !~ v3", True),
        ("'x == y' == x", False),  # quoted operators are text
        ("true == 'true'", True),
        ("3 == '3'", True),
    ],
)
def test_when_evaluates(text, expected):
    assert parse_when(text).evaluate() is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a ==", "a value expected at the end"),
        ("(a == b", "'\\)' expected"),
        ("a == b)", "unexpected '\\)'"),
        ("a = b", "unexpected '='"),
        ("a & b", "unexpected '&'"),
        ("'open", "not closed"),
        ("a b", "unexpected 'b'"),
        ("&& a", "a value expected at 0"),
    ],
)
def test_when_syntax_errors_say_where(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse_when(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc > 2", "compares two numbers"),
        ("heads", "'heads' is not true or false"),
        ("1 && true", "1 is not true or false"),
        ("x =~ '('", "not a regular expression"),
    ],
)
def test_when_value_errors(text, message):
    expression = parse_when(text)
    with pytest.raises(ExpressionError, match=message):
        expression.evaluate()


def test_when_is_not_python():
    for text in ("__import__('os').system('true')", "1 if True else 0"):
        with pytest.raises(ExpressionError):
            parse_when(text).evaluate()
    assert parse_when("[1][0] == 1").evaluate() is False  # text, not an index


def outcome(**phases):
    """A result function: each task ended with one result (bare name: Succeeded)."""

    def result(task: str, name: str) -> bool:
        ended = phases[task]
        if name == "AnySucceeded":
            return ended == "Succeeded"
        if name == "AllFailed":
            return ended == "Failed"
        return ended == name

    return result


@pytest.mark.parametrize(
    ("text", "phases", "expected"),
    [
        ("A", {"A": "Succeeded"}, True),
        ("A", {"A": "Skipped"}, True),
        ("A", {"A": "Failed"}, False),
        ("A.Failed", {"A": "Failed"}, True),
        ("A.Succeeded && B", {"A": "Succeeded", "B": "Succeeded"}, True),
        ("A && B", {"A": "Succeeded", "B": "Failed"}, False),
        ("A || B", {"A": "Failed", "B": "Succeeded"}, True),
        ("A.Failed || A.Errored", {"A": "Errored"}, True),
        ("!A.Failed", {"A": "Succeeded"}, True),
        ("(A || B.Failed) && !C.Skipped", {"A": "Failed", "B": "Failed", "C": "Succeeded"}, True),
        ("A.AnySucceeded", {"A": "Succeeded"}, True),
        ("train.v2.Succeeded", {"train.v2": "Succeeded"}, True),
        ("train-2 && x_y", {"train-2": "Succeeded", "x_y": "Succeeded"}, True),
    ],
)
def test_depends_evaluates(text, phases, expected):
    assert parse_depends(text).evaluate(outcome(**phases)) is expected


def test_depends_names_its_tasks_once_in_order():
    assert parse_depends("(B.Failed || A) && B.Succeeded && !C").names == ("B", "A", "C")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("A &&", "a task name expected at the end"),
        ("A.Finished", "'Finished' is not a task result"),
        ("(A || B", "'\\)' expected"),
        ("A == B", "unexpected '=='"),
        ("'A'", "a task name expected at 0"),
        ("A B", "unexpected 'B'"),
        ("-A", "not a task name"),
    ],
)
def test_depends_syntax_errors(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse_depends(text)
