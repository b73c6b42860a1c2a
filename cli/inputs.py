"""What `corral run` reads besides the prompt's text: image files named in it, and `--format`.

As Ollama's CLI does, a path in the prompt that ends in .png, .jpg, .jpeg or .webp and names a
file is read, sent base64-encoded in the message's `images`, and taken out of the text. The
server decides what a model can see: a model without vision answers 400 and says so.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.cli.exit import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 100 * 1024 * 1024  # Ollama's limit on one attached file
# A path as Ollama finds one: starting with /, ./, ../ or ~/ (or a drive letter), quoted or with
# escaped blanks, ending in an image suffix at a word boundary.
_PATH = re.compile(r"""(?:'([^']+)'|"([^"]+)"|((?:[A-Za-z]:)?(?:\.{1,2}/|/|~/|\\)(?:\\ |[^\s])+?))"""
                   r"""(?=[\s,;:!?)]|$)""")


@dataclass
class Prompt:
    text: str
    images: list[str] = field(default_factory=list)  # base64, in the order named
    paths: list[str] = field(default_factory=list)  # as written, for the "Added image" lines


def extract_images(text: str, base: Path | None = None) -> Prompt:
    """`text` with the image files it names taken out and read (paths that are not files stay text)."""
    prompt = Prompt(text)
    kept: list[str] = []
    last = 0
    for match in _PATH.finditer(text):
        written = next(g for g in match.groups() if g is not None)
        if not written.lower().endswith(IMAGE_SUFFIXES):
            continue
        path = Path(written.replace("\\ ", " ")).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            continue
        prompt.images.append(_read(path, written))
        prompt.paths.append(written)
        kept.append(text[last:match.start()])
        last = match.end()
    if prompt.images:
        kept.append(text[last:])
        prompt.text = re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()
    return prompt


def _read(path: Path, written: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise UsageError("corral run", f"image {written!r} is {size} bytes; the largest is {MAX_IMAGE_BYTES}")
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as e:
        raise UsageError("corral run", f"cannot read image {written!r}: {e.strerror or 'unreadable'}") from None


def parse_format(value: str | None) -> str | dict[str, Any] | None:
    """`--format`: `json`, a JSON schema written inline (`{"type": ...}`), or a file holding one."""
    if value is None or value == "":
        return None
    if value.strip() == "json":
        return "json"
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError("corral run", f"--format: {value!r} is neither `json`, a JSON schema nor a "
                             "file holding one")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError("corral run", f"--format: cannot read {value!r}: {e}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("corral run", f"--format: the schema is not JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    if not isinstance(schema, dict):
        raise UsageError("corral run", "--format: a JSON schema is an object ({\"type\": ...})")
    return schema


def vector_line(vector: list[float]) -> str:
    """One embedding as Ollama's `run` prints it: a JSON array on one line."""
    return json.dumps(vector, separators=(",", ":"))
