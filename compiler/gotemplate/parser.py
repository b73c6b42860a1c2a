"""Parser for Go `text/template`: tokens -> `Tree`.

Structured like Go's `text/template/parse/parse.go` so the same programs are accepted and
rejected: variables must be declared before use (each declaration gets a unique slot so
shadowing survives translation), functions must exist, `break`/`continue` only inside
`range`, `{{define}}` only at the top level, and `else if` / `else with` nest the way Go
nests them.
"""

from __future__ import annotations

from corral.compiler.errors import TemplateError
from corral.compiler.gotemplate.nodes import (Action, Arg, Branch, Chain, Command, Dot, FieldNode, Ident, LiteralNode, LoopControl, Node, Pipe, TemplateCall, TextNode, Tree, Variable)
from corral.compiler.gotemplate.lexer import GoSource, Tok, Token, lex
from corral.dsl.errors import did_you_mean

# Go's builtins plus the functions Ollama registers; which of them translate is the
# translator's business, but a name outside this set is a parse error in Go too.
GO_FUNCTIONS = frozenset({
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "eq", "ne",
    "lt", "le", "gt", "ge", "html", "js", "urlquery", "call",
    "json", "currentDate", "yesterdayDate", "toTypeScriptType",
})
_LITERAL_TOKENS = (Tok.STRING, Tok.NUMBER, Tok.BOOL, Tok.CHAR)


def _number(text: str) -> int | float:
    """An untyped Go constant: int unless written with a fraction or exponent."""
    clean = text.replace("_", "")
    is_hex = clean.lstrip("+-")[:2].lower() == "0x"
    if not is_hex and any(c in clean for c in ".eE") or is_hex and any(c in clean for c in ".pP"):
        return float.fromhex(clean) if is_hex else float(clean)
    body = clean.lstrip("+-")
    sign = -1 if clean.startswith("-") else 1
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        return sign * int(body, 8)  # Go's legacy octal: 017
    return sign * int(body, 0)


class Parser:
    def __init__(self, source: GoSource):
        self.src = source
        self.tokens = lex(source)
        self.i = 0
        self.scopes: list[list[tuple[str, str]]] = []
        self.slot_count: dict[str, int] = {}
        self.loop_depth = 0
        self.defines: dict[str, tuple[Node, ...]] = {}

    # --- token helpers --------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, message: str, tok: Token, hint: str | None = None) -> TemplateError:
        return self.src.error(message, tok.start, max(tok.end, tok.start + 1), hint)

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        shown = "end of input" if tok.kind is Tok.EOF else f"{tok.value!r}" if tok.kind is not Tok.RIGHT else "'}}'"
        return self.fail(f"unexpected {shown} in {context}", tok)

    def expect_close(self, context: str) -> Token:
        tok = self.next()
        if tok.kind is not Tok.RIGHT:
            raise self.unexpected(tok, context)
        return tok

    # --- variables --------------------------------------------------------------------------
    def declare(self, tok: Token) -> Variable:
        name = str(tok.value)
        count = self.slot_count.get(name, 0) + 1
        self.slot_count[name] = count
        slot = "v_" + name[1:] + ("" if count == 1 else f"_{count}")
        self.scopes[-1].append((name, slot))
        return Variable(name, slot, (), tok.start, tok.end)

    def lookup(self, tok: Token) -> Variable:
        name = str(tok.value)
        for scope in reversed(self.scopes):
            for declared, slot in reversed(scope):
                if declared == name:
                    return Variable(name, slot, (), tok.start, tok.end)
        known = [n for scope in self.scopes for n, _ in scope if n != "$"]
        raise self.fail(f"undefined variable {name!r}", tok, did_you_mean(name, known)
                        or "declare it first with {{ " + name + " := ... }}")

    # --- statements -------------------------------------------------------------------------
    def parse(self) -> Tree:
        self.scopes = [[("$", "$")]]
        nodes, stop = self.item_list(top=True)
        assert stop.kind is Tok.EOF
        return Tree(nodes, self.defines)

    def item_list(self, top: bool = False, opener: Token | None = None) -> tuple[tuple[Node, ...], Token]:
        """Nodes up to `{{end}}`/`{{else}}` (returned as the keyword token) or end of input."""
        nodes: list[Node] = []
        while True:
            tok = self.next()
            if tok.kind is Tok.EOF:
                if opener is not None:
                    raise self.fail(f"missing {{{{end}}}} for {{{{{opener.value}}}}}", opener,
                                    "close the block with {{ end }}")
                return tuple(nodes), tok
            if tok.kind is Tok.TEXT:
                nodes.append(TextNode(str(tok.value), tok.start, tok.end))
                continue
            word = self.peek()
            if word.kind is Tok.KEYWORD and word.value in ("end", "else"):
                if opener is None:
                    raise self.fail(f"unexpected {{{{{word.value}}}}}", word,
                                    f"there is no open if/range/with for this {word.value}")
                self.next()
                return tuple(nodes), word
            if word.kind is Tok.KEYWORD and word.value == "define":
                if not top:
                    raise self.fail("{{define}} is only allowed at the top level", word)
                self.next()
                self.define(word)
                continue
            nodes.append(self.action(tok))

    def action(self, left: Token) -> Node:
        word = self.peek()
        if word.kind is Tok.KEYWORD:
            if word.value in ("if", "range", "with"):
                self.next()
                return self.branch(str(word.value), word, left)
            if word.value in ("break", "continue"):
                self.next()
                if self.loop_depth == 0:
                    raise self.fail(f"{{{{{word.value}}}}} outside {{{{range}}}}", word)
                close = self.expect_close(str(word.value))
                return LoopControl(str(word.value), left.start, close.end)
            if word.value == "template":
                self.next()
                name, pipe, close = self.template_clause("template")
                return TemplateCall(name, pipe, left.start, close.end)
            if word.value == "block":
                self.next()
                name, pipe, close = self.template_clause("block")
                self.defines[name] = self.define_body(word)
                return TemplateCall(name, pipe, left.start, close.end)
        pipe = self.pipeline("command", Tok.RIGHT)
        close = self.expect_close("command")
        return Action(pipe, left.start, close.end)

    def branch(self, kind: str, word: Token, left: Token) -> Branch:
        self.scopes.append([])
        if kind == "range":
            self.loop_depth += 1
        pipe = self.pipeline(kind, Tok.RIGHT)
        self.expect_close(kind)
        self.scopes.append([])
        body, stop = self.item_list(opener=word)
        self.scopes.pop()
        if kind == "range":
            self.loop_depth -= 1  # break/continue in {{else}} belong to an outer range
        else_body: tuple[Node, ...] | None = None
        end = stop
        if stop.value == "else":
            chained = self.peek()
            if chained.kind is Tok.KEYWORD and chained.value in ("if", "with") and chained.value == kind:
                # {{else if x}} is {{else}}{{if x}}...{{end}}{{end}} with the last {{end}} shared.
                self.next()
                inner = self.branch(kind, chained, stop)
                else_body, end_pos = (inner,), inner.end
                self.scopes.pop()
                return Branch(kind, pipe, body, else_body, left.start, end_pos)
            self.expect_close("else")
            self.scopes.append([])
            else_body, end = self.item_list(opener=word)
            self.scopes.pop()
            if end.value != "end":
                raise self.fail(f"expected {{{{end}}}}; found {{{{{end.value}}}}}", end)
        close = self.expect_close("end")
        self.scopes.pop()
        return Branch(kind, pipe, body, else_body, left.start, close.end)

    def template_clause(self, context: str) -> tuple[str, Pipe | None, Token]:
        name = self.next()
        if name.kind is not Tok.STRING:
            raise self.unexpected(name, f"{context} clause")
        pipe = None
        if self.peek().kind is not Tok.RIGHT:
            pipe = self.pipeline(context, Tok.RIGHT)
        elif context == "block":
            raise self.fail("missing value for block", self.peek())
        return str(name.value), pipe, self.expect_close(f"{context} clause")

    def define(self, word: Token) -> None:
        name = self.next()
        if name.kind is not Tok.STRING:
            raise self.unexpected(name, "define clause")
        self.expect_close("define clause")
        self.defines[str(name.value)] = self.define_body(word)

    def define_body(self, word: Token) -> tuple[Node, ...]:
        """A named template's body: its own variables (`$` is its argument), no enclosing loop."""
        saved = self.scopes, self.loop_depth
        self.scopes, self.loop_depth = [[("$", "$")]], 0
        body, stop = self.item_list(opener=word)
        if stop.value != "end":
            raise self.fail(f"unexpected {{{{{stop.value}}}}} in {{{{{word.value}}}}}", stop)
        self.expect_close("end")
        self.scopes, self.loop_depth = saved
        return body

    # --- pipelines ----------------------------------------------------------------------------
    def pipeline(self, context: str, end: Tok) -> Pipe:
        start = self.peek()
        decl: list[Token] = []
        is_assign = False
        if start.kind is Tok.VARIABLE:
            after = self.peek(1)
            if after.kind in (Tok.DECLARE, Tok.ASSIGN):
                decl, is_assign = [start], after.kind is Tok.ASSIGN
                self.i += 2
            elif after.kind is Tok.COMMA and context == "range" and self.peek(2).kind is Tok.VARIABLE \
                    and self.peek(3).kind in (Tok.DECLARE, Tok.ASSIGN):
                decl, is_assign = [start, self.peek(2)], self.peek(3).kind is Tok.ASSIGN
                self.i += 4
            elif after.kind is Tok.COMMA:
                raise self.fail(f"too many declarations in {context}", after)
        commands: list[Command] = []
        while True:
            commands.append(self.command(context, end))
            if self.peek().kind is Tok.PIPE:
                self.next()
                continue
            break
        if self.peek().kind is not end:
            raise self.unexpected(self.peek(), context)
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], (LiteralNode, Dot)):
                raise self.src.error(f"non executable command in pipeline stage {stage}",
                                     command.start, command.end)
        # Declared names become visible only after the whole pipeline, as in Go.
        variables = tuple(self.lookup(t) if is_assign else self.declare(t) for t in decl)
        return Pipe(variables, is_assign, tuple(commands), start.start, self.peek().start)

    def command(self, context: str, end: Tok) -> Command:
        args: list[Arg] = []
        while self.peek().kind not in (Tok.PIPE, end, Tok.EOF):
            tok = self.peek()
            if args and not tok.spaced:
                raise self.unexpected(tok, "operand")
            args.append(self.operand())
        if not args:
            missing = self.peek()
            raise self.fail(f"missing value for {context}" if missing.kind is not Tok.PIPE
                            else "empty command before '|'", missing)
        return Command(tuple(args), args[0].start, args[-1].end)

    def operand(self) -> Arg:
        node = self.term()
        names: list[str] = []
        end = node.end
        while self.peek().kind is Tok.FIELD and not self.peek().spaced:
            tok = self.next()
            names.append(str(tok.value)[1:])
            end = tok.end
        if not names:
            return node
        if isinstance(node, FieldNode):
            return FieldNode(node.names + tuple(names), node.start, end)
        if isinstance(node, Variable):
            return Variable(node.name, node.slot, node.names + tuple(names), node.start, end)
        if isinstance(node, (LiteralNode, Dot)):
            raise self.src.error("unexpected . after term", node.start, end)
        return Chain(node, tuple(names), node.start, end)

    def term(self) -> Arg:
        tok = self.next()
        if tok.kind is Tok.IDENT:
            name = str(tok.value)
            if name not in GO_FUNCTIONS:
                raise self.fail(f"function {name!r} not defined", tok, did_you_mean(name, GO_FUNCTIONS))
            return Ident(name, tok.start, tok.end)
        if tok.kind is Tok.DOT:
            return Dot(tok.start, tok.end)
        if tok.kind is Tok.FIELD:
            return FieldNode((str(tok.value)[1:],), tok.start, tok.end)
        if tok.kind is Tok.VARIABLE:
            return self.lookup(tok)
        if tok.kind is Tok.KEYWORD and tok.value == "nil":
            return LiteralNode(None, tok.start, tok.end)
        if tok.kind in _LITERAL_TOKENS:
            value: str | int | float | bool = tok.value
            if tok.kind is Tok.BOOL:
                value = tok.value == "true"
            elif tok.kind is Tok.NUMBER:
                try:
                    value = _number(str(tok.value))
                except ValueError:
                    raise self.fail(f"bad number syntax: {tok.value!r}", tok) from None
            return LiteralNode(value, tok.start, tok.end)
        if tok.kind is Tok.LPAREN:
            pipe = self.pipeline("parenthesized pipeline", Tok.RPAREN)
            close = self.next()
            return Pipe(pipe.decl, pipe.is_assign, pipe.commands, tok.start, close.end)
        raise self.unexpected(tok, "operand")


def parse(source: GoSource) -> Tree:
    """Parse Go template text into a Tree; raises TemplateError with the position of the problem."""
    return Parser(source).parse()
