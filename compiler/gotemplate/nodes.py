"""Syntax tree of a Go template, and the two tree walks Ollama performs on it.

Nodes mirror `text/template/parse`: statements (text, actions, if/range/with, ...) hold
pipelines, pipelines hold commands, commands hold arguments. Every node keeps the offsets
of the source it came from so later stages can point at it. `FieldNode`, `LiteralNode` and
`TextNode` carry Go's suffix so as not to read as pydantic's Field, typing's Literal or the IR's Text.

Ollama inspects the tree before executing it, and a faithful renderer must do the same:
`identifiers` lists the field and variable names used (a template that mentions
`Messages` is executed once over the whole conversation, others turn by turn), and
`cut_after_response` drops everything after the first `{{ .Response }}` for the last turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Iterator


# --- arguments -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FieldNode:
    names: tuple[str, ...]   # .A.B -> ("A", "B")
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Variable:
    name: str                # "$" or "$x", as written
    slot: str                # unique name of this declaration ("$" for the root)
    names: tuple[str, ...]   # $x.A.B -> ("A", "B")
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Dot:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LiteralNode:
    value: str | int | float | bool | None   # None is Go's nil
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Ident:
    name: str                # a function name
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Chain:
    node: Arg              # (pipeline).A.B
    names: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[Arg, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Pipe:
    decl: tuple[Variable, ...]   # variables declared (:=) or assigned (=)
    is_assign: bool
    commands: tuple[Command, ...]
    start: int
    end: int


Arg = FieldNode | Variable | Dot | LiteralNode | Ident | Chain | Pipe


# --- statements ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextNode:
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Action:
    pipe: Pipe
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Branch:
    """if / range / with: `kind` names which one."""

    kind: str
    pipe: Pipe
    body: tuple[Node, ...]
    else_body: tuple[Node, ...] | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LoopControl:
    word: str                # "break" or "continue"
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TemplateCall:
    name: str
    pipe: Pipe | None
    start: int
    end: int


Node = TextNode | Action | Branch | LoopControl | TemplateCall


@dataclass(frozen=True, slots=True)
class Tree:
    """A parsed template: the main body plus the bodies named by {{define}} and {{block}}."""

    root: tuple[Node, ...]
    defines: dict[str, tuple[Node, ...]] = field(default_factory=dict)


# --- walks -----------------------------------------------------------------------------
def _arg_names(arg: Arg) -> Iterator[str]:
    if isinstance(arg, FieldNode):
        yield from arg.names
    elif isinstance(arg, Variable):
        yield arg.name
        yield from arg.names
    elif isinstance(arg, Pipe):
        for command in arg.commands:
            for a in command.args:
                yield from _arg_names(a)


def _node_names(nodes: tuple[Node, ...]) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, Action):
            yield from _arg_names(node.pipe)
        elif isinstance(node, TemplateCall) and node.pipe is not None:
            yield from _arg_names(node.pipe)
        elif isinstance(node, Branch):
            yield from _arg_names(node.pipe)
            yield from _node_names(node.body)
            yield from _node_names(node.else_body or ())


def identifiers(tree: Tree) -> frozenset[str]:
    """Lower-cased field and variable names used anywhere, as Ollama's `Template.Vars` lists them.

    Like Ollama, chains hanging off a parenthesised pipeline are not looked into.
    """
    names = set(_node_names(tree.root))
    for body in tree.defines.values():
        names.update(_node_names(body))
    return frozenset(n.lower() for n in names)


class _Cutter:
    """Ollama's `deleteNode` walk: keep the first `.Response` field, drop all that follows it."""

    def __init__(self) -> None:
        self.cut = False

    def nodes(self, nodes: tuple[Node, ...]) -> tuple[Node, ...]:
        kept: list[Node] = []
        for node in nodes:
            if self.cut:
                continue  # Ollama tests every node against the predicate before descending
            new = self.node(node)
            if new is not None:
                kept.append(new)
        return tuple(kept)

    def node(self, node: Node) -> Node | None:
        if isinstance(node, Branch):
            # Ollama walks the bodies but never a branch's own pipeline, so
            # `{{ if .Response }}` is not a cut point.
            body = self.nodes(node.body)
            else_body = None if node.else_body is None else self.nodes(node.else_body)
            return replace(node, body=body, else_body=else_body)
        if isinstance(node, Action):
            pipe = self.pipe(node.pipe)
            return None if pipe is None else replace(node, pipe=pipe)
        return node

    def pipe(self, pipe: Pipe) -> Pipe | None:
        commands: list[Command] = []
        for command in pipe.commands:
            args: list[Arg] = []
            for arg in command.args:
                if self.cut:
                    continue
                if isinstance(arg, FieldNode) and "Response" in arg.names:
                    self.cut = True
                    args.append(arg)
                elif isinstance(arg, Pipe):
                    inner = self.pipe(arg)
                    if inner is not None:
                        args.append(inner)
                else:
                    args.append(arg)
            if not args:
                return None
            commands.append(replace(command, args=tuple(args)))
        return replace(pipe, commands=tuple(commands)) if commands else None


def cut_after_response(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """The template Ollama executes for the last turn of a legacy (no `.Messages`) template.

    The text after `{{ .Response }}` (usually an end-of-turn token) must not be emitted
    while the model is still to write that response.
    """
    return _Cutter().nodes(nodes)

