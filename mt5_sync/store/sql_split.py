"""Split a migration file into statements the way the Supabase CLI does.

Why this exists: the CLI records each migration it applies in
``supabase_migrations.schema_migrations.statements`` (``text[]``), one element per statement,
and reads that column back (``supabase migration fetch`` rebuilds files from it). For the
history written by ``mt5-sync migrate`` to look exactly like the CLI's, the column is filled
with the CLI's own split.

The CLI splits with a small state machine (supabase/cli ``pkg/parser/state.go`` and
``token.go``, ``SplitAndTrim``): a ``;`` ends a statement unless it is inside a quote, a
dollar quote, a comment, parentheses or a ``BEGIN ATOMIC ... END`` body; comments stay attached
to the statement that follows them; each statement is trimmed of trailing ``;`` and of white
space, and empty ones are dropped. No Python SQL library makes the same choices (``sqlparse``
strips differently and does not know ``BEGIN ATOMIC``), so this is a faithful port of that
machine, including its quirks: the CLI steps through the text byte by byte and feeds U+FFFD
for every continuation byte of a multi-byte character (which, e.g., ends a ``$tag`` early),
and nested parentheses close at the first ``)``.
"""

from __future__ import annotations

from typing import Protocol

# Go's unicode.White_Space (strings.TrimSpace, bytes.TrimRightFunc(unicode.IsSpace)).
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_REPLACEMENT = "\ufffd"


class _State(Protocol):
    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        """The state after ``ch``; the token so far is ``text[start:end]`` (ending in ``ch``).

        ``None`` ends the token (a statement separator was read).
        """
        ...  # pragma: no cover - protocol


def _is_letter_or_digit(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal()


def _is_identifier(ch: str) -> bool:
    return _is_letter_or_digit(ch) or ch in "_$"


def _fold_equal(a: str, b: str) -> bool:
    """ASCII case-insensitive equality (every keyword compared here is ASCII)."""
    return a.isascii() and a.lower() == b.lower()


def _is_begin_atomic(text: str, start: int, end: int) -> bool:
    """Does the token end in ``BEGIN <space> ATOMIC`` as whole words?"""
    offset = end - len("ATOMIC")
    if offset < start or not _fold_equal(text[offset:end], "ATOMIC"):
        return False
    if offset > start and _is_identifier(text[offset - 1]):
        return False
    prefix_end = offset
    while prefix_end > start and text[prefix_end - 1] in _GO_SPACE:
        prefix_end -= 1
    offset = prefix_end - len("BEGIN")
    if offset < start or not _fold_equal(text[offset:prefix_end], "BEGIN"):
        return False
    return offset == start or not _is_identifier(text[offset - 1])


class _Ready:
    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "$":
            return _Tag(end - 1)
        if ch in "'\"":
            return _Quote(ch)
        if ch == "-":
            return _Comment()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None
        if ch == "(":
            return _Atomic(self, ")")
        if ch in "cC" and _is_begin_atomic(text, start, end):
            return _Atomic(self, "END")
        return self


class _Comment:
    """After one ``-``: a second one opens a line comment."""

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "-":
            return _Dollar("\n")
        return _Ready().next(ch, text, start, end)


class _Block:
    """After ``/``: block comments, nested."""

    def __init__(self) -> None:
        self.depth = 0

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        window = text[max(start, end - 2):end]
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(ch, text, start, end)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote:
    """Inside '...' or "..."; a doubled delimiter is an escaped one."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.escape = False

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if self.escape:
            if ch == self.delimiter:
                self.escape = False
                return self
            return _Ready().next(ch, text, start, end)
        if ch == self.delimiter:
            self.escape = True
        return self


class _Dollar:
    """Inside a dollar quote (or a line comment, delimiter newline): nothing is escaped."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if text[max(start, end - len(self.delimiter)):end] == self.delimiter:
            return _Ready()
        return self


class _Tag:
    """After ``$``: a ``$tag$`` opens a dollar quote; anything else was not a tag."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "$":
            return _Dollar(text[self.offset:end])
        if _is_letter_or_digit(ch) or ch == "_":
            return self
        return _Ready().next(ch, text, start, end)


class _Escape:
    """After a backslash: the next character is taken literally."""

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        return _Ready()


class _Atomic:
    """Inside ``( ... )`` or ``BEGIN ATOMIC ... END``: separators do not split."""

    def __init__(self, prev: _State, delimiter: str) -> None:
        self.prev = prev
        self.delimiter = delimiter

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        current = self.prev.next(ch, text, start, end)
        if current is not None:
            self.prev = current
        if isinstance(self.prev, _Ready):
            window = text[max(start, end - len(self.delimiter)):end]
            if _fold_equal(window, self.delimiter):
                return _Ready()
        return self


def split(sql: str) -> list[str]:
    """The raw statements of ``sql``: each ends with its ``;`` (the last one may not)."""
    tokens: list[str] = []
    state: _State = _Ready()
    start = 0
    for index, ch in enumerate(sql):
        end = index + 1
        following = state.next(ch, sql, start, end)
        if following is None:
            tokens.append(sql[start:end])
            start = end
            state = _Ready()
            continue
        state = following
        # The CLI advances one byte at a time: a continuation byte decodes as U+FFFD.
        for _ in range(len(ch.encode("utf-8")) - 1):
            replaced = state.next(_REPLACEMENT, sql, start, end)
            assert replaced is not None  # only ";" ends a token
            state = replaced
    if start < len(sql):
        tokens.append(sql[start:])
    return tokens


def split_and_trim(sql: str) -> list[str]:
    """The statements as the CLI stores them: trailing ``;`` and surrounding space removed."""
    statements = []
    for token in split(sql):
        trimmed = token.rstrip(";").strip("".join(_GO_SPACE))
        if trimmed:
            statements.append(trimmed)
    return statements
