"""corral.dsl: Modelfile and TOML definitions -> the validated IR.

Pipeline (one module each): decode -> syntax (Lark grammar, grammars/modelfile.lark) -> build (IR
validation, shared with toml_form) -> ir. `format` and `toml_form` write the IR back out.
"""

from corral.dsl.build import Parsed
from corral.errors import CorralError
from corral.dsl.errors import DefinitionError, Diagnostic, FormatError, Severity
from corral.dsl.format import format_modelfile
from corral.dsl.ir import Message, ModelDefinition, Parameter, Text
from corral.dsl.load import load, parse_text, syntax_of
from corral.dsl.modelfile import parse_modelfile
from corral.dsl.span import Span
from corral.dsl.toml_form import format_toml, parse_toml

__all__ = [
    "CorralError", "DefinitionError", "Diagnostic", "FormatError", "Message", "ModelDefinition",
    "Parameter", "Parsed", "Severity", "Span", "Text", "format_modelfile", "format_toml", "load",
    "parse_modelfile", "parse_text", "parse_toml", "syntax_of",
]
