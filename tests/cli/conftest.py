"""The CLI tests' fixtures: the server tests' live server over scripted engines (`fake`), for the
commands and the REPL to talk to."""

from tests.server.conftest import fake, fake_store, serve  # noqa: F401 (fixtures, found by name)
