"""Every `CORRAL_*` environment variable, read once into one `Settings`.

Each field is one variable (`CORRAL_` + its name in capitals) and mirrors one of Ollama's
`OLLAMA_*` variables (same meaning, same default) unless its description says otherwise; the
Hugging Face fields read Hugging Face's own variables (`HF_TOKEN`, `HF_ENDPOINT`). Nothing
else in Corral reads a `CORRAL_*` variable: the command or the server reads `Settings()` once and
passes the values down (`create_app(settings)`, `Store(settings.models)`, `Engine(...,
cpu_repack=settings.cpu_repack)`), so tests build settings directly: `Settings(models=tmp_path,
keep_alive="0")`. The README's settings table lists every field (tests/test_docs.py checks).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from corral.config.durations import DurationError, parse_env_duration

DEFAULT_PORT = 11434

# Origins a browser page may call from without configuration (Ollama's list).
DEFAULT_ORIGINS: tuple[str, ...] = (
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)

_HOST = re.compile(r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<rest>[^/]*)(?P<path>/.*)?$")


def _default_models() -> Path:
    return Path.home() / ".corral" / "models"


def parse_host(text: str) -> tuple[str, int]:
    """`(host, port)` from `[scheme://]host[:port][/path]`, by OLLAMA_HOST's rules.

    No host means 127.0.0.1; no port means 11434, or 80 / 443 after an explicit http:// / https://;
    IPv6 addresses are written in brackets (`[::1]:8080`). Unlike Ollama, a port that is not a
    number from 0 to 65535 is an error rather than a silent fall-back to the default.
    """
    text = text.strip().strip("\"'")
    match = _HOST.match(text)
    if match is None:
        raise ValueError(f"cannot read {text!r} as [scheme://]host[:port]")
    scheme = (match.group("scheme") or "").lower()
    rest = match.group("rest")
    port_text = ""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in host {text!r}")
        host, after = rest[1:end], rest[end + 1:]
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after the address in {text!r}")
        port_text = after[1:]
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host = rest  # a bare name, or an IPv6 address without brackets (no port then)
    host = host or "127.0.0.1"
    if port_text == "":
        port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(f"the port {port_text!r} in {text!r} is not a number from 0 to 65535")
    return host, port


class Settings(BaseSettings):
    """Every `CORRAL_*` variable: what `corral serve` and the other commands can be told, with Ollama's defaults."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore", validate_default=True,
                                      populate_by_name=True)

    host: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}",
        # OLLAMA_HOST when CORRAL_HOST is unset, so scripts written for Ollama find this server unchanged
        validation_alias=AliasChoices("CORRAL_HOST", "OLLAMA_HOST"),
        description="Address to listen on (CORRAL_HOST, else OLLAMA_HOST): `HOST`, `HOST:PORT`, `:PORT` or "
        "`http://HOST:PORT`. Stored normalized as `HOST:PORT`.",
    )
    models: Path = Field(
        default_factory=_default_models,
        description="The model store folder (CORRAL_MODELS), laid out like Ollama's `~/.ollama/models`; "
        "default (also when empty) `~/.corral/models`; a leading `~` is the home folder.",
    )
    keep_alive: str = Field(
        default="5m",
        description="How long a model stays loaded after its last request (CORRAL_KEEP_ALIVE): a Go duration "
        "such as `5m` or `1h30m`, or whole seconds; negative keeps models loaded, `0` unloads after each "
        "request. A request's `keep_alive` overrides it.",
    )
    max_loaded_models: int = Field(
        default=3, ge=1,
        description="How many models may be loaded at once (CORRAL_MAX_LOADED_MODELS); the least recently "
        "used idle model is unloaded to make room.",
    )
    num_parallel: int = Field(
        default=0, ge=0, le=256,
        description="Requests one loaded model runs at the same time, and full-length requests its KV "
        "pool holds (CORRAL_NUM_PARALLEL). 0 (the default): a pool of as many full-length requests as "
        "the memory plan allows, up to 4, shared by up to 64 shorter ones.",
    )
    max_queue: int = Field(
        default=512, ge=0,
        description="Requests that may wait for a busy model (CORRAL_MAX_QUEUE); beyond it the server "
        "answers 503 with Retry-After.",
    )
    worker_stall_timeout: float = Field(
        default=120.0, gt=0,
        description="Seconds a model's worker may send nothing, not a token nor a heartbeat, before it "
        "is killed as hung and its requests fail with 500 (CORRAL_WORKER_STALL_TIMEOUT); a slow prompt "
        "evaluation still sends heartbeats.",
    )
    library: Path | None = Field(
        default=None,
        description="A folder of model definition files served beside the store (CORRAL_LIBRARY); "
        "unset serves the store only.",
    )
    origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra browser origins allowed by CORS (CORRAL_ORIGINS, comma-separated, `*` "
        "wildcards); localhost, 127.0.0.1, 0.0.0.0 and app://, file://, tauri://, vscode-webview:// "
        "and vscode-file:// origins are always allowed.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra names the `Host` header may carry (CORRAL_ALLOWED_HOSTS, comma-separated, "
        "`*.example.com` wildcards, no port), against DNS rebinding: on a loopback address only "
        "localhost, `*.localhost`, 127.x.x.x and [::1] pass by default, any other name gets 403; on "
        "another address nothing is checked unless names are set here.",
    )
    max_request_size: int = Field(
        default=100_000_000, ge=1024,
        description="The largest request body in bytes (CORRAL_MAX_REQUEST_SIZE), images included; "
        "larger is refused with 413. Blob uploads have their own limit.",
    )
    max_blob_size: int = Field(
        default=2**40, ge=1,
        description="The largest blob `POST /api/blobs` stores, in bytes (CORRAL_MAX_BLOB_SIZE; default "
        "1 TiB); a larger upload is refused with 413 and nothing of it is kept.",
    )
    read_timeout: float = Field(
        default=60, gt=0,
        description="Seconds a client has to send a request's headers and body (CORRAL_READ_TIMEOUT); a "
        "blob upload may instead pause no longer than this between two chunks.",
    )
    omp_wait_policy: str | None = Field(
        default=None,
        description="OMP_WAIT_POLICY for the model workers only (CORRAL_OMP_WAIT_POLICY): unset keeps "
        "libgomp's default (threads spin at OpenMP barriers, fastest for one model); `PASSIVE` makes them "
        "sleep, better when several busy models share few cores.",
    )
    prefix_cache: Literal["on", "off"] = Field(
        default="on",
        description="Prefix sharing in the model workers (CORRAL_PREFIX_CACHE): `on` reuses the KV cells of "
        "the longest prompt prefix any sequence holds (a shared system prompt, a chat's history); `off` "
        "evaluates every prompt in full (for comparisons).",
    )
    cpu_repack: Literal["on", "off"] | None = Field(
        default=None,
        description="llama.cpp's repacked (AMX) CPU weights (CORRAL_CPU_REPACK): `off` skips them, `on` "
        "uses them; unset (or any other value) means as learnt on this machine: where they crash, the "
        "first load finds out and the answer is kept in the user's cache folder.",
    )
    nohistory: bool = Field(
        default=False,
        description="Any non-empty value (CORRAL_NOHISTORY) keeps `corral run`'s interactive session from "
        "reading and writing its history file, `~/.corral/history` (like OLLAMA_NOHISTORY).",
    )
    registry: str | None = Field(
        default=None,
        description="The registry that serves names on Ollama's default host, `registry.ollama.ai` "
        "(CORRAL_REGISTRY): `[https://]HOST[:PORT]`, a mirror; names that give their own host are "
        "pulled from that host. Unset: Ollama's public registry. Plain `http://` needs `--insecure`.",
    )
    hf_token: str | None = Field(
        default=None, validation_alias="HF_TOKEN", repr=False,
        description="A Hugging Face access token (HF_TOKEN, the variable Hugging Face's own tools read; no "
        "CORRAL_ prefix): sent as a Bearer credential to Hugging Face only (hf.co, huggingface.co, or "
        "HF_ENDPOINT when set), never to a redirect target such as its download CDN.",
    )
    hf_endpoint: str | None = Field(
        default=None, validation_alias="HF_ENDPOINT",
        description="Where `hf.co/...` and `huggingface.co/...` names are fetched from (HF_ENDPOINT, as "
        "huggingface_hub reads it): `http[s]://HOST[:PORT]`, a mirror. Unset: each name's own host for "
        "Ollama's registry route and https://huggingface.co for the file API. Its scheme is used as "
        "written: an `http://` endpoint needs no `--insecure`.",
    )

    api_key: str | None = Field(
        default=None, repr=False,
        description="The API key the `corral` command sends to a server (CORRAL_API_KEY), as "
        "`Authorization: Bearer KEY`; unset sends none.",
    )
    api_keys: str | None = Field(
        default=None, repr=False,
        description="API keys the server accepts beside the key file's (CORRAL_API_KEYS), for simple setups: "
        "comma-separated `NAME:KEY:SCOPE`, `NAME:KEY` or `KEY` (scope `inference` or `admin`; without one, "
        "admin). Any key at all makes every protected route need one.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Serve a non-loopback address with no API key (CORRAL_INSECURE_NO_AUTH, or `corral serve "
        "--insecure-no-auth`): anyone who reaches it may use every route. Without it such a server refuses "
        "to start.",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="A PEM certificate (chain) to serve HTTPS with (CORRAL_TLS_CERT, or `--tls-cert`); needs "
        "CORRAL_TLS_KEY.",
    )
    tls_key: Path | None = Field(
        default=None,
        description="The PEM private key of CORRAL_TLS_CERT (CORRAL_TLS_KEY, or `--tls-key`).",
    )
    ca_cert: Path | None = Field(
        default=None,
        description="A PEM certificate (or bundle) the `corral` command trusts for an `https://` CORRAL_HOST "
        "(CORRAL_CA_CERT): a server with a self-signed or private-CA certificate.",
    )

    @field_validator("host", mode="before")
    @classmethod
    def _normalize_host(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        host, port = parse_host(value)
        # https:// stays: a client of this address (the CLI) speaks TLS to it
        scheme = "https://" if value.strip().strip("\"'").lower().startswith("https://") else ""
        return scheme + (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    @field_validator("models", mode="before")
    @classmethod
    def _default_when_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return _default_models()
        return Path(value).expanduser() if isinstance(value, (str, Path)) else value

    @field_validator("omp_wait_policy", "hf_token", "api_key", "api_keys", "tls_cert", "tls_key", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("hf_endpoint", mode="before")
    @classmethod
    def _check_endpoint(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().rstrip("/")
        if not text:
            return None
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"{value!r} is not http[s]://HOST[:PORT]")
        return f"{scheme.lower()}://{rest}"

    @field_validator("cpu_repack", mode="before")
    @classmethod
    def _on_off_or_learnt(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value if value in ("on", "off") else None
        return value

    @field_validator("nohistory", mode="before")
    @classmethod
    def _any_text_is_true(cls, value: object) -> object:
        return bool(value.strip()) if isinstance(value, str) else value

    @field_validator("insecure_no_auth", mode="before")
    @classmethod
    def _only_yes_is_true(cls, value: object) -> object:
        # an opt-out of safety: `0`, `false` or empty must never switch it on
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, value: str) -> str:
        try:
            parse_env_duration(value)
        except DurationError as e:
            raise ValueError(str(e)) from None
        return value.strip().strip("\"'")

    @field_validator("origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @property
    def bind(self) -> tuple[str, int]:
        """`(host, port)` to listen on."""
        return parse_host(self.host)

    @property
    def keep_alive_seconds(self) -> float:
        """`keep_alive` in seconds (negative: forever)."""
        return parse_env_duration(self.keep_alive)

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """The origin patterns CORS accepts: the user's, then Ollama's defaults."""
        return tuple(self.origins) + DEFAULT_ORIGINS


def variable(field: str) -> str:
    """The environment variable of a Settings field: `num_parallel` -> `CORRAL_NUM_PARALLEL`.

    A field read from another tool's variable (`hf_token`: HF_TOKEN) has it as its alias; an
    alias given here (as a validation error's location is) is returned as it is.
    """
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):  # the first choice is the field's own variable
        return str(alias.choices[0])
    if any(f.validation_alias == field for f in Settings.model_fields.values()):
        return field
    for f in Settings.model_fields.values():  # CORRAL_HOST, read from OLLAMA_HOST when it is unset
        if isinstance(f.validation_alias, AliasChoices) and field in f.validation_alias.choices:
            return " or ".join(str(c) for c in f.validation_alias.choices)
    return f"CORRAL_{field.upper()}"


def variables() -> list[str]:
    """Every variable Settings reads, in field order (`corral serve --help` lists them)."""
    return [variable(name) for name in Settings.model_fields]


def problems(error: ValidationError) -> list[str]:
    """`CORRAL_NAME: what is wrong`, one per bad value of a Settings validation error."""
    return [f"{variable('.'.join(str(p) for p in problem['loc']))}: {problem['msg']}" for problem in error.errors()]
