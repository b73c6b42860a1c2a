"""Corral's engine on a real GPU: the plan's offload, then decode throughput at 1 and N clients.

    python bench/engine_gpu.py [--model PATH | --synthetic] [--clients 1,8] [--tokens 128]

Plans with the GPUs NVML reports, starts an Engine (worker process, continuous batching) with the
plan's n_gpu_layers, and runs N concurrent greedy generations; prints aggregate tokens/s and the
ratio to one client. --synthetic writes a random-weight 0.7B llama with the gguf package, for
machines where no model file can be carried (its text is noise; its speed is a llama's).
"""

# llama_cpp before numpy (see bench/plan_gpu.py): the CUDA build crashed on load otherwise.
import llama_cpp  # noqa: F401  isort: skip

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


async def measure(spec, clients: int, tokens: int) -> float:
    from corral.engine.process import Engine
    from corral.engine.requests import Final, GenerateRequest, Sampling

    engine = Engine(spec, n_slots=max(clients, 1))
    await engine.start()
    counts: list[int] = []

    async def one(i: int) -> None:
        req = GenerateRequest(f"g{i}", f"Chapter {i + 1}. Once upon a time there lived",
                              Sampling(temperature=0.0, num_predict=tokens))
        async for m in engine.generate(req):
            if isinstance(m, Final):
                counts.append(m.eval_count)

    await one(999)  # warm-up
    counts.clear()
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    rate = sum(counts) / (time.perf_counter() - started)
    await engine.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    from corral.compiler.compile import CompileOptions, compile_definition
    from corral.machine.gpus import NvmlProbe
    from corral.machine.memory import available_memory
    from corral.compiler.resolve import NoModels
    from corral.dsl import parse_modelfile

    model = args.model
    if args.synthetic:
        from bench.plan_gpu import synthetic

        model = synthetic(Path("/tmp/synthetic-0.6b.gguf"))
    inventory, memory = NvmlProbe().read(), available_memory()
    rates = {}
    for n in [int(x) for x in args.clients.split(",")]:
        d = parse_modelfile(f"FROM {model}\nPARAMETER num_ctx 1024\n").definition
        spec = compile_definition(d, name="bench", base_dir=Path("."), resolver=NoModels(),
                                  options=CompileOptions(inventory=inventory, memory_bytes=memory, num_parallel=n))
        if n == 1:
            print(f"plan: {spec.plan.backend}, {spec.plan.n_gpu_layers}/{spec.plan.layer_count} layers on GPU; "
                  f"{spec.plan.reasons[0]}")
        rates[n] = asyncio.run(measure(spec, n, args.tokens))
        print(f"{n:>3} clients: {rates[n]:8.1f} tok/s" + (f"  ({rates[n] / rates[1]:.2f} x 1 client)" if 1 in rates else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
