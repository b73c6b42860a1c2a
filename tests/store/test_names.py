"""Model names and digests, checked against Ollama's own tables (types/model/name_test.go)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from corral.store.errors import InvalidDigestError, InvalidNameError
from corral.store.names import (DEFAULT_NAME, MISSING_PART, Digest, ModelName, is_blob_file_name, is_valid_name, parse, parse_bare, parse_digest, part_problem)

PART80 = "8" * 80
PART350 = "3" * 350
HEX = "1" * 64


# -- parsing into parts (TestParseNameParts): bare parts, then the manifest path after defaults ---

PARTS = [
    # text, bare (host, namespace, model, tag), manifest path parts after ParseName
    (
        "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
        ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
        ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
    ),
    ("scheme://host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag"), ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model:tag", ("host", "namespace", "model", "tag"), ("host", "namespace", "model", "tag")),
    ("host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag"), ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model", ("host", "namespace", "model", ""), ("host", "namespace", "model", "latest")),
    ("host:port/namespace/model", ("host:port", "namespace", "model", ""), ("host:port", "namespace", "model", "latest")),
    ("namespace/model", ("", "namespace", "model", ""), ("registry.ollama.ai", "namespace", "model", "latest")),
    ("model", ("", "", "model", ""), ("registry.ollama.ai", "library", "model", "latest")),
    ("h/nn/mm:t", ("h", "nn", "mm", "t"), ("h", "nn", "mm", "t")),
    (f"{PART80}/{PART80}/{PART80}:{PART80}", (PART80,) * 4, (PART80,) * 4),
    (f"{PART350}/{PART80}/{PART80}:{PART80}", (PART350, PART80, PART80, PART80), (PART350, PART80, PART80, PART80)),
]


@pytest.mark.parametrize("text, bare, path", PARTS, ids=[p[0][:40] for p in PARTS])
def test_parse_splits_parts_like_ollama(text, bare, path):
    name = parse_bare(text)
    assert (name.host, name.namespace, name.model, name.tag) == bare
    assert parse(text).filepath_parts() == path


@pytest.mark.parametrize(
    "text, scheme",
    [
        ("scheme://host:port/namespace/model:tag", "scheme"),
        ("http://localhost:5000/me/m:t", "http"),
        ("host/namespace/model:tag", "https"),  # the default fills it in
        ("model", "https"),
    ],
)
def test_scheme_is_split_off_the_host(text, scheme):
    assert parse(text).scheme == scheme


# -- validity of bare names (Ollama's testCases map: name -> valid) -------------------------------

VALIDITY = {
    "": False,
    "_why/_the/_lucky:_stiff": True,
    # minimal
    "h/n/m:t": True,
    "host/namespace/model:tag": True,
    "host/namespace/model": False,
    "namespace/model": False,
    "model": False,
    # long (but valid)
    f"{PART80}/{PART80}/{PART80}:{PART80}": True,
    f"{PART350}/{PART80}/{PART80}:{PART80}": True,
    "h/nn/mm:t": True,  # bare minimum part sizes
    # unqualified
    "m": False,
    "n/m:": False,
    "h/n/m": False,
    "@t": False,
    "m@d": False,
    # invalids
    "^": False,
    "mm:": False,
    "/nn/mm": False,
    "//": False,
    "//mm": False,
    "hh//": False,
    "//mm:@": False,
    "00@": False,
    "@": False,
    # not starting with alphanum
    "-hh/nn/mm:tt": False,
    "hh/-nn/mm:tt": False,
    "hh/nn/-mm:tt": False,
    "hh/nn/mm:-tt": False,
    # hosts
    "host:https/namespace/model:tag": True,
    # colon in non-host part before tag
    "host/name:space/model:tag": False,
    # one past each length limit (Corral's additions)
    f"{'3' * 351}/{PART80}/{PART80}:{PART80}": False,
    f"h/{'8' * 81}/m:t": False,
    f"h/n/{'8' * 81}:t": False,
    f"h/n/m:{'8' * 81}": False,
}


@pytest.mark.parametrize("text, valid", VALIDITY.items(), ids=[t[:40] or "<empty>" for t in VALIDITY])
def test_bare_name_validity(text, valid):
    name = parse_bare(text)
    assert name.is_valid() is valid
    if valid:
        assert str(name) == text  # valid names round-trip through str()


@pytest.mark.parametrize(
    "kind, value, valid",
    [
        ("host", "", False),
        ("host", "a", True),
        ("host", "a.", True),
        ("host", "a.b", True),
        ("host", "a:123", True),
        ("host", "a:123/aa/bb", False),
        ("namespace", "bb", True),
        ("namespace", "a.", False),
        ("namespace", "a:b", False),
        ("namespace", "himynameisreallyreallyreallyreallylongbutitshouldstillbevalid", True),
        ("model", "-h", False),
        ("model", "llama3.2", True),
        ("tag", "7b-q4_K_M", True),
        ("model", "modèle", False),  # ASCII only, as Ollama checks bytes
        ("model", MISSING_PART, False),
    ],
)
def test_part_rules(kind, value, valid):
    assert (part_problem(kind, value) is None) is valid


# -- parse(): defaults, then validity, with a reason -----------------------------------------------


@pytest.mark.parametrize(
    "text, full",
    [
        ("xx", "registry.ollama.ai/library/xx:latest"),
        ("llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b"),
        ("me/m", "registry.ollama.ai/me/m:latest"),
        ("example.com/ns/m", "example.com/ns/m:latest"),
        ("localhost:5000/ns/m:v1", "localhost:5000/ns/m:v1"),
        ("Llama3:Latest", "registry.ollama.ai/library/Llama3:Latest"),  # case is kept
    ],
)
def test_parse_fills_defaults(text, full):
    assert str(parse(text)) == full


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "invalid model name '': the name is empty"),
        ("mm:", "invalid model name 'mm:': the tag is empty"),
        ("n/m:", "invalid model name 'n/m:': the tag is empty"),
        ("/nn/mm", "invalid model name '/nn/mm': the host is empty"),
        ("m@d", "invalid model name 'm@d': the model 'm@d' may not contain '@'"),
        ("-m", "invalid model name '-m': the model '-m' must start with a letter, a digit or '_', not '-'"),
        ("a.b/m", "invalid model name 'a.b/m': the namespace 'a.b' may not contain '.'"),
        ("h/name:space/m:t", "invalid model name 'h/name:space/m:t': the namespace 'name:space' may not contain ':' (only a host may, for its port)"),
        ("m:" + "t" * 81, f"invalid model name 'm:{'t' * 81}': the tag is 81 characters long; the limit is 80"),
        # names that would reach outside the store folder
        ("..", "invalid model name '..': the model '..' must start with a letter, a digit or '_', not '.'"),
        ("../x", "invalid model name '../x': the namespace '..' must start with a letter, a digit or '_', not '.'"),
        ("a/../../b", "invalid model name 'a/../../b': the host 'a/..' may not contain '/'"),
        ("/etc/passwd", "invalid model name '/etc/passwd': the host is empty"),
        ("x\\y", "invalid model name 'x\\y': the model 'x\\y' may not contain '\\'"),
        ("x\x00y", "invalid model name 'x\\x00y': the model 'x\\x00y' may not contain '\\x00'"),
        ("m:t\n", "invalid model name 'm:t\\n': the tag 't\\n' may not contain '\\n'"),
        ("http://model", "invalid model name 'http://model': the namespace is empty"),
        ("a/b://h/n/m:t", "invalid model name 'a/b://h/n/m:t': the scheme 'a/b' is not a URL scheme such as 'https'"),
    ],
)
def test_invalid_names_say_why(text, message):
    with pytest.raises(InvalidNameError) as info:
        parse(text)
    assert str(info.value) == message
    assert info.value.name == text
    assert "[host/][namespace/]model[:tag]" in info.value.hint
    assert not is_valid_name(text)


def test_a_directly_built_name_is_checked_before_it_becomes_a_path():
    with pytest.raises(InvalidNameError):
        ModelName(host="..", namespace="library", model="m", tag="latest").filepath_parts()
    with pytest.raises(InvalidNameError):
        ModelName(host="h", namespace="n", model="m", tag="t", scheme="a/b").filepath_parts()


# -- display and comparison ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, short",
    [
        ("registry.ollama.ai/library/model:latest", "model:latest"),
        ("registry.ollama.ai/library/model:tag", "model:tag"),
        ("registry.ollama.ai/namespace/model:tag", "namespace/model:tag"),
        ("host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag"),
        ("REGISTRY.ollama.AI/Library/Model:Tag", "Model:Tag"),  # defaults compare case-insensitively
        ("llama3", "llama3:latest"),  # the tag is always shown
    ],
)
def test_display_shortest(text, short):
    assert parse(text).display_shortest() == short


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("llama3", "LLAMA3:latest", True),
        ("llama3", "registry.ollama.ai/library/llama3:LATEST", True),
        ("Me/Model:Tag", "me/model:tag", True),
        ("http://h/n/m:t", "https://h/n/m:t", True),  # the scheme is how to fetch, not what
        ("llama3", "llama3:8b", False),
        ("me/m", "you/m", False),
    ],
)
def test_names_compare_case_insensitively(a, b, equal):
    assert (parse(a) == parse(b)) is equal
    assert (len({parse(a), parse(b)}) == 1) is equal  # hashing agrees with equality


def test_default_name_has_no_model():
    assert (DEFAULT_NAME.host, DEFAULT_NAME.namespace, DEFAULT_NAME.model, DEFAULT_NAME.tag) == (
        "registry.ollama.ai",
        "library",
        "",
        "latest",
    )


# -- properties -----------------------------------------------------------------------------------

_valid_part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}", fullmatch=True)
_valid_ns = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,15}", fullmatch=True)
_valid_host = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,20}", fullmatch=True)


@given(st.text())
@example("../../etc/passwd")
@example("a/../../b")
@example("\x00")
@example("h/n/m:t\ud800")
def test_parse_raises_only_invalid_name_error(text):
    try:
        name = parse(text)
    except InvalidNameError:
        return
    # Whatever parses is safe to use as a path below manifests/.
    for part in name.filepath_parts():
        assert part not in ("", ".", "..")
        assert "/" not in part and "\\" not in part and "\x00" not in part


@given(st.text(alphabet=st.sampled_from("ab1_-.:/@\\ \x00.")))
def test_parse_of_path_like_text_raises_only_invalid_name_error(text):
    try:
        parse(text)
    except InvalidNameError:
        pass


@given(_valid_host, _valid_ns, _valid_part, _valid_part)
def test_valid_names_round_trip_through_str(host, namespace, model, tag):
    text = f"{host}/{namespace}/{model}:{tag}"
    name = parse(text)
    assert str(name) == text
    assert parse(str(name)) == name
    assert parse(name.display_shortest()) == name
    assert parse(text.upper()) == name


# -- digests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normal",
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256:{'AB' * 32}", f"sha256:{'ab' * 32}"),
    ],
)
def test_digest_parsing_normalizes(text, normal):
    digest = Digest.parse(text)
    assert str(digest) == normal
    assert digest.file_name == normal.replace(":", "-")
    assert parse_digest(digest) is digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX}\n",  # a regex '$' would let this through
        f"sha512:{HEX}",
        f"SHA256:{HEX}",
        f"sha256:{'g' * 64}",
        f"sha256_{HEX}",
        "sha256:../../etc/passwd",
    ],
)
def test_bad_digests_are_rejected(text):
    with pytest.raises(InvalidDigestError) as info:
        Digest.parse(text)
    assert info.value.message.startswith("invalid digest format")


def test_a_digest_cannot_be_built_from_a_path():
    with pytest.raises(InvalidDigestError):
        Digest("../" + "a" * 61)


def test_digest_of_bytes():
    assert str(Digest.of_bytes(b"")) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Digest.of_bytes(b"").short == "e3b0c44298fc"


@pytest.mark.parametrize(
    "file_name, is_blob",
    [
        (f"sha256-{HEX}", True),
        (f"sha256:{HEX}", False),  # the old spelling Ollama's fixBlobs renames
        (f"sha256-{HEX}-partial", False),
        (f"sha256-{HEX}-partial-0", False),
        (".corral-tmp-abc", False),
    ],
)
def test_blob_file_names(file_name, is_blob):
    assert is_blob_file_name(file_name) is is_blob


@pytest.mark.parametrize("error", [InvalidNameError("m@d", "why"), InvalidDigestError("x")])
def test_name_errors_pickle(error):
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.hint) == (type(error), str(error), error.hint)
