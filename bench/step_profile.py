"""Where a request's time goes: the worker's step under cProfile at N sequences, and a streamed
completion's time to first token split by stage through the real server.

    python bench/step_profile.py steps 32 64       # ms/step, the top functions, bytes per step's message
    python bench/step_profile.py first-token        # sent -> worker -> first chunk, after a warm-up

`steps` runs the worker's own objects in this process (no pipe): N requests are admitted, their
prompts evaluated, then every step until they finish is profiled, and each step's messages are
pickled as the pipe would carry them. `first-token` serves SmolLM2 in-process and stamps the
engine's submit and the first message back from the worker for each request. Say how loaded the
machine was (`uptime`) with any figure: on a shared 2-core machine the decode time swings 3x.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.models import smollm2  # noqa: E402
from tests.specs import cpu_options  # noqa: E402

PROMPT = "Chapter {i}. Once upon a time, in a small village by the sea, there lived"


def _spec(root: Path, threads: int):
    from corral.dsl import parse_modelfile
    from corral.sources.stored import Models
    from corral.store.create import create_model
    from corral.store.store import Store

    text = f"FROM {smollm2()}\nPARAMETER num_ctx 2048\nPARAMETER num_thread {threads}\n"
    store = Store(root / "models")
    create_model(store, "smol", parse_modelfile(text, str(root / "Modelfile")).definition, base_dir=root,
                 options=cpu_options())
    return Models(store, cpu_options()).spec("smol")


def steps(counts: list[int], threads: int, tokens: int) -> None:
    from corral.engine.requests import GenerateRequest, Sampling
    from corral.engine.worker import WorkerConfig, _Worker

    spec = _spec(Path(tempfile.mkdtemp()), threads)
    for n in counts:
        worker = _Worker(None, WorkerConfig(spec, max(n, spec.plan.sequences)))  # type: ignore[arg-type]
        loop = worker.batch_loop
        for i in range(n):
            loop.submit(GenerateRequest(id=f"r{i}", prompt=PROMPT.format(i=i), stop=tuple(spec.stop),
                                        sampling=Sampling(temperature=0.8, num_predict=tokens)))
        while loop.stats().running < n or any(s.job and not s.job.generating for s in loop._slots):
            loop.step()  # admission and prompts, left out of the profile
        profile, count, carried = cProfile.Profile(), 0, 0
        started = time.perf_counter()
        profile.enable()
        while loop.busy:
            carried += len(pickle.dumps(loop.step()))
            count += 1
        profile.disable()
        wall = time.perf_counter() - started
        print(f"\n{n} sequences: {count} steps, {wall / count * 1000:.1f} ms/step, "
              f"{carried / count:.0f} bytes/step to the server")
        pstats.Stats(profile).sort_stats("tottime").print_stats(10)
        worker.close()


def first_token(rounds: int) -> None:
    import httpx

    from corral.config.settings import Settings
    from corral.engine import process
    from corral.server.app import create_app
    from tests.server.live import LiveServer
    from tests.server.smol import smol_store as make_store

    marks: dict[str, float] = {}
    submit, dispatch = process.Engine._submit, process.Engine._dispatch

    async def stamped_submit(self, message):  # type: ignore[no-untyped-def]
        marks.setdefault("to worker", time.perf_counter())
        return await submit(self, message)

    def stamped_dispatch(self, messages):  # type: ignore[no-untyped-def]
        marks.setdefault("first message back", time.perf_counter())
        return dispatch(self, messages)

    process.Engine._submit, process.Engine._dispatch = stamped_submit, stamped_dispatch
    app = create_app(Settings(models=make_store(Path(tempfile.mkdtemp()), smollm2()), keep_alive="-1"),
                     name="first_token")
    with LiveServer(app) as live:
        for i in [1] + [1, 2, 3] * rounds:
            marks.clear()
            body = {"model": "smol", "prompt": PROMPT.format(i=i), "max_tokens": 8, "temperature": 0, "stream": True}
            sent, first = time.perf_counter(), None
            with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=600) as response:
                for line in response.iter_lines():
                    if first is None and line.startswith("data: {") and json.loads(line[6:])["choices"]:
                        first = time.perf_counter()
            done = time.perf_counter()
            stages = {k: round((v - sent) * 1000) for k, v in marks.items()}
            print(f"prompt {i}: {stages}, first text {round((first - sent) * 1000)} ms, "
                  f"[DONE] {round((done - sent) * 1000)} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("steps")
    s.add_argument("counts", type=int, nargs="+")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--tokens", type=int, default=48)
    f = sub.add_parser("first-token")
    f.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.what == "steps":
        steps(args.counts, args.threads, args.tokens)
    else:
        first_token(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
