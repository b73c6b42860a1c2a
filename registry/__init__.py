"""corral.registry: models to and from registries that speak the OCI distribution API, as Ollama does.

`client` speaks the protocol to one repository (redirects, bearer tokens, the rule that
credentials go only to their own host), `auth` reads challenges and fetches tokens, `credentials`
reads per-host credentials (Corral's file, Docker's config.json), `manifests` bounds and judges a
registry's manifest before anything it names becomes a path, `download` fetches one blob in
parallel, resumable parts (`partial` is the partial file, its sidecar and its hash; `rawhttp`
reads blob bodies with the standard library, far cheaper a byte than httpx; `options` are
TransferOptions) and verifies it into the store, `pull` and `push` move a whole model,
`huggingface` pulls `hf.co/...` names (Hugging Face's registry route, its file API as the fallback),
`events` are the progress events Ollama's /api/pull and /api/push stream, and `errors` is the
RegistryError tree. The CLI and the server call `pull` and `push`.

May import: corral.errors, corral.config, corral.machine, corral.grammars, corral.dsl,
corral.compiler, corral.store.
"""

from corral.registry.credentials import Credential, Credentials
from corral.registry.download import TransferOptions
from corral.registry.events import ProgressEvent
from corral.registry.manifests import Limits
from corral.registry.pull import PullResult, pull
from corral.registry.push import PushResult, push

__all__ = ["Credential", "Credentials", "Limits", "ProgressEvent", "PullResult", "PushResult",
           "TransferOptions", "pull", "push"]
