"""Modelfile text -> a list of statements with spans (what was written, in order), via Lark.

This stage knows the grammar, not the meaning: `build.py` checks names, values and roles. Lark's
exceptions are turned into Diagnostics here and nowhere else. After a syntax error the offending
line is blanked out and parsing starts again, so one run reports every error in the file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, UnexpectedToken

from corral import grammars
from corral.dsl.errors import Diagnostic, did_you_mean
from corral.dsl.span import Span

COMMANDS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "PROJECTOR", "LICENSE", "MESSAGE",
            "REQUIRES", "DRAFT", "RENDERER", "PARSER")
_MAX_ERRORS = 50


@dataclass(frozen=True, slots=True)
class Statement:
    """One command as written: `keyword [argument] value`, with spans for each part."""

    keyword: str  # upper-case command word; for an unknown command, the word as written
    span: Span  # the whole statement
    keyword_span: Span
    value: str  # unquoted
    value_span: Span
    argument: str | None = None  # PARAMETER name or MESSAGE role
    argument_span: Span | None = None
    known: bool = True
    comments: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Syntax:
    statements: tuple[Statement, ...]
    trailing_comments: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    lines: tuple[str, ...]  # source lines, for excerpts
    valueless: frozenset[str] = frozenset()  # commands written without a value (each a diagnostic)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammars.read("modelfile.lark"), parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=False)


def parse_syntax(text: str, path: str) -> Syntax:
    """Parse normalized Modelfile text into statements, collecting every syntax error."""
    lines = tuple(text.split("\n"))
    diagnostics: list[Diagnostic] = []
    valueless: set[str] = set()
    work = text
    while True:
        try:
            tree = _parser().parse(work)
            break
        except UnexpectedInput as e:
            pos = len(work) if _at_eof(e) else e.pos_in_stream
            diag, blank_to_end, command = _diagnose(e, work, pos, path)
            diagnostics.append(diag)
            if command is not None:
                valueless.add(command)
            if blank_to_end or len(diagnostics) >= _MAX_ERRORS:
                cut = work.rfind("\n", 0, pos) + 1
                tree = None
                work = work[:cut]
                try:
                    tree = _parser().parse(work)
                except UnexpectedInput:
                    tree = None
                break
            work = _blank_line(work, pos)
    statements, trailing = _statements(tree, text, path) if tree is not None else ((), ())
    with_lines = tuple(_with_line(d, lines) for d in diagnostics)
    return Syntax(statements, trailing, with_lines, lines, frozenset(valueless))


def _with_line(d: Diagnostic, lines: tuple[str, ...]) -> Diagnostic:
    if d.span is None or d.source_line is not None or not (0 < d.span.line <= len(lines)):
        return d
    return Diagnostic(d.message, d.span, d.hint, d.severity, lines[d.span.line - 1])


def _at_eof(e: UnexpectedInput) -> bool:
    return isinstance(e, UnexpectedToken) and e.token.type == "$END"


def _blank_line(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    return text[:start] + " " * (end - start) + text[end:]


def _diagnose(e: UnexpectedInput, text: str, pos: int, path: str) -> tuple[Diagnostic, bool, str | None]:
    """A user-facing message for a Lark error at `pos`; True when the rest of the file is lost;
    the command written without a value, when that is the error."""
    expected = set(e.expected if isinstance(e, UnexpectedToken) else (e.allowed or ()))
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start: len(text) if line_end < 0 else line_end]
    rest = text[pos:]
    here = Span.at(path, text, pos)

    if "KEYWORD" in expected:  # where a command may begin
        word = _leading(rest, str.isalpha)
        token = rest.split(None, 1)[0] if rest.strip() else rest
        if word and word.upper() in COMMANDS and (rest[len(word):len(word) + 1] in ("", "\n")):
            return Diagnostic(f"{word.upper()} needs a value", _span(path, text, pos, len(word)),
                              hint=f"write it as `{word.upper()} <value>` on one line"), False, word.upper()
        if word and rest[len(word):len(word) + 1] in ("", "\n"):
            return unknown_command(word, _span(path, text, pos, len(word))), False, None
        return Diagnostic(
            f"invalid command {token!r}: a command is a word of letters followed by a space",
            _span(path, text, pos, len(token)),
            hint=did_you_mean(word, COMMANDS) if word else f"commands are {', '.join(COMMANDS)}",
        ), False, None
    if "TRIPLE_QUOTED" in expected and rest.startswith('"'):
        quote = '"""' if rest.startswith('"""') else '"'
        return Diagnostic(
            f"unterminated {quote} value: the quote opened here is never closed",
            _span(path, text, pos, len(quote)),
            hint=f"end the value with {quote}; only spaces may follow the closing {quote} on its line",
        ), True, None
    if expected == {"PARAM_NAME"}:
        return Diagnostic("expected a parameter name after PARAMETER", here,
                          hint="write it as `PARAMETER <name> <value>`"), False, None
    if expected == {"ROLE"}:
        return Diagnostic("expected a message role after MESSAGE", here,
                          hint="write it as `MESSAGE <role> <content>`; roles are system, user, assistant, tool"), False, None
    if expected == {"_SEP"}:
        head = line.lstrip().split(None, 1)[0].upper() if line.strip() else ""
        prev = _trailing_word(text[line_start:pos])
        what = "parameter" if head == "PARAMETER" else "message role"
        if rest[:1] in ("", "\n"):
            thing = f"parameter {prev!r}" if head == "PARAMETER" else f"MESSAGE {prev}"
            return Diagnostic(f"{thing} has no value", here,
                              hint="put the value on the same line, after a space"), False, None
        bad = rest[0]
        return Diagnostic(f"invalid character {bad!r} in {what} {prev + rest.split(None, 1)[0]!r}",
                          here, hint="parameter names are letters, digits and '_'" if head == "PARAMETER"
                          else "roles are system, user, assistant, tool"), False, None
    return Diagnostic(f"unexpected {rest[:1]!r}" if rest else "unexpected end of file", here), False, None


def closest_command(word: str) -> str | None:
    """The command an unknown word was most likely meant to be (the one `unknown_command` suggests)."""
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in COMMANDS], n=1, cutoff=0.6)
    return close[0].upper() if close else None


def unknown_command(word: str, span: Span) -> Diagnostic:
    return Diagnostic(f"unknown command {word!r}", span,
                      hint=did_you_mean(word, COMMANDS) or f"commands are {', '.join(COMMANDS)}")


def _leading(s: str, pred) -> str:
    n = 0
    while n < len(s) and pred(s[n]) and s[n].isascii():
        n += 1
    return s[:n]


def _trailing_word(s: str) -> str:
    n = len(s)
    while n > 0 and (s[n - 1].isalnum() or s[n - 1] == "_"):
        n -= 1
    return s[n:]


def _span(path: str, text: str, pos: int, length: int) -> Span:
    return Span.between(path, text, pos, pos + max(1, length))


def _tok_span(path: str, tok: Token) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


def _unquote(tok: Token) -> str:
    raw = str(tok)
    if tok.type == "TRIPLE_QUOTED":
        return raw.rstrip(" \t")[3:-3]
    if tok.type == "QUOTED":
        return raw.rstrip(" \t")[1:-1]
    return raw.strip()


def _statements(tree: Tree, text: str, path: str) -> tuple[tuple[Statement, ...], tuple[str, ...]]:
    out: list[Statement] = []
    comments: list[str] = []
    for child in tree.children:
        if isinstance(child, Token):  # COMMENT
            comments.append(str(child))
            continue
        toks = [t for t in child.children if isinstance(t, Token)]
        values = [t for t in child.children if isinstance(t, Tree)]
        head = toks[0]
        argument = toks[1] if child.data in ("parameter", "message") else None
        if values:
            vtok = values[0].children[0]
            value, vspan = _unquote(vtok), _tok_span(path, vtok)
        else:
            last = argument or head
            value = ""
            vspan = Span(path, last.end_line, last.end_column + 1, last.end_line, last.end_column + 1)
        end = vspan if values else _tok_span(path, argument or head)
        out.append(Statement(
            keyword=str(head).upper() if child.data != "unknown" else str(head),
            span=Span(path, head.line, head.column, end.end_line, end.end_column),
            keyword_span=_tok_span(path, head),
            value=value,
            value_span=vspan,
            argument=str(argument) if argument is not None else None,
            argument_span=_tok_span(path, argument) if argument is not None else None,
            known=child.data != "unknown",
            comments=tuple(comments),
        ))
        comments = []
    return tuple(out), tuple(comments)
