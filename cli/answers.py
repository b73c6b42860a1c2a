"""How an answer shows on the terminal, in `corral run` and its REPL alike: the user's message with
the images it names, the thinking apart from the answer, word wrap, Ollama's `--verbose` block."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

from corral.cli import output
from corral.cli.client import Message
from corral.cli.inputs import extract_images
from corral.cli.session import OnText
from corral.cli.wrap import WordWrap, terminal_width

if TYPE_CHECKING:
    from corral.runtime.inference import Done


def user_message(text: str) -> Message:
    """The user's message, with the image files its text names read into `images`."""
    found = extract_images(text)
    message: Message = {"role": "user", "content": found.text}
    if found.images:
        message["images"] = found.images
        for path in found.paths:
            output.err(f"Added image '{path}'")
    return message


class ThinkingView:
    """Shows an answer's thinking apart from it, as Ollama does: "Thinking..." and the thinking
    (dimmed on a terminal), "...done thinking." before the answer; `hide` drops the thinking."""

    def __init__(self, hide: bool = False, stream: Any = None):
        self.hide = hide
        self.stream = stream if stream is not None else sys.stdout
        self.dim = bool(getattr(self.stream, "isatty", lambda: False)())
        self.thinking = False

    def _write(self, text: str, dim: bool = False) -> None:
        if dim and self.dim:
            from rich.console import Console

            Console(file=self.stream, soft_wrap=True).print(text, style="dim", end="", markup=False,
                                                            highlight=False)
        else:
            self.stream.write(text)
        self.stream.flush()

    def on_thinking(self, piece: str) -> None:
        if self.hide:
            return
        if not self.thinking:
            self.thinking = True
            self._write("Thinking...\n", dim=True)
        self._write(piece, dim=True)

    def on_text(self, piece: str) -> None:
        self.close()
        self._write(piece)

    def close(self) -> None:
        """End a thinking block still open (the answer starts, or ended with no answer)."""
        if self.thinking:
            self.thinking = False
            self._write("\n...done thinking.\n\n", dim=True)


def wrapped(on_text: OnText, wordwrap: bool) -> tuple[OnText, Callable[[], None]]:
    """`on_text` behind a word wrapper at the terminal's width (when on, and stdout is a terminal),
    and the call that writes the word it still holds."""
    width = terminal_width() if wordwrap else None
    if width is None:
        return on_text, lambda: None
    wrapper = WordWrap(width)

    def flush() -> None:
        rest = wrapper.flush()
        if rest:
            on_text(rest)
    return (lambda piece: on_text(wrapper.feed(piece))), flush


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def go_duration(ns: int) -> str:
    """Go's Duration.String() of nanoseconds ("1.234567s", "45.1ms"), as Ollama prints timings."""
    from corral.config.durations import format_go_duration

    return format_go_duration(ns / 1e9)


def render_stats(s: Done) -> str:
    """Ollama's `--verbose` block."""
    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns > 0 else "n/a"

    return "\n".join([
        f"total duration:       {go_duration(s.total_duration)}",
        f"load duration:        {go_duration(s.load_duration)}",
        f"prompt eval count:    {s.prompt_eval_count} token(s)",
        f"prompt eval duration: {go_duration(s.prompt_eval_duration)}",
        f"prompt eval rate:     {rate(s.prompt_eval_count, s.prompt_eval_duration)}",
        f"eval count:           {s.eval_count} token(s)",
        f"eval duration:        {go_duration(s.eval_duration)}",
        f"eval rate:            {rate(s.eval_count, s.eval_duration)}",
    ])
