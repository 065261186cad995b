"""OAR property expressions (the SQL-like text between braces in ``-l`` and in ``-p``).

Enough of the language for what experiment tools send: comparisons (``= != <> < >
<= >=``), ``[NOT] IN (...)``, ``[NOT] LIKE '...'``, ``AND``/``OR``/``NOT`` and
parentheses. An expression compiles to a predicate over a resource's properties.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Props = Mapping[str, str | int]
Predicate = Callable[[Props], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.-]*))"
)
_KEYWORDS = {"and", "or", "not", "in", "like"}


class PropertyError(ValueError):
    """The expression is not valid OAR property SQL, or names an unknown property."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # str | num | op | punct | word | kw
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise PropertyError(f"unexpected text at {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value.lower() in _KEYWORDS:
            tokens.append(_Tok("kw", value.lower()))
        elif kind == "str":
            tokens.append(_Tok("str", value[1:-1].replace("\\'", "'").replace('\\"', '"')))
        else:
            tokens.append(_Tok(kind, value))
        pos = match.end()
    return tokens


def _like(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _compare(left: str | int, op: str, right: str | int) -> bool:
    try:
        a: float | str = float(left)
        b: float | str = float(right)
    except (TypeError, ValueError):
        a, b = str(left), str(right)
    if op == "=":
        return a == b
    if op in ("!=", "<>"):
        return a != b
    if type(a) is not type(b):
        return False
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


class _Parser:
    def __init__(self, tokens: list[_Tok], known: frozenset[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.known = known

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or tok.kind != kind or (text is not None and tok.text != text):
            want = text or kind
            seen = "end of expression" if tok is None else repr(tok.text)
            raise PropertyError(f"expected {want}, found {seen}")
        self.pos += 1
        return tok

    def accept(self, kind: str, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == kind and tok.text == text:
            self.pos += 1
            return True
        return False

    def expr(self) -> Predicate:
        terms = [self.term()]
        while self.accept("kw", "or"):
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else lambda p: any(t(p) for t in terms)

    def term(self) -> Predicate:
        factors = [self.factor()]
        while self.accept("kw", "and"):
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else lambda p: all(f(p) for f in factors)

    def factor(self) -> Predicate:
        if self.accept("kw", "not"):
            inner = self.factor()
            return lambda p: not inner(p)
        if self.accept("punct", "("):
            inner = self.expr()
            self.take("punct", ")")
            return inner
        return self.comparison()

    def value(self) -> str | int:
        tok = self.peek()
        if tok is not None and tok.kind in ("str", "num"):
            self.pos += 1
            return tok.text
        seen = "end of expression" if tok is None else repr(tok.text)
        raise PropertyError(f"expected a value, found {seen}")

    def comparison(self) -> Predicate:
        name = self.take("word").text
        if name not in self.known:
            raise PropertyError(f"unknown property '{name}'")
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            self.take("punct", "(")
            values = [self.value()]
            while self.accept("punct", ","):
                values.append(self.value())
            self.take("punct", ")")
            return lambda p: any(_compare(p.get(name, ""), "=", v) for v in values) != negate
        if self.accept("kw", "like"):
            regex = _like(str(self.value()))
            return lambda p: bool(regex.match(str(p.get(name, "")))) != negate
        if negate:
            raise PropertyError(f"expected IN or LIKE after '{name} NOT'")
        op = self.take("op").text
        right = self.value()
        return lambda p: _compare(p.get(name, ""), op, right)


def compile_properties(text: str, known: frozenset[str]) -> Predicate:
    """Compile ``text`` into a predicate; ``known`` are the property names that exist."""
    tokens = _tokenize(text)
    if not tokens:
        return lambda _p: True
    parser = _Parser(tokens, known)
    predicate = parser.expr()
    if parser.peek() is not None:
        raise PropertyError(f"unexpected {parser.peek().text!r}")  # type: ignore[union-attr]
    return predicate
