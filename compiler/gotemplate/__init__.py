"""Go `text/template` chat templates (Ollama's TEMPLATE) translated to Jinja.

Pipeline, one module per stage:

    text --lexer--> tokens --parser--> Tree (nodes) --translate--> Jinja

This module runs it and adds what Ollama does around Go's engine, so the result renders
as Ollama would:

* a template that mentions neither `Messages` nor `Response` gets `{{ .Response }}`
  appended (Ollama's `Parse`);
* a template that mentions `Messages` is executed once over the collated conversation;
  any other ("legacy") template is executed turn by turn over System/Prompt/Response, the
  last turn with everything after the first `{{ .Response }}` removed. For legacy
  templates a second Jinja source, `final_jinja`, holds that cut version.

Errors are TemplateErrors whose Span points into the Modelfile when `origin` (where the
template text starts) is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.compiler.gotemplate.nodes import Action, Command, FieldNode, Pipe, Tree, cut_after_response, identifiers
from corral.compiler.gotemplate.lexer import GoSource, shift_span
from corral.compiler.gotemplate.parser import parse
from corral.compiler.gotemplate.translate import Positions, source_range, translate_nodes
from corral.dsl.span import Span

__all__ = ["GoTemplate", "translate", "parse_go"]


@dataclass(frozen=True, slots=True)
class GoTemplate:
    """A translated Go template."""

    source: str                      # the Go text as written
    jinja: str                       # Jinja for the whole template
    final_jinja: str | None          # legacy templates: Jinja for the last turn (cut after .Response)
    uses_messages: bool              # executed once over .Messages (else turn by turn)
    origin: Span | None
    positions: Positions
    final_positions: Positions

    def span_at(self, jinja_line: int, final: bool = False) -> Span:
        """Where in the Go source (and enclosing file) a line of the Jinja translation came from."""
        start, end = source_range(self.final_positions if final else self.positions, jinja_line)
        return GoSource(self.source, self.origin).span(start, max(end, start + 1))


def _response_action(at: int) -> Action:
    field = FieldNode(("Response",), at, at)
    return Action(Pipe((), False, (Command((field,), at, at),), at, at), at, at)


def parse_go(text: str, *, origin: Span | None = None) -> Tree:
    """Parse Go template text (no translation); raises TemplateError on invalid syntax."""
    return parse(GoSource(text, origin))


def translate(text: str, *, origin: Span | None = None) -> GoTemplate:
    """Translate a Go chat template to Jinja with Ollama's execution rules attached.

    `origin` is where the template text begins in its file (a Modelfile's TEMPLATE value);
    error positions are mapped onto it. Raises TemplateError for invalid or untranslatable
    templates.
    """
    source = GoSource(text, origin)
    tree = parse(source)
    names = identifiers(tree)
    root = tree.root
    if "messages" not in names and "response" not in names:
        root = root + (_response_action(len(text)),)
    main = translate_nodes(source, tree, root)
    uses_messages = "messages" in names
    final = None if uses_messages else translate_nodes(source, tree, cut_after_response(root))
    return GoTemplate(
        source=text, jinja=main.jinja, final_jinja=None if final is None else final.jinja,
        uses_messages=uses_messages, origin=origin, positions=main.positions,
        final_positions=() if final is None else final.positions,
    )


def template_span(text: str, origin: Span | None, line: int) -> Span:
    """The Span of a whole line of template text (for errors that only know a line)."""
    lines = text.split("\n")
    width = len(lines[line - 1]) if 0 < line <= len(lines) else 0
    return shift_span(Span("<template>", line, 1, line, width + 1), origin)
