"""Go template tree -> Jinja source that renders the same bytes.

The translation is mechanical rather than idiomatic, because faithfulness matters more
than looks:

* Text is emitted as Jinja data (Go trim markers were already applied by the lexer); text
  Jinja would misread (`{{`, `{%`, `{#`, carriage returns, a trailing `{`) becomes a string
  literal.
* Every Go variable lives in one `namespace` under a unique slot, because Go lets
  `$x = ...` inside a `range` or `if` change the variable outside it, while Jinja's `set`
  inside a loop would not.
* Dot is a Jinja name per `range`/`with` (`it3`, `w4`), so nested scopes restore it.
* Go semantics that Jinja lacks (field rules, `eq` typing, byte lengths, sorted map
  ranges, Go printing) go through the `go_*` functions of `runtime`. `and`,
  `or`, `not` and `if` map to Jinja's, since Python's truthiness of these values equals
  Go's and both return the deciding operand.
* `{{template}}` / `{{block}}` are expanded in place (recursion is refused).

Code for a Go action is placed on the same line number as the action in the Go source
(newlines inside a Jinja tag print nothing), which keeps the translation readable side by
side with the original; each Jinja line's first Go offset is recorded too, so a failure
while rendering is reported at the action that caused it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corral.compiler.gotemplate.fmt import escaped
from corral.compiler.gotemplate.nodes import (Action, Arg, Branch, Chain, Command, Dot, FieldNode, Ident, LiteralNode, LoopControl, Node, Pipe, TemplateCall, TextNode, Tree, Variable)
from corral.compiler.gotemplate.lexer import GoSource

# name -> (Jinja function, fewest arguments, most arguments or None)
_FUNCTIONS: dict[str, tuple[str, int, int | None]] = {
    "and": ("", 1, None), "or": ("", 1, None), "not": ("", 1, 1),
    "len": ("go_len", 1, 1), "index": ("go_index", 1, None), "slice": ("go_slice", 1, 4),
    "print": ("go_print", 0, None), "println": ("go_println", 0, None),
    "printf": ("go_printf", 1, None), "eq": ("go_eq", 2, None), "ne": ("go_ne", 2, 2),
    "lt": ("go_lt", 2, 2), "le": ("go_le", 2, 2), "gt": ("go_gt", 2, 2), "ge": ("go_ge", 2, 2),
    "html": ("go_html", 0, None), "urlquery": ("go_urlquery", 0, None), "json": ("go_json", 1, 1),
    "currentDate": ("go_current_date", 0, None), "yesterdayDate": ("go_yesterday_date", 0, None),
}
_UNSUPPORTED = {
    "call": "templates get no function values to call",
    "js": "escape the text in the template itself, or use json",
    "toTypeScriptType": "describe the tool parameters with json instead",
}


def jinja_string(text: str) -> str:
    """A Jinja string literal for `text`, escaped so Jinja decodes it back byte for byte."""
    named = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "'" + escaped(text, named, hex_ascii=False) + "'"


def jinja_text(text: str) -> str:
    """Template text as Jinja data, or as a string literal where Jinja would misread it."""
    risky = any(mark in text for mark in ("{{", "{%", "{#", "\r")) or text.endswith("{")
    return "{{ " + jinja_string(text) + " }}" if risky else text


Positions = tuple[tuple[int, int, int], ...]  # (Jinja line, Go start, Go end) of the code on a line


@dataclass(frozen=True, slots=True)
class Translation:
    """Jinja source plus, per Jinja line, the Go source range of the actions on it."""

    jinja: str
    positions: Positions


def source_range(positions: Positions, jinja_line: int) -> tuple[int, int]:
    """The Go source range of the actions behind a line of the Jinja source."""
    best = (0, 0)
    for line, start, end in positions:
        if line > jinja_line:
            break
        best = (start, end)
    return best


@dataclass(frozen=True, slots=True)
class _Scope:
    dot: str    # the Jinja expression standing for Go's `.`
    root: str   # ... and for `$`


class Translator:
    def __init__(self, source: GoSource, tree: Tree):
        self.src = source
        self.tree = tree
        self.out: list[str] = []
        self.line = 1
        self.pad = 0  # newlines to put into the next tag, to keep Jinja lines on Go lines
        self.positions: list[tuple[int, int, int]] = []
        self.counter = 0
        self.uses_namespace = False
        self.expanding: list[str] = []

    def run(self, nodes: tuple[Node, ...]) -> Translation:
        self.nodes(nodes, _Scope("root", "root"))
        body = "".join(self.out)
        if self.uses_namespace:  # on the first line, so Jinja line numbers stay put
            body = "{% set ns = namespace() %}" + body
        return Translation(body, tuple(self.positions))

    # --- output ------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        if self.pad and text.startswith(("{%", "{{")):
            # Newlines inside a tag print nothing but move the code down to the Go line.
            text = text[:2] + "\n" * self.pad + text[2:]
            self.pad = 0
        self.out.append(text)
        self.line += text.count("\n")

    def mark(self, node: Node) -> None:
        """Move the next code node to its Go line and note which Go source its Jinja line holds."""
        if isinstance(node, TextNode):
            return  # text cannot fail, so it needs no position
        go_line = self.src.text.count("\n", 0, node.start) + 1
        self.pad = max(0, go_line - self.line)
        line = self.line + self.pad
        # For blocks, only the opening tag: that is where their pipeline is evaluated.
        end = node.pipe.end + 2 if isinstance(node, Branch) else node.end
        if self.positions and self.positions[-1][0] == line:
            first = self.positions[-1][1]
            self.positions[-1] = (line, first, max(end, self.positions[-1][2]))
        else:
            self.positions.append((line, node.start, end))

    def fresh(self) -> int:
        self.counter += 1
        return self.counter

    def slot(self, var: Variable) -> str:
        self.uses_namespace = True
        return "ns." + var.slot

    # --- statements ----------------------------------------------------------------------
    def nodes(self, nodes: tuple[Node, ...], scope: _Scope) -> None:
        for node in nodes:
            self.mark(node)
            if isinstance(node, TextNode):
                self.emit(jinja_text(node.text))
            elif isinstance(node, Action):
                self.action(node, scope)
            elif isinstance(node, Branch):
                {"if": self.if_, "range": self.range_, "with": self.with_}[node.kind](node, scope)
            elif isinstance(node, LoopControl):
                self.emit("{% " + node.word + " %}")
            else:
                self.template_call(node, scope)

    def action(self, node: Action, scope: _Scope) -> None:
        value = self.pipe(node.pipe, scope)
        if node.pipe.decl:
            self.emit(f"{{% set {self.slot(node.pipe.decl[0])} = {value} %}}")
        else:
            self.emit(f"{{{{ go_str({value}) }}}}")

    def condition(self, pipe: Pipe, scope: _Scope) -> str:
        """The tested value of an if/with pipeline, declaring its variable first if it has one."""
        value = self.pipe(pipe, scope)
        if not pipe.decl:
            return value
        slot = self.slot(pipe.decl[0])
        self.emit(f"{{% set {slot} = {value} %}}")
        return slot

    def if_(self, node: Branch, scope: _Scope) -> None:
        self.emit(f"{{% if {self.condition(node.pipe, scope)} %}}")
        self.nodes(node.body, scope)
        rest = node.else_body
        # `else if` chains become elif, unless a declaration needs a statement before the test.
        while rest and len(rest) == 1 and isinstance(rest[0], Branch) and rest[0].kind == "if" \
                and not rest[0].pipe.decl:
            self.mark(rest[0])
            self.emit(f"{{% elif {self.pipe(rest[0].pipe, scope)} %}}")
            self.nodes(rest[0].body, scope)
            rest = rest[0].else_body
        if rest is not None:
            self.emit("{% else %}")
            self.nodes(rest, scope)
        self.emit("{% endif %}")

    def range_(self, node: Branch, scope: _Scope) -> None:
        n = self.fresh()
        key, item = f"ix{n}", f"it{n}"
        self.emit(f"{{% for {key}, {item} in go_range({self.pipe(node.pipe, scope)}) %}}")
        sources = (key, item) if len(node.pipe.decl) == 2 else (item,)
        for var, source in zip(node.pipe.decl, sources, strict=False):
            self.emit(f"{{% set {self.slot(var)} = {source} %}}")
        self.nodes(node.body, _Scope(item, scope.root))
        if node.else_body is not None:
            self.emit("{% else %}")
            self.nodes(node.else_body, scope)
        self.emit("{% endfor %}")

    def with_(self, node: Branch, scope: _Scope) -> None:
        name = f"w{self.fresh()}"
        self.emit(f"{{% with {name} = {self.condition(node.pipe, scope)} %}}{{% if {name} %}}")
        self.nodes(node.body, _Scope(name, scope.root))
        if node.else_body is not None:
            self.emit("{% else %}")
            self.nodes(node.else_body, scope)
        self.emit("{% endif %}{% endwith %}")

    def template_call(self, node: TemplateCall, scope: _Scope) -> None:
        body = self.tree.defines.get(node.name)
        if body is None:
            raise self.src.error(f"no such template {node.name!r}", node.start, node.end,
                                 "define it with {{ define \"" + node.name + "\" }}...{{ end }}")
        if node.name in self.expanding:
            raise self.src.error(f"template {node.name!r} invokes itself", node.start, node.end,
                                 "recursive templates cannot be translated")
        name = f"t{self.fresh()}"
        value = "none" if node.pipe is None else self.pipe(node.pipe, scope)
        self.emit(f"{{% with {name} = {value} %}}")
        self.expanding.append(node.name)
        self.nodes(body, _Scope(name, name))  # inside a template `$` is its argument
        self.expanding.pop()
        self.emit("{% endwith %}")

    # --- expressions ---------------------------------------------------------------------
    def pipe(self, pipe: Pipe, scope: _Scope) -> str:
        value: str | None = None
        for command in pipe.commands:
            value = self.command(command, scope, value)
        assert value is not None
        return value

    def command(self, command: Command, scope: _Scope, piped: str | None) -> str:
        first = command.args[0]
        if isinstance(first, Ident):
            return self.call(first, command.args[1:], piped, scope)
        if len(command.args) > 1 or piped is not None:
            raise self.src.error("can't give argument to non-function", first.start, first.end,
                                 "only functions such as printf or index take arguments")
        if isinstance(first, LiteralNode) and first.value is None:
            raise self.src.error("nil is not a command", first.start, first.end)
        return self.arg(first, scope)

    def call(self, ident: Ident, args: tuple[Arg, ...], piped: str | None, scope: _Scope) -> str:
        if ident.name in _UNSUPPORTED:
            raise self.src.error(f"function {ident.name!r} is not supported", ident.start, ident.end,
                                 _UNSUPPORTED[ident.name])
        target, least, most = _FUNCTIONS[ident.name]
        values = [self.arg(a, scope) for a in args] + ([piped] if piped is not None else [])
        if len(values) < least or most is not None and len(values) > most:
            want = str(least) if least == most else f"at least {least}" if most is None else f"{least} to {most}"
            raise self.src.error(f"wrong number of args for {ident.name}: want {want} got {len(values)}",
                                 ident.start, ident.end)
        if ident.name in ("and", "or"):
            return "(" + f" {ident.name} ".join(values) + ")"
        if ident.name == "not":
            return f"(not {values[0]})"
        return f"{target}({', '.join(values)})"

    def arg(self, arg: Arg, scope: _Scope) -> str:
        if isinstance(arg, FieldNode):
            return self.fields(scope.dot, arg.names)
        if isinstance(arg, Variable):
            base = scope.root if arg.slot == "$" else self.slot(arg)
            return self.fields(base, arg.names)
        if isinstance(arg, Dot):
            return scope.dot
        if isinstance(arg, LiteralNode):
            return self.literal(arg)
        if isinstance(arg, Ident):
            return self.call(arg, (), None, scope)
        if isinstance(arg, Chain):
            return self.fields(self.arg(arg.node, scope), arg.names)
        if arg.decl:
            raise self.src.error("variables cannot be declared inside parentheses", arg.start, arg.end)
        return self.pipe(arg, scope)

    @staticmethod
    def fields(base: str, names: tuple[str, ...]) -> str:
        if not names:
            return base
        return f"go_field({base}, {', '.join(jinja_string(n) for n in names)})"

    def literal(self, lit: LiteralNode) -> str:
        value = lit.value
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return jinja_string(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.src.error("number out of range", lit.start, lit.end)
        text = repr(value)
        return f"({text})" if text.startswith("-") else text


def translate_nodes(source: GoSource, tree: Tree, nodes: tuple[Node, ...]) -> Translation:
    """Jinja source for `nodes` (the tree's root, or a cut copy of it)."""
    return Translator(source, tree).run(nodes)
