"""The two small expression languages of Argo templates: ``when`` and ``depends``.

Both are parsed here by a recursive-descent parser into a tree that is then evaluated;
nothing is handed to Python's ``eval``.

``when`` (a step or task runs only if it is true), evaluated after its placeholders are
substituted, e.g. ``{{steps.flip.outputs.result}} == heads && {{item}} > 2``::

    expression := or
    or         := and ("||" and)*
    and        := unary ("&&" unary)*
    unary      := "!" unary | comparison
    comparison := primary (("==" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~") primary)?
    primary    := "(" expression ")" | 'text' | "text" | word

A word is a run of characters other than blanks, quotes, parentheses and ``! = < > & |``:
``true`` and ``false`` are booleans, a word that reads as a number is a number
(``2``, ``-1.5``, ``1e3``), any other word is text (``heads``, ``train-full``), as Argo
reads a substituted value that is not quoted. ``==`` and ``!=`` compare numbers as
numbers, booleans as booleans and anything else as text; ``<``, ``<=``, ``>``, ``>=``
need two numbers; ``=~`` / ``!~`` match the left text against the right regular
expression (anywhere in it, as Go's ``regexp.MatchString`` does). ``&&``, ``||`` and
``!`` need booleans (a comparison, ``true``, ``false``).

``depends`` (a dag task runs once the tasks it names are done and this is true)::

    expression := or
    or         := and ("||" and)*
    and        := unary ("&&" unary)*
    unary      := "!" unary | "(" expression ")" | TASK | TASK "." RESULT

RESULT is one of ``Succeeded``, ``Failed``, ``Errored``, ``Skipped``, ``Omitted``,
``Daemoned``, ``AnySucceeded``, ``AllFailed``. A bare ``TASK`` means
``(TASK.Succeeded || TASK.Skipped || TASK.Daemoned)``, as in Argo.

:class:`ExpressionError` says what is wrong and where (a character offset).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEPENDS_RESULTS",
    "Depends",
    "ExpressionError",
    "When",
    "all_succeeded",
    "parse_depends",
    "parse_when",
]

DEPENDS_RESULTS = (
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
    "Daemoned",
    "AnySucceeded",
    "AllFailed",
)
# What a bare task name in ``depends`` stands for.
_BARE_RESULTS = ("Succeeded", "Skipped", "Daemoned")

_COMPARISONS = ("==", "!=", "<=", ">=", "<", ">", "=~", "!~")
_OPERATORS = ("&&", "||", *_COMPARISONS, "!", "(", ")")
_WORD_STOP = set(" \t\r\n'\"()!=<>&|")
_NUMBER_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TASK_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated; the message says why."""


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "text" (quoted), "word", "end"
    value: str
    at: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "'\"":
            value, end = _quoted(text, i)
            tokens.append(_Token("text", value, i))
            i = end
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is not None:
            tokens.append(_Token("op", operator, i))
            i += len(operator)
            continue
        if c in _WORD_STOP:  # a lone '=', '&' or '|'
            raise ExpressionError(f"unexpected {c!r} at {i}")
        start = i
        while i < n and text[i] not in _WORD_STOP:
            i += 1
        tokens.append(_Token("word", text[start:i], start))
    tokens.append(_Token("end", "", n))
    return tokens


def _quoted(text: str, start: int) -> tuple[str, int]:
    quote, i, out = text[start], start + 1, []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == quote:
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ExpressionError(f"the text quoted at {start} is not closed")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, operator: str) -> bool:
        if self.peek.kind == "op" and self.peek.value == operator:
            self.pos += 1
            return True
        return False

    def expect_end(self) -> None:
        if self.peek.kind != "end":
            raise ExpressionError(f"unexpected {self.peek.value!r} at {self.peek.at}")

    def unexpected(self, wanted: str) -> ExpressionError:
        token = self.peek
        if token.kind == "end":
            return ExpressionError(f"{wanted} expected at the end")
        return ExpressionError(f"{wanted} expected at {token.at}, not {token.value!r}")

    def binary(self, operand: Callable[[], _Node]) -> _Node:
        """``operand (&& operand)* (|| ...)*`` with ``&&`` binding tighter."""

        def conjunction() -> _Node:
            node = operand()
            while self.accept("&&"):
                node = _And(node, operand())
            return node

        node = conjunction()
        while self.accept("||"):
            node = _Or(node, conjunction())
        return node


# --------------------------------------------------------------------------- the tree


class _Node:
    def value(self, env: Any) -> Any:
        raise NotImplementedError

    def truth(self, env: Any) -> bool:
        result = self.value(env)
        if isinstance(result, bool):
            return result
        raise ExpressionError(f"{_show(result)} is not true or false")


@dataclass(frozen=True, slots=True)
class _And(_Node):
    left: _Node
    right: _Node

    def value(self, env: Any) -> bool:
        return self.left.truth(env) and self.right.truth(env)


@dataclass(frozen=True, slots=True)
class _Or(_Node):
    left: _Node
    right: _Node

    def value(self, env: Any) -> bool:
        return self.left.truth(env) or self.right.truth(env)


@dataclass(frozen=True, slots=True)
class _Not(_Node):
    operand: _Node

    def value(self, env: Any) -> bool:
        return not self.operand.truth(env)


@dataclass(frozen=True, slots=True)
class _Literal(_Node):
    literal: Any  # bool, float or str
    text: str  # as written

    def value(self, env: Any) -> Any:
        return self.literal


@dataclass(frozen=True, slots=True)
class _Compare(_Node):
    operator: str
    left: _Node
    right: _Node

    def value(self, env: Any) -> bool:
        a, b = self.left.value(env), self.right.value(env)
        op = self.operator
        if op in ("=~", "!~"):
            try:
                found = re.search(_text(b), _text(a)) is not None
            except re.error as exc:
                raise ExpressionError(f"{_show(b)} is not a regular expression: {exc}") from None
            return found if op == "=~" else not found
        if op in ("==", "!="):
            same = type(a) is type(b) and a == b
            if type(a) is not type(b):
                same = _text(a) == _text(b)
            return same if op == "==" else not same
        if not (isinstance(a, float) and isinstance(b, float)):
            raise ExpressionError(f"{_show(a)} {op} {_show(b)}: {op} compares two numbers")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _text(value)


# --------------------------------------------------------------------------- when


@dataclass(frozen=True, slots=True)
class When:
    """A parsed ``when`` expression."""

    text: str
    _root: _Node

    def evaluate(self) -> bool:
        """True when the step should run. Raises :class:`ExpressionError` when the
        values do not fit the operators (``abc > 2``)."""
        return self._root.truth(None)


def parse_when(text: str) -> When:
    """Parse a substituted ``when`` expression. Raises :class:`ExpressionError`."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("the expression is empty")
    parser = _Parser(text)
    root = _when_expression(parser)
    parser.expect_end()
    return When(text, root)


def _when_expression(parser: _Parser) -> _Node:
    return parser.binary(lambda: _when_unary(parser))


def _when_unary(parser: _Parser) -> _Node:
    if parser.accept("!"):
        return _Not(_when_unary(parser))
    left = _when_primary(parser)
    token = parser.peek
    if token.kind == "op" and token.value in _COMPARISONS:
        parser.take()
        return _Compare(token.value, left, _when_primary(parser))
    return left


def _when_primary(parser: _Parser) -> _Node:
    if parser.accept("("):
        node = _when_expression(parser)
        if not parser.accept(")"):
            raise parser.unexpected("')'")
        return node
    token = parser.peek
    if token.kind == "text":
        parser.take()
        return _Literal(token.value, token.value)
    if token.kind == "word":
        parser.take()
        return _Literal(_word(token.value), token.value)
    raise parser.unexpected("a value")


def _word(word: str) -> Any:
    if word in ("true", "false"):
        return word == "true"
    if _NUMBER_RE.match(word):
        number = float(word)
        if math.isfinite(number):
            return number
    return word


# --------------------------------------------------------------------------- depends


@dataclass(frozen=True, slots=True)
class _Result(_Node):
    task: str
    results: tuple[str, ...]  # any of these

    def value(self, env: Callable[[str, str], bool]) -> bool:
        return any(env(self.task, result) for result in self.results)


@dataclass(frozen=True, slots=True)
class Depends:
    """A parsed ``depends`` expression."""

    text: str
    names: tuple[str, ...]  # the tasks it names, first mention first
    _root: _Node
    mentions: tuple[tuple[str, str], ...] = ()  # (task, RESULT) as written, bare: Succeeded

    def evaluate(self, result: Callable[[str, str], bool]) -> bool:
        """Evaluate with ``result(task, RESULT)``: whether ``task`` ended that way (one
        of :data:`DEPENDS_RESULTS`). Call it once every named task has ended."""
        return self._root.truth(result)


def all_succeeded(tasks: list[str]) -> Depends:
    """``A && B && ...`` over task names taken as they are (plain ``dependencies``)."""
    if not tasks:
        raise ExpressionError("no task to depend on")
    root: _Node = _Result(tasks[0], _BARE_RESULTS)
    for task in tasks[1:]:
        root = _And(root, _Result(task, _BARE_RESULTS))
    names = tuple(dict.fromkeys(tasks))
    return Depends(" && ".join(tasks), names, root, tuple((t, "Succeeded") for t in names))


def parse_depends(text: str) -> Depends:
    """Parse a ``depends`` expression. Raises :class:`ExpressionError`."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("the expression is empty")
    parser = _Parser(text)
    mentions: list[tuple[str, str]] = []
    root = parser.binary(lambda: _depends_unary(parser, mentions))
    parser.expect_end()
    names = tuple(dict.fromkeys(task for task, _ in mentions))
    return Depends(text, names, root, tuple(dict.fromkeys(mentions)))


def _depends_unary(parser: _Parser, mentions: list[tuple[str, str]]) -> _Node:
    if parser.accept("!"):
        return _Not(_depends_unary(parser, mentions))
    if parser.accept("("):
        node = parser.binary(lambda: _depends_unary(parser, mentions))
        if not parser.accept(")"):
            raise parser.unexpected("')'")
        return node
    token = parser.peek
    if token.kind != "word":
        raise parser.unexpected("a task name")
    parser.take()
    task, results = _task_result(token)
    mentions.append((task, results[0]))
    return _Result(task, results)


def _task_result(token: _Token) -> tuple[str, tuple[str, ...]]:
    word = token.value
    head, dot, tail = word.rpartition(".")
    if dot and tail in DEPENDS_RESULTS:
        task, results = head, (tail,)
    elif dot and tail and tail[0].isupper():
        raise ExpressionError(
            f"{word!r} at {token.at}: {tail!r} is not a task result ({', '.join(DEPENDS_RESULTS)})"
        )
    else:
        task, results = word, _BARE_RESULTS
    if not _TASK_RE.match(task):
        raise ExpressionError(f"{word!r} at {token.at} is not a task name")
    return task, results
