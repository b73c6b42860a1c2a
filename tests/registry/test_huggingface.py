"""`hf.co/OWNER/REPO[:QUANT]` names against a fake Hugging Face on loopback: the registry route, the
default quant, HF_TOKEN kept to Hugging Face, the file-API fallback and what it refuses."""

from __future__ import annotations

import pytest

from corral.compiler.errors import GGUFError
from corral.config.settings import Settings
from corral.dsl import parse_modelfile
from corral.registry import Credential, Credentials, pull
from corral.registry.errors import InsecureRegistryError, ManifestNotFoundError
from corral.registry.huggingface import choose, is_hugging_face, quant_of, RemoteFile
from corral.store.create import create_model
from corral.store.errors import DigestMismatchError
from corral.store.names import parse
from corral.store.store import Store
from tests.ggufs import write_tiny_llama
from tests.registry.conftest import CPU, SMALL, files_under
from tests.registry.fake_hf import FakeHuggingFace
from tests.registry.hostile import MODEL, HostileRegistry, digest_of

TOKEN = "hf_test_token_never_elsewhere"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-weights")
    return {q: write_tiny_llama(folder / f"{q}.gguf", seed=seed).read_bytes()
            for seed, q in enumerate(("Q4_K_M", "Q8_0", "IQ3_M"))}


@pytest.fixture
def hub(weights):
    with HostileRegistry() as cdn, FakeHuggingFace(cdn, token=TOKEN) as fake:
        fake.add_repo("owner/Tiny-GGUF", {"Tiny-Q8_0.gguf": weights["Q8_0"], "Tiny-Q4_K_M.gguf": weights["Q4_K_M"],
                                          "Tiny-IQ3_M.gguf": weights["IQ3_M"], "README.md": b"# Tiny"})
        yield fake


def stored_blobs(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.iterdir()) if store.blobs_dir.exists() else []


def authorization(seen) -> str | None:
    """The Authorization a request carried, however its client spelt the header's name."""
    return {k.lower(): v for k, v in seen.headers.items()}.get("authorization")


def hf_pull(store, name, hub, **kwargs):
    return pull(store, name, hf_endpoint=hub.url, options=SMALL, **kwargs)


def test_names_on_hugging_face_parse_as_registry_names():
    name = parse("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert (name.host, name.namespace, name.model, name.tag) == ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M")
    assert parse("huggingface.co/o/r").tag == "latest" and parse("huggingface.co/o/r").host == "huggingface.co"
    assert parse("hf.co/o/r:Model-IQ3_M.gguf").tag == "Model-IQ3_M.gguf"
    assert is_hugging_face(parse("HF.co/o/r")) and is_hugging_face(parse("huggingface.co/o/r"))
    assert not is_hugging_face(parse("registry.ollama.ai/o/r")) and not is_hugging_face(parse("llama3.2"))


def test_a_quant_is_pulled_through_the_registry_route(hub, weights, tmp_path):
    store = Store(tmp_path / "models")
    events = []
    result = hf_pull(store, "hf.co/owner/Tiny-GGUF:q8_0", hub, progress=events.append)
    assert store.blob_path(digest_of(weights["Q8_0"])).read_bytes() == weights["Q8_0"]
    assert (store.root / "manifests" / "hf.co" / "owner" / "Tiny-GGUF" / "q8_0").is_file()
    assert result.name == parse("hf.co/owner/Tiny-GGUF:q8_0")
    assert [s.path for s in hub.seen("/manifests/")] == ["/v2/owner/Tiny-GGUF/manifests/q8_0"]
    assert hub.seen("/api/") == [] and hub.seen("/resolve/") == []  # no fallback needed
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]


def test_no_tag_asks_for_latest_and_gets_the_default_quant(hub, weights, tmp_path):
    store = Store(tmp_path / "models")
    result = hf_pull(store, "huggingface.co/owner/Tiny-GGUF", hub)
    assert hub.seen("/manifests/")[0].path == "/v2/owner/Tiny-GGUF/manifests/latest"  # as Ollama sends it
    assert result.manifest.layers_of(MODEL)[0].digest.hex == digest_of(weights["Q4_K_M"]).removeprefix("sha256:")
    assert (store.root / "manifests" / "huggingface.co" / "owner" / "Tiny-GGUF" / "latest").is_file()


def test_hf_token_reaches_hugging_face_and_no_other_host(hub, weights, tmp_path):
    hub.repos["owner/Tiny-GGUF"].private = True
    home = tmp_path / "home"
    credentials = Credentials.load(home, tmp_path / "no-docker.json", hf_token=Settings(hf_token=TOKEN).hf_token)
    store = Store(tmp_path / "models")
    hf_pull(store, "hf.co/owner/Tiny-GGUF:Q8_0", hub, credentials=credentials)
    assert all(authorization(s) == f"Bearer {TOKEN}" for s in hub.requests)
    # The file API's listing and resolve reads carry it too; the CDN they redirect to does not.
    hub.add_repo("owner/Private-Files", {"sub/Tiny-Q4_K_M.gguf": weights["Q4_K_M"]}, registry=False, private=True)
    hf_pull(store, "hf.co/owner/Private-Files:Q4_K_M", hub, credentials=credentials)
    assert hub.seen("/api/models/owner/Private-Files") and hub.seen("/owner/Private-Files/resolve/")
    assert all(authorization(s) == f"Bearer {TOKEN}" for s in hub.requests)
    cdn = hub.cdn.seen("/storage/")
    assert len(cdn) > 2 and all(authorization(s) is None for s in cdn)  # the redirect target got nothing
    # A private repository without the token: the route and the file API both refuse, and say why.
    with pytest.raises(ManifestNotFoundError) as caught:
        hf_pull(Store(tmp_path / "other"), "hf.co/owner/Tiny-GGUF:Q8_0", hub)
    assert "HF_TOKEN" in caught.value.hint
    # The token is filed for Hugging Face's hosts only: another registry never sees it.
    with HostileRegistry() as other:
        other.add_model("library/m:latest", [(MODEL, weights["Q8_0"])])
        pull(Store(tmp_path / "third"), f"{other.host}/library/m", insecure=True, credentials=credentials, options=SMALL)
        assert other.requests and all(authorization(s) is None for s in other.requests)
    assert credentials.for_host("hf.co") == Credential(token=TOKEN) == credentials.for_host("huggingface.co")
    assert TOKEN not in repr(Settings(hf_token=TOKEN)) and TOKEN not in repr(credentials.for_host("hf.co"))


def test_an_http_endpoint_is_used_as_written_and_the_name_keeps_its_host(hub, tmp_path):
    # HF_ENDPOINT=http://... needs no --insecure; CORRAL_REGISTRY over http does (test_credentials).
    hf_pull(Store(tmp_path / "models"), "hf.co/owner/Tiny-GGUF:IQ3_M", hub)
    assert Settings(hf_endpoint=hub.url + "/").hf_endpoint == hub.url
    with pytest.raises(ValueError):
        Settings(hf_endpoint="ftp://mirror.example")


def test_the_file_api_serves_what_the_registry_route_cannot(hub, weights, tmp_path):
    hub.add_repo("owner/Folders", {"quants/Tiny-Q4_K_M.gguf": weights["Q4_K_M"],
                                   "quants/Tiny-Q8_0.gguf": weights["Q8_0"],
                                   "quants/mmproj-Tiny-Q8_0.gguf": b"GGUF projector"})
    store = Store(tmp_path / "models")
    result = hf_pull(store, "hf.co/owner/Folders:Q8_0", hub)
    assert hub.seen("/v2/owner/Folders/manifests/Q8_0")  # the route was asked first, and refused (400)
    assert hub.seen("/api/models/owner/Folders")
    reads = hub.cdn.seen("/storage/")
    assert len(reads) > 1 and all(s.headers["Range"].startswith("bytes=") for s in reads)  # parallel ranged parts
    model_layer = result.manifest.layers_of(MODEL)[0]
    assert store.blob_path(model_layer.digest).read_bytes() == weights["Q8_0"]
    assert all("-partial" not in name for name in stored_blobs(store))
    # It is a model: a definition can build on it.
    definition = parse_modelfile("FROM hf.co/owner/Folders:Q8_0\nPARAMETER temperature 0.1\n", "Modelfile").definition
    created = create_model(store, "derived", definition, base_dir=tmp_path, options=CPU)
    assert created.spec.weights.path == str(store.blob_path(model_layer.digest))
    # A file named exactly, and a default quant, both from the listing.
    assert hf_pull(store, "hf.co/owner/Folders:Tiny-Q4_K_M.gguf", hub).manifest.layers_of(MODEL)[0].digest.hex \
        == digest_of(weights["Q4_K_M"]).removeprefix("sha256:")
    assert hf_pull(store, "hf.co/owner/Folders", hub).manifest.layers_of(MODEL)[0].digest.hex \
        == digest_of(weights["Q4_K_M"]).removeprefix("sha256:")


def test_a_wrong_sha256_from_the_file_api_stores_nothing(hub, weights, tmp_path):
    hub.add_repo("owner/Liar", {"Tiny-Q8_0.gguf": weights["Q8_0"]}, registry=False, lie_about={"Tiny-Q8_0.gguf"})
    store = Store(tmp_path / "models")
    with pytest.raises(DigestMismatchError):
        hf_pull(store, "hf.co/owner/Liar:Q8_0", hub)
    assert stored_blobs(store) == [] and not (store.root / "manifests").exists()


def test_a_file_that_is_not_a_gguf_never_becomes_a_model(hub, tmp_path):
    hub.add_repo("owner/Fake", {"Fake-Q8_0.gguf": b"PK\x03\x04 not a gguf at all" * 100}, registry=False)
    store = Store(tmp_path / "models")
    with pytest.raises(GGUFError):
        hf_pull(store, "hf.co/owner/Fake:Q8_0", hub)
    assert stored_blobs(store) == [] and not (store.root / "manifests").exists()


def test_a_missing_repo_or_quant_is_a_clear_error(hub, tmp_path):
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestNotFoundError) as caught:
        hf_pull(store, "hf.co/nobody/Nothing-GGUF", hub)
    assert str(caught.value) == "pull model manifest: file does not exist"
    assert "Hugging Face has no repository nobody/Nothing-GGUF" in caught.value.hint
    with pytest.raises(ManifestNotFoundError) as caught:
        hf_pull(store, "hf.co/owner/Tiny-GGUF:Q2_K", hub)
    assert "no GGUF file for 'Q2_K'" in caught.value.hint and "iq3_m, q4_k_m, q8_0" in caught.value.hint
    assert files_under(store.root) <= {"blobs"}


def test_without_an_endpoint_names_go_to_their_own_host_over_https():
    # No network here: plain http to hf.co is refused before anything is sent.
    with pytest.raises(InsecureRegistryError):
        pull(Store("/nonexistent/never-written"), "http://hf.co/o/r")


@pytest.mark.parametrize("tag, path", [
    ("latest", "a/M-Q4_K_M.gguf"), ("Q8_0", "M.Q8_0.gguf"), ("iq3_m", "M-IQ3_M.gguf"),
    ("M-IQ3_M.gguf", "M-IQ3_M.gguf"), ("m-iq3_m.GGUF", "M-IQ3_M.gguf"),
])
def test_a_tag_chooses_a_file_as_hugging_face_does(tag, path):
    files = [RemoteFile(p, 1, "0" * 64) for p in
             ("M-IQ3_M.gguf", "M.Q8_0.gguf", "a/M-Q4_K_M.gguf", "mmproj-M-Q8_0.gguf", "README.md")]
    assert [f.path for f in choose(files, tag, "hf.co/o/r:" + tag)] == [path]
    assert quant_of("Big-Q4_K_M-00001-of-00002.gguf") == "q4_k_m"
