"""Decode throughput: llama.cpp's raw limits next to Corral's Engine, in one run, on SmolLM2.

    python bench/engine_raw.py [--tokens 128] [--slots 1,2,4,8,16] [--threads 2]

Three measurements, all greedy, all on the same weights and thread count:

- "Llama 1 seq":  llama_cpp.Llama.generate, one sequence (the high-level API's ceiling).
- raw N:          the low-level API driven directly, N sequences in one llama_decode per step,
                  one sampler per sequence, nothing else (the most a batching engine can reach).
- engine N:       Corral's Engine with N slots and N concurrent generate() calls: worker
                  process, pipe, scheduler, stop matching and UTF-8 decoding included.

Each rate counts the tokens produced after the prompt is evaluated, over the time they took
(prefill excluded on both sides). The engine's streams stop at an end-of-generation token, so the
prompts are story openings that run long; the table shows how many tokens each N really made.
llama.cpp's OpenMP threads wait passively by default here, as the engine's workers do
(worker.py); pass --omp-wait-policy active to compare spinning.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompt(i: int) -> str:
    return f"Chapter {i + 1}. Once upon a time, in a small village by the sea, there lived"


def probe_repack() -> bool:
    """Whether llama.cpp's repacked CPU weights work here: an Engine finds out (see engine.py)."""
    from corral.engine.process import Engine
    from tests.specs import runtime_spec

    async def start() -> None:
        engine = Engine(runtime_spec(MODEL, num_ctx=256, num_parallel=1))
        await engine.start()
        await engine.close()

    asyncio.run(start())
    return not Engine._cpu_repack_crashes


def llama_single(tokens: int, threads: int, extra_buffers: bool) -> float:
    import llama_cpp

    if not extra_buffers:  # Llama() takes no such option: patch the defaults it starts from
        default = llama_cpp.llama_cpp.llama_model_default_params

        def without_repack() -> llama_cpp.llama_model_params:
            params = default()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_repack
    llm = llama_cpp.Llama(str(MODEL), n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          flash_attn=True, verbose=False)
    produced, first = 0, 0.0
    for _ in llm.generate(llm.tokenize(prompt(0).encode()), temp=0.0):
        produced += 1
        if produced == 1:
            first = time.perf_counter()
        if produced == tokens:
            break
    rate = (produced - 1) / (time.perf_counter() - first)
    llm.close()
    return rate


def raw_batched(n_seq: int, tokens: int, threads: int, extra_buffers: bool) -> float:
    from corral.compiler.spec import LoadOptions
    from corral.engine.llama import Batch, Context, Model

    import llama_cpp

    load = LoadOptions(num_ctx=512, num_batch=512, num_parallel=n_seq, num_thread=threads, use_mmap=True,
                       n_gpu_layers=0, main_gpu=None, tensor_split=None)
    model = Model(str(MODEL), load, extra_buffers=extra_buffers)
    ctx = Context(model, n_ctx=512 * n_seq, n_batch=512, n_seq_max=n_seq, n_threads=threads, unified=False)
    batch = Batch(512)
    samplers = [llama_cpp.llama_sampler_init_greedy() for _ in range(n_seq)]
    position, last = [0] * n_seq, [0] * n_seq
    for seq in range(n_seq):  # prefill, not timed
        toks = model.tokenize(prompt(seq), add_special=False, parse_special=False)
        batch.clear()
        at = batch.add(toks, 0, seq)
        assert ctx.decode(batch) == 0
        position[seq], last[seq] = len(toks), llama_cpp.llama_sampler_sample(samplers[seq], ctx.handle, at)
    started = time.perf_counter()
    for _ in range(tokens - 1):  # one llama_decode per step, a token for every sequence
        batch.clear()
        index = [batch.add([last[seq]], position[seq], seq) for seq in range(n_seq)]
        assert ctx.decode(batch) == 0
        for seq in range(n_seq):
            position[seq] += 1
            last[seq] = llama_cpp.llama_sampler_sample(samplers[seq], ctx.handle, index[seq])
    rate = n_seq * (tokens - 1) / (time.perf_counter() - started)
    for sampler in samplers:
        llama_cpp.llama_sampler_free(sampler)
    batch.close()
    ctx.close()
    model.close()
    return rate


def engine_batched(n_seq: int, tokens: int, threads: int) -> tuple[float, int]:
    """(tokens/s after every stream's first token, fewest tokens any stream made)."""
    from corral.engine.process import Engine
    from corral.engine.requests import Final, GenerateRequest, Sampling
    from tests.specs import runtime_spec

    async def run() -> tuple[float, int]:
        engine = Engine(runtime_spec(MODEL, num_ctx=512, num_batch=512, num_parallel=n_seq, num_thread=threads))
        await engine.start()
        firsts: list[float] = []
        counts: list[int] = []

        async def one(i: int) -> None:
            req = GenerateRequest(f"bench-{i}", prompt(i), Sampling(temperature=0.0, num_predict=tokens))
            seen = False
            async for message in engine.generate(req):
                if not seen:
                    firsts.append(time.perf_counter())
                    seen = True
                if isinstance(message, Final):
                    counts.append(message.eval_count)

        await asyncio.gather(*(one(i) for i in range(n_seq)))
        ended = time.perf_counter()
        await engine.close()
        # Tokens made after the last stream got going, over the time since then.
        return (sum(counts) - n_seq) / (ended - max(firsts)), min(counts)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--slots", default="1,2,4,8,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait-policy", choices=("passive", "active"), default="passive")
    args = parser.parse_args()
    # Before llama_cpp (and libgomp with it) loads in this process; the workers inherit it.
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    sys.path.insert(0, str(REPO))
    slots = [int(n) for n in args.slots.split(",")]

    extra_buffers = probe_repack()
    print(f"SmolLM2-135M Q4_1, {args.threads} threads, {args.tokens} tokens greedy, "
          f"OMP_WAIT_POLICY={args.omp_wait_policy}, repacked CPU weights {'on' if extra_buffers else 'off (crash here)'}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"Llama 1 seq (high-level API): {llama_single(args.tokens, args.threads, extra_buffers):7.1f} tok/s")
    print(f"{'N':>3}  {'raw tok/s':>10}  {'engine tok/s':>12}  {'engine/raw':>10}  {'min tokens':>10}")
    for n in slots:
        raw = raw_batched(n, args.tokens, args.threads, extra_buffers)
        eng, fewest = engine_batched(n, args.tokens, args.threads)
        print(f"{n:>3}  {raw:>10.1f}  {eng:>12.1f}  {eng / raw:>10.2f}  {fewest:>10}", flush=True)


if __name__ == "__main__":
    main()
