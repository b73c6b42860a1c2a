"""Lexer for Go `text/template`: template text -> a flat list of tokens with offsets.

It follows the state machine of Go's `text/template/parse/lex.go` closely, because the
subtle parts of the language live here: `{{-` / `-}}` trim markers (a minus *and* a space),
comments that must sit right against the delimiters, and fields written without spaces
(`.A.B`) being one chain while `.A .B` are two arguments. Trim markers are applied here,
so the parser sees text tokens that already have their whitespace removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from corral.compiler.errors import TemplateError
from corral.dsl.span import Span

_SPACE = " \t\r\n"  # Go's template whitespace: the only characters trim markers remove
KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block",
                      "break", "continue", "nil"})


class Tok(Enum):
    TEXT = "text"
    LEFT = "{{"
    RIGHT = "}}"
    FIELD = "field"          # .Name
    VARIABLE = "variable"    # $ or $name
    IDENT = "identifier"     # a function name
    KEYWORD = "keyword"
    BOOL = "bool"
    STRING = "string"        # value already unquoted
    CHAR = "character"       # value is the code point
    NUMBER = "number"        # value is the source text
    DOT = "."
    DECLARE = ":="
    ASSIGN = "="
    PIPE = "|"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    value: str | int
    start: int
    end: int
    spaced: bool = False  # whitespace came right before it (separates arguments)


class GoSource:
    """Template text plus where it sits in a file, to turn offsets into Spans."""

    def __init__(self, text: str, origin: Span | None = None):
        self.text = text
        self.origin = origin

    def span(self, start: int, end: int | None = None) -> Span:
        """The Span of text[start:end] in the enclosing file (the template's own lines if no origin)."""
        inner = Span.between("<template>", self.text, start, start + 1 if end is None else end)
        return shift_span(inner, self.origin)

    def error(self, message: str, start: int, end: int | None = None, hint: str | None = None) -> TemplateError:
        return TemplateError(message, self.span(start, end), hint)


def shift_span(inner: Span, origin: Span | None) -> Span:
    """Map a span inside template text onto the file the template was written in."""
    if origin is None:
        return inner

    def move(line: int, column: int) -> tuple[int, int]:
        # Only the first line of the template shares its line with the Modelfile keyword.
        return origin.line + line - 1, column + (origin.column - 1 if line == 1 else 0)

    line, column = move(inner.line, inner.column)
    if inner.end_line is None or inner.end_column is None:
        return Span(origin.path, line, column)
    end_line, end_column = move(inner.end_line, inner.end_column)
    return Span(origin.path, line, column, end_line, end_column)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'"}


class _Lexer:
    def __init__(self, source: GoSource):
        self.src = source
        self.text = source.text
        self.pos = 0
        self.tokens: list[Token] = []
        self.trim_next = False  # the previous action ended with ` -}}`

    def run(self) -> list[Token]:
        while self._lex_text():
            self._lex_action()
        self.tokens.append(Token(Tok.EOF, "", len(self.text), len(self.text)))
        return self.tokens

    # --- text between actions -------------------------------------------------------------
    def _lex_text(self) -> bool:
        """Emit text up to the next `{{`; returns False at end of input."""
        if self.trim_next:
            while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
                self.pos += 1
            self.trim_next = False
        start = self.pos
        found = self.text.find("{{", start)
        end = len(self.text) if found < 0 else found
        stop = end
        if found >= 0 and self._left_trim(found + 2):
            stop = len(self.text[start:end].rstrip(_SPACE)) + start
        if stop > start:
            self.tokens.append(Token(Tok.TEXT, self.text[start:stop], start, stop))
        self.pos = end
        return found >= 0

    def _left_trim(self, at: int) -> bool:
        return self.text.startswith("-", at) and at + 1 < len(self.text) and self.text[at + 1] in _SPACE

    def _right_delim(self, at: int) -> tuple[bool, int]:
        """(is there a right delimiter at `at`, its length including a ` -` trim marker)."""
        if (at + 1 < len(self.text) and self.text[at] in _SPACE and self.text[at + 1] == "-"
                and self.text.startswith("}}", at + 2)):
            return True, 4
        return self.text.startswith("}}", at), 2

    # --- one action -----------------------------------------------------------------------
    def _lex_action(self) -> None:
        open_at = self.pos
        self.pos += 2
        if self._left_trim(self.pos):
            self.pos += 2
        if self.text.startswith("/*", self.pos):
            self._lex_comment(open_at)
            return
        self.tokens.append(Token(Tok.LEFT, "{{", open_at, self.pos))
        depth = 0
        spaced = False
        while True:
            is_delim, size = self._right_delim(self.pos)
            if is_delim:
                if depth > 0:
                    raise self.src.error("unclosed left paren", self.pos, self.pos + size)
                self.trim_next = size == 4
                self.tokens.append(Token(Tok.RIGHT, "}}", self.pos, self.pos + size))
                self.pos += size
                return
            if self.pos >= len(self.text):
                raise self.src.error("unclosed action", open_at, open_at + 2,
                                     "every '{{' needs a matching '}}'")
            ch = self.text[self.pos]
            if ch in _SPACE:
                self.pos += 1
                spaced = True
                continue
            start = self.pos
            kind, value = self._lex_item(ch, open_at)
            if kind is Tok.LPAREN:
                depth += 1
            elif kind is Tok.RPAREN:
                depth -= 1
                if depth < 0:
                    raise self.src.error("unexpected right paren", start)
            self.tokens.append(Token(kind, value, start, self.pos, spaced))
            spaced = False

    def _lex_comment(self, open_at: int) -> None:
        close = self.text.find("*/", self.pos + 2)
        if close < 0:
            raise self.src.error("unclosed comment", self.pos, self.pos + 2, "end it with '*/}}'")
        self.pos = close + 2
        is_delim, size = self._right_delim(self.pos)
        if not is_delim:
            raise self.src.error("comment ends before closing delimiter", close, close + 2,
                                 "a comment must fill its action: write {{/* ... */}}")
        self.trim_next = size == 4
        self.pos += size

    def _lex_item(self, ch: str, open_at: int) -> tuple[Tok, str | int]:
        simple = {"=": Tok.ASSIGN, "|": Tok.PIPE, "(": Tok.LPAREN, ")": Tok.RPAREN, ",": Tok.COMMA}
        if ch in simple:
            self.pos += 1
            return simple[ch], ch
        if ch == ":":
            if not self.text.startswith(":=", self.pos):
                raise self.src.error("expected :=", self.pos)
            self.pos += 2
            return Tok.DECLARE, ":="
        if ch == '"':
            return Tok.STRING, self._quoted()
        if ch == "`":
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.src.error("unterminated raw quoted string", self.pos)
            value = self.text[self.pos + 1:end].replace("\r", "")  # Go drops CRs in raw strings
            self.pos = end + 1
            return Tok.STRING, value
        if ch == "'":
            return Tok.CHAR, self._char()
        if ch == "$":
            self.pos += 1
            return Tok.VARIABLE, "$" + self._word()
        if ch == "." and not self._peek_digit(self.pos + 1):
            self.pos += 1
            word = self._word()
            self._check_terminator()
            return (Tok.FIELD, "." + word) if word else (Tok.DOT, ".")
        if ch in "+-.0123456789":
            return Tok.NUMBER, self._number()
        if ch.isalpha() or ch == "_":
            word = self._word()
            self._check_terminator()
            if word in ("true", "false"):
                return Tok.BOOL, word
            return (Tok.KEYWORD if word in KEYWORDS else Tok.IDENT), word
        raise self.src.error(f"unrecognized character in action: {ch!r}", self.pos,
                             hint="comments are written {{/* ... */}}" if ch == "/" else None)

    def _peek_digit(self, at: int) -> bool:
        return at < len(self.text) and self.text[at] in "0123456789"

    def _word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start:self.pos]

    def _check_terminator(self) -> None:
        """After a name Go requires a space, '.', ',', '|', ':', a paren or the delimiter."""
        if self.pos >= len(self.text):
            return
        ch = self.text[self.pos]
        if ch in _SPACE or ch in ".,|:()" or self._right_delim(self.pos)[0]:
            return
        raise self.src.error(f"bad character {ch!r}", self.pos)

    def _number(self) -> str:
        start = self.pos
        if self.text[self.pos] in "+-":
            self.pos += 1
        digits, exponents = "0123456789_", "eE"
        if self.text.startswith(("0x", "0X"), self.pos):
            self.pos += 2
            digits, exponents = "0123456789abcdefABCDEF_", "pP"
        elif self.text.startswith(("0o", "0O", "0b", "0B"), self.pos):
            self.pos += 2
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in digits or ch == ".":
                self.pos += 1
            elif ch in exponents:
                self.pos += 1
                if self.text[self.pos:self.pos + 1] in ("+", "-"):
                    self.pos += 1
            else:
                break
        if self.text[self.pos:self.pos + 1] == "i":
            raise self.src.error("complex numbers are not supported", start, self.pos + 1)
        if self.pos < len(self.text) and (self.text[self.pos].isalnum()):
            raise self.src.error(f"bad number syntax: {self.text[start:self.pos + 1]!r}", start, self.pos + 1)
        return self.text[start:self.pos]

    def _quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.src.error("unterminated quoted string", start, self.pos)
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                out.append(self._escape('"'))
            else:
                out.append(ch)
                self.pos += 1

    def _char(self) -> int:
        start = self.pos
        self.pos += 1
        if self.text[self.pos:self.pos + 1] == "\\":
            value = self._escape("'")
        elif self.pos < len(self.text) and self.text[self.pos] not in "'\n":
            value = self.text[self.pos]
            self.pos += 1
        else:
            raise self.src.error("malformed character constant", start, self.pos + 1)
        if self.text[self.pos:self.pos + 1] != "'" or len(value) != 1:
            raise self.src.error("unterminated character constant", start, self.pos)
        self.pos += 1
        return ord(value)

    def _escape(self, quote: str) -> str:
        """Decode one backslash escape at self.pos, the way Go's strconv.Unquote does."""
        start = self.pos
        code = self.text[self.pos + 1:self.pos + 2]
        if code in _ESCAPES and (code not in "'\"" or code == quote):
            self.pos += 2
            return _ESCAPES[code]
        sizes = {"x": 2, "u": 4, "U": 8}
        if code in sizes:
            digits = self.text[self.pos + 2:self.pos + 2 + sizes[code]]
            if len(digits) == sizes[code] and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.pos += 2 + sizes[code]
                return chr(int(digits, 16))
        elif code in "01234567" and code:
            digits = self.text[self.pos + 1:self.pos + 4]
            if len(digits) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) < 256:
                self.pos += 4
                return chr(int(digits, 8))
        raise self.src.error("invalid escape sequence in quoted string", start, start + 2)


def lex(source: GoSource) -> list[Token]:
    """Split a Go template into tokens; raises TemplateError at the first lexical error."""
    return _Lexer(source).run()
