"""How busy workers split the cores: the allotment table, the shared board, and the contexts
that take a worker's share."""

from __future__ import annotations

import pytest

from corral.engine.batching import EmbedBatcher
from corral.engine.cores import CoreBoard, threads_for
from corral.engine.llama import Context, Model
from corral.engine.requests import EmbedRequest, Embeddings
from tests.ggufs import write_tiny_llama
from tests.specs import runtime_spec


@pytest.mark.parametrize("cores, busy, wanted, threads", [
    (2, 1, None, [2]),  # alone: every core
    (2, 2, None, [1, 1]),  # two busy workers on two cores: one each, never four spinning threads
    (2, 3, None, [1, 1, 1]),  # more workers than cores: one thread each, the least there is
    (16, 3, None, [6, 5, 5]),  # the remainder goes to the lowest ranks
    (16, 4, None, [4, 4, 4, 4]),
    (16, 1, 4, [4]),  # num_thread caps a model's share
    (16, 2, 12, [8, 8]),
    (8, 0, None, [8]),  # no stamp seen yet counts as alone
])
def test_threads_per_busy_worker(cores: int, busy: int, wanted: int | None, threads: list[int]) -> None:
    assert [threads_for(cores, busy, rank, wanted) for rank in range(max(busy, 1))] == threads
    assert sum(threads) <= max(cores, busy)


def test_busy_seats_count_and_rank() -> None:
    board = CoreBoard(seats=4)
    a, b, c = (board.seat(board.claim()) for _ in range(3))
    assert a.busy_step() == (1, 0)
    assert b.busy_step() == (2, 1)
    assert c.busy_step() == (3, 2)
    b.idle()
    assert c.busy_step() == (2, 1)  # an idle worker gives its cores back at once
    board.release(a.index)
    assert c.busy_step() == (1, 0)
    assert board.claim() == a.index  # a released seat is reused


def test_all_seats_taken_reuses_the_stalest() -> None:
    board = CoreBoard(seats=2)
    first, second = board.claim(), board.claim()
    board.seat(second).busy_step()
    assert board.claim() == first


def test_the_embeddings_context_takes_the_worker_s_share(tmp_path) -> None:
    # The worker sets its share on every context it runs; the embeddings one is made on the first
    # embedding request, after shares may have changed, so it takes the last share when made.
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    model = Model([str(path)], runtime_spec(path, name="tiny", num_ctx=64).load)
    embedder = EmbedBatcher(model, lambda: Context(model, n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=2,
                                                   n_threads=2, unified=True, embeddings=True), limit=64)
    try:
        embedder.set_threads(1)
        assert embedder.n_threads is None
        out: list = []
        assert embedder.submit(EmbedRequest("e", ("hello",))) == []
        embedder.step(out)
        assert isinstance(out[0], Embeddings) and embedder.n_threads == 1
        embedder.set_threads(2)
        assert embedder.n_threads == 2
    finally:
        embedder.close()
        model.close()
