"""`hf.co/OWNER/REPO[:QUANT]` names: Hugging Face's registry route, and its file API where that fails.

Hugging Face answers Ollama's registry protocol for GGUF repositories, on both its hosts:

    GET https://hf.co/v2/OWNER/REPO/manifests/QUANT     (or huggingface.co; the same service)

so such a name is pulled like any registry name (corral.registry.pull's download, verification
and credential rules), with two differences: the host is Hugging Face's, or HF_ENDPOINT
(Settings.hf_endpoint, a mirror) for both hosts when set, used with the scheme it is written with;
and the credential is the one filed under the name's host (HF_TOKEN, see Credentials.load), sent
to that endpoint only. A name without a tag asks for `latest`, as Ollama does, and Hugging Face
answers with the repository's Q4_K_M file, or another quant when it has none. A tag ending in
`.gguf` names a file of the repository exactly (`hf.co/OWNER/REPO:Model-Q8_0.gguf`). Names keep
the host they were written with in the store (`manifests/hf.co/...` and
`manifests/huggingface.co/...` are two names of one model, as in Ollama).

Where the registry route cannot serve the name (a 4xx answer: a quant split into several files, a
file in a sub-folder, a repository it does not know, or one that needs a token the route does not
take), the file API is asked instead:

    GET {api}/api/models/OWNER/REPO?blobs=true     the files at the head commit, with LFS sha256 and size
    GET {api}/OWNER/REPO/resolve/{commit}/{path}   ranged reads; redirects to Hugging Face's CDN

`huggingface_hub` reads the listing (HfApi.model_info: it parses the answer and tells a missing, a
gated and a disabled repository apart); the bytes are fetched by corral.registry.download through a
RegistryClient whose blob reads are the resolve URLs, so they come in parallel ranged parts into
the store's partial files, resume, and are verified against the sha256 the listing gave before
they enter blobs/; the token goes to the API's own origin only, never to the CDN. The file's GGUF
header is then checked (corral.compiler.gguf) before a manifest makes it a model: one model layer,
and a config made from the header. Which file: the tag `latest` takes the Q4_K_M file, else the
first GGUF by path; a quant tag takes the file whose name ends in `-QUANT` or `.QUANT` (any case);
a `.gguf` tag the file of that name (anywhere in the repository). Projector (`mmproj`) files are
never chosen for a quant.

A split GGUF (`NAME-00001-of-0000N.gguf`, ... as llama.cpp's gguf-split writes it: the registry
route refuses those) is pulled whole, whichever of its shards the tag matched: every shard is
fetched and verified against its own sha256, each is header-checked and the set is checked as
llama.cpp will load it (split.no in order, split.count, split.tensors.count), and the manifest has
one model layer per shard, in shard order, as Ollama stores the shards of an imported model. A
set that lacks a shard is refused before any download; a bad shard (wrong bytes, not a GGUF)
fails the pull and takes the shards this pull added out of blobs/ again.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote

from corral.compiler.errors import GGUFError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import read_split_info
from corral.store.manifest import Layer, Manifest, MediaType
from corral.store.errors import DigestMismatchError
from corral.store.names import Digest, ModelName
from corral.store.store import Store
from corral.registry.client import Endpoint, RegistryClient, Response, endpoint_for
from corral.registry.credentials import HUGGING_FACE_HOSTS, Credential, Credentials
from corral.registry.download import TransferOptions
from corral.registry.errors import (
    ManifestNotFoundError,
    ManifestRejectedError,
    RegistryAuthError,
    RegistryResponseError,
    RegistryUnreachableError,
)
from corral.registry.events import PULLING_MANIFEST, Progress, ProgressEvent
from corral.registry.manifests import check_manifest
from corral.registry.pull import PullResult, fetch_blobs, unique_blobs, write_pulled

API_HOST = "huggingface.co"  # the file API's home when HF_ENDPOINT is unset (huggingface_hub's default)
DEFAULT_QUANT = "Q4_K_M"  # what `latest` means, on Hugging Face's registry route and here
TOKEN_HINT = "a private or gated repository needs HF_TOKEN (and its terms accepted on Hugging Face)"
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)  # llama.cpp's names of a split GGUF's files


def is_hugging_face(name: ModelName) -> bool:
    """Whether `name` lives on Hugging Face (`hf.co/...` or `huggingface.co/...`)."""
    return name.host.lower() in HUGGING_FACE_HOSTS


def parse_endpoint(text: str) -> Endpoint:
    """An Endpoint from HF_ENDPOINT's `http[s]://HOST[:PORT]` (Settings checked its shape)."""
    scheme, sep, host = text.strip().rstrip("/").partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not host or "/" in host:
        raise RegistryResponseError("HF_ENDPOINT", 0, f"{text!r} is not http[s]://HOST[:PORT]")
    return Endpoint(scheme.lower(), host)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a repository, as the file API lists it."""

    path: str
    size: int
    sha256: str | None  # LFS files only; a file kept in git itself has none

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def pull_hugging_face(store: Store, model: ModelName, *, insecure: bool, credentials: Credentials | None,
                      emit: Progress, cancel: threading.Event, options: TransferOptions,
                      endpoint: str | None = None) -> PullResult:
    """Pull a Hugging Face name: the registry route, else the file API (see the module's docstring)."""
    given = parse_endpoint(endpoint) if endpoint else None
    credential = credentials.for_host(model.host) if credentials is not None else None
    route = given or endpoint_for(model, insecure=insecure)  # the name's own host (and scheme)
    emit(ProgressEvent(PULLING_MANIFEST))
    with RegistryClient(route, model, credential=credential, insecure=insecure or route.scheme == "http",
                        timeout=options.timeout) as client:
        try:
            data = client.get_manifest(options.limits)
        except (RegistryResponseError, RegistryAuthError) as e:
            if isinstance(e, RegistryResponseError) and not 400 <= e.status < 500:
                raise
        else:
            manifest = check_manifest(data, str(model), options.limits)
            downloaded = fetch_blobs(store, client, unique_blobs(manifest), options, emit, cancel)
            return write_pulled(store, model, manifest, downloaded, emit)
    api = given or Endpoint("https", API_HOST)
    return pull_file(store, model, api, credential, insecure=insecure or api.scheme == "http",
                     emit=emit, cancel=cancel, options=options)


def pull_file(store: Store, model: ModelName, api: Endpoint, credential: Credential | None, *, insecure: bool,
              emit: Progress, cancel: threading.Event, options: TransferOptions) -> PullResult:
    """Pull the file the name's tag chooses (or every shard of a split GGUF) through Hugging Face's
    file API, each sha256-verified and checked as a GGUF; the model is one model layer per file."""
    repo = f"{model.namespace}/{model.model}"
    files, commit = list_files(api, repo, str(model), credential.token if credential else None, options.timeout)
    chosen = choose(files, model.tag, str(model))
    for file in chosen:
        if file.sha256 is None:
            raise ManifestRejectedError(str(model), f"{file.path} is not an LFS file, so Hugging Face publishes no "
                                        "sha256 to check it against", hint="only GGUF files stored with LFS can be pulled")
    layers = tuple(Layer(media_type=MediaType.MODEL, digest=Digest.parse(f"sha256:{f.sha256}"), size=f.size)
                   for f in chosen)
    # The same bounds a registry's manifest gets (sizes, digests, count), before anything is fetched.
    check_manifest(Manifest(config=layers[0].model_copy(update={"media_type": MediaType.CONFIG}),
                            layers=layers).to_bytes(), str(model), options.limits)
    fetch = list({str(layer.digest): layer for layer in layers}.values())
    had = {str(layer.digest) for layer in fetch if store.has_blob(layer.digest)}
    try:
        with FileClient(api, model, {str(layer.digest): f.path for layer, f in zip(layers, chosen)}, commit,
                        credential=credential, insecure=insecure, timeout=options.timeout) as client:
            downloaded = fetch_blobs(store, client, fetch, options, emit, cancel)
        blobs = [store.blob_path(layer.digest) for layer in layers]
        header = check_gguf(blobs[0])
        if len(blobs) > 1:  # every shard checked, and the set as llama.cpp will load it
            read_split_info(blobs)
    except (GGUFError, DigestMismatchError):
        for layer in fetch:  # verified bytes that are not a model, or a set with a bad shard: none stay
            if str(layer.digest) not in had:
                store.blob_path(layer.digest).unlink(missing_ok=True)
        raise
    arch = header.metadata.get("general.architecture")
    config = {"model_format": "gguf", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": []}}
    if isinstance(arch, str):
        config.update(model_family=arch, model_families=[arch])
    data = json.dumps(config, separators=(",", ":")).encode()
    config_digest = store.put_blob_bytes(data)
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG, digest=config_digest, size=len(data)),
                        layers=layers)
    return write_pulled(store, model, manifest, downloaded, emit)


def list_files(api: Endpoint, repo: str, name: str, token: str | None, timeout: float) -> tuple[list[RemoteFile], str]:
    """The repository's files at its head commit, and that commit, through huggingface_hub."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    hub = HfApi(endpoint=api.url(""), token=token or False, library_name="corral")
    try:
        info = hub.model_info(repo, files_metadata=True, timeout=timeout)
    except GatedRepoError as e:
        raise RegistryAuthError(api.host, f"{repo} is gated: {_first_line(e)}", hint=TOKEN_HINT) from e
    except RepositoryNotFoundError as e:
        raise ManifestNotFoundError(name, hint=f"Hugging Face has no repository {repo}; {TOKEN_HINT}") from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            raise RegistryAuthError(api.host, f"{repo}: {status}", hint=TOKEN_HINT) from e
        raise RegistryResponseError(f"list the files of {repo}", status, _first_line(e)) from e
    except (httpx2.TransportError, OSError) as e:
        raise RegistryUnreachableError(api.host, str(e) or type(e).__name__) from e
    files = [RemoteFile(s.rfilename, s.lfs.size if s.lfs else (s.size or 0), s.lfs.sha256 if s.lfs else None)
             for s in info.siblings or []]
    if not isinstance(info.sha, str) or not re.fullmatch(r"[0-9a-f]{40}", info.sha):
        raise RegistryResponseError(f"list the files of {repo}", 200, f"the commit {info.sha!r} is not a git sha")
    return files, info.sha


def choose(files: list[RemoteFile], tag: str, name: str) -> list[RemoteFile]:
    """The file a tag names, or a split GGUF's shards in order (see the module's docstring);
    ManifestNotFoundError when there is none, ManifestRejectedError for an incomplete split."""
    ggufs = sorted((f for f in files if f.path.lower().endswith(".gguf")), key=lambda f: (f.path.count("/"), f.path))
    models = [f for f in ggufs if "mmproj" not in f.name.lower()]
    wanted = tag.lower()
    if wanted.endswith(".gguf"):
        hits = [f for f in ggufs if f.name == tag] or [f for f in ggufs if f.name.lower() == wanted]
    elif wanted == "latest":
        hits = [f for f in models if quant_of(f.name) == DEFAULT_QUANT.lower()] or models[:1]
    else:
        hits = [f for f in models if quant_of(f.name) == wanted]
    if not hits:
        quants = sorted({quant_of(f.name) for f in models})
        where = f"Hugging Face's {name.split(':', 1)[0]}"
        raise ManifestNotFoundError(name, hint=f"{where} has no GGUF file for '{tag}'"
                                    + (f"; its files are for: {', '.join(quants)}" if quants else "; it has no GGUF files"))
    chosen = hits[0]
    shard = _SHARD.search(chosen.name)
    if shard is None or int(shard.group(2)) == 1:
        return [chosen]
    # One shard of a split GGUF: the model is the whole set, beside it, in shard order.
    count, stem = int(shard.group(2)), chosen.path[:-len(shard.group(0))]
    by_path = {f.path.lower(): f for f in ggufs}
    shards = [by_path.get(f"{stem}-{k:05d}-of-{shard.group(2)}.gguf".lower()) for k in range(1, count + 1)]
    if None in shards:
        missing = f"{PurePosixPath(stem).name}-{shards.index(None) + 1:05d}-of-{shard.group(2)}.gguf"
        raise ManifestRejectedError(name, f"{chosen.path} is one of {count} shards of a split GGUF, but the "
                                    f"repository lacks {missing}", hint="a split GGUF is pulled whole; "
                                    "the repository's set is incomplete")
    return shards  # type: ignore[return-value]


def quant_of(file_name: str) -> str:
    """The quant a GGUF's name ends with, in lower case: `Llama-3.2-1B-Q4_K_M.gguf` -> `q4_k_m`."""
    stem = _SHARD.sub("", file_name)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    cut = max(stem.rfind("-"), stem.rfind("."))
    return stem[cut + 1:].lower()


class FileClient(RegistryClient):
    """A RegistryClient whose blob reads are the file API's resolve URLs of one commit."""

    def __init__(self, api: Endpoint, name: ModelName, paths: dict[str, str], commit: str, **kwargs):
        super().__init__(api, name, **kwargs)
        self.paths = paths  # digest -> path in the repository
        self.commit = commit

    def open_blob(self, digest: Digest, start: int, end: int) -> Response:
        path = quote(self.paths[str(digest)])
        return self.send("GET", f"/{self.repository}/resolve/{self.commit}/{path}",
                         headers={"Range": f"bytes={start}-{end}"}, raw=True)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
