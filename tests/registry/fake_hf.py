"""A fake Hugging Face on 127.0.0.1: Ollama's registry route for GGUF repositories, and the file API.

    GET /v2/OWNER/REPO/manifests/TAG           `latest` -> the Q4_K_M file; a quant (any case); a file name
    GET /v2/OWNER/REPO/blobs/DIGEST            302 to the CDN
    GET /api/models/OWNER/REPO[/revision/REV]  huggingface_hub's model_info (`blobs=true`: sizes, LFS sha256)
    GET /OWNER/REPO/resolve/REV/PATH           302 to the CDN

The CDN is another server (another origin: a HostileRegistry serving `/storage/<digest>` with
ranges), so tests see which headers reached which host. As the real service does, the registry
route refuses a quant split into shards and files in sub-folders (400), and a missing repository
is a 401 with `X-Error-Code: RepoNotFound` when no token came, a 404 otherwise. A repository may
be private (every route wants the token), kept off the registry route, or listed with a wrong
sha256.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

from tests.loopback import LoopbackService, ServiceHandler
from tests.registry.hostile import MANIFEST, HostileRegistry, Seen, digest_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = "application/vnd.docker.container.image.v1+json"
MODEL = "application/vnd.ollama.image.model"
PARAMS = "application/vnd.ollama.image.params"
_SHARD = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")


@dataclass
class Repo:
    files: dict[str, bytes]  # path -> bytes
    registry: bool = True  # whether the registry route serves it
    private: bool = False  # every route wants the token
    lie_about: set[str] = field(default_factory=set)  # paths listed with a wrong sha256


def quant(path: str) -> str:
    stem = _SHARD.sub("", path.rsplit("/", 1)[-1]).removesuffix(".gguf")
    return stem[max(stem.rfind("-"), stem.rfind(".")) + 1:].lower()


class FakeHuggingFace(LoopbackService):
    def __init__(self, cdn: HostileRegistry, token: str | None = None) -> None:
        self.cdn = cdn
        self.token = token  # what a private repository accepts
        self.repos: dict[str, Repo] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        super().__init__(_Handler)

    def add_repo(self, repo: str, files: dict[str, bytes], **kwargs) -> Repo:
        self.repos[repo] = Repo(files, **kwargs)
        for data in files.values():
            self.cdn.blobs[digest_of(data)] = data
        return self.repos[repo]

    def seen(self, path_part: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.requests if path_part in s.path]

    def registry_file(self, repo: Repo, tag: str) -> str | None:
        """The file the registry route serves for `tag`, as Hugging Face picks it."""
        names = sorted(p for p in repo.files if p.endswith(".gguf"))
        if tag.endswith(".gguf"):
            return tag if tag in repo.files else None
        wanted = "q4_k_m" if tag == "latest" else tag.lower()
        hits = [p for p in names if quant(p) == wanted]
        if not hits and tag == "latest":
            hits = names[:1]
        return hits[0] if hits else None


class _Handler(ServiceHandler):
    owner: FakeHuggingFace
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        hub = self.owner
        with hub.lock:
            hub.requests.append(Seen(self.command, self.path, dict(self.headers.items())))
        path = unquote(self.path.split("?", 1)[0])
        authorized = hub.token is not None and self.headers.get("Authorization") == f"Bearer {hub.token}"
        if match := re.fullmatch(r"/v2/([^/]+/[^/]+)/(manifests|blobs)/(.+)", path):
            repo_name, kind, ref = match.groups()
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            repo_name, kind, ref = match.group(1), "info", ""
        elif match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo_name, kind, ref = match.group(1), "resolve", match.group(3)
        else:
            return self._json(404, {"error": "not found"})
        repo = hub.repos.get(repo_name)
        if repo is None or (repo.private and not authorized):
            if authorized:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return self._json(401, {"error": "Invalid username or password."}, {"X-Error-Code": "RepoNotFound"})
        if kind == "manifests":
            return self._manifest(repo, ref)
        if kind == "blobs":
            return self._send(302, b"", {"Location": f"{hub.cdn.url}/storage/{ref}"})
        if kind == "info":
            return self._info(repo_name, repo)
        data = repo.files.get(ref)
        if data is None:
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        return self._send(302, b"", {"Location": f"{hub.cdn.url}/storage/{digest_of(data)}"})

    def _manifest(self, repo: Repo, tag: str) -> None:
        if not repo.registry:
            return self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        path = self.owner.registry_file(repo, tag)
        if path is None:
            return self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        if "/" in path or _SHARD.search(path) and not path.endswith("-of-00001.gguf"):
            return self._json(400, {"error": "sharded GGUF is not supported"})
        weights, params, config = repo.files[path], b'{"temperature":0.6}', b'{"model_format":"gguf"}'
        for blob in (params, config):
            self.owner.cdn.blobs[digest_of(blob)] = blob
        doc = {"schemaVersion": 2, "mediaType": MANIFEST,
               "config": {"mediaType": CONFIG, "digest": digest_of(config), "size": len(config)},
               "layers": [{"mediaType": m, "digest": digest_of(d), "size": len(d)}
                          for m, d in ((MODEL, weights), (PARAMS, params))]}
        self._send(200, json.dumps(doc).encode(), {"Content-Type": MANIFEST})

    def _info(self, repo_name: str, repo: Repo) -> None:
        siblings = []
        for path, data in repo.files.items():
            sha = hashlib.sha256(data).hexdigest()
            if path in repo.lie_about:
                sha = hashlib.sha256(b"other bytes").hexdigest()
            siblings.append({"rfilename": path, "size": len(data), "blobId": "0" * 40,
                             "lfs": {"size": len(data), "sha256": sha, "pointerSize": 134}})
        self._json(200, {"_id": "x", "id": repo_name, "modelId": repo_name, "sha": COMMIT, "private": repo.private,
                         "siblings": siblings})
