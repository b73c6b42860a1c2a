"""corral.compiler.templates: chat templates, from their text to a rendered prompt.

`chat` compiles a template (Jinja or Go, detected) and test-renders it; `library` is Ollama's
named templates (package data in `ollama/`, MIT) and the recognition of a GGUF's template;
`sandbox` is the one jinja2 sandbox every template runs in; `prompt` renders a spec's messages.

May import: corral.errors, corral.dsl (spans), corral.compiler.errors, corral.compiler.gotemplate,
corral.compiler.spec.
"""
