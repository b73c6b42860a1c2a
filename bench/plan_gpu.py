"""The GPU side of the memory plan, checked on a real NVIDIA GPU.

For each case, plans with the GPUs NVML reports, loads the model with llama.cpp using the plan's
n_gpu_layers / main_gpu / tensor_split, decodes one full batch (so the compute buffers are
touched), and compares the planned bytes per GPU with the growth of that GPU's used memory
(NVML), and with the buffer sizes llama.cpp logs. Models: any GGUF given with --model, and a
synthetic llama (random weights, ~1 GB in F16) written with the gguf package when --synthetic is
set, so the check runs where no model file can be carried. Also prints decode tokens/s.

    python bench/plan_gpu.py [--model PATH ...] [--synthetic] [--ctx 4096] [--num-gpu -1 10]
"""

from __future__ import annotations

# llama_cpp must load before numpy (pulled in by gguf): on the H100 machine's CUDA build, importing
# numpy first made llama_model_load_from_file segfault (seen 2026-11-25; OpenMP runtimes clash).
import llama_cpp  # noqa: F401  isort: skip

import argparse
import io
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from corral.compiler.gguf.info import read_model_info
from corral.machine.gpus import NvmlProbe
from corral.compiler.plan import human_bytes, plan_memory

BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")


def synthetic(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.ggufs import TinyLlama, write_tiny_llama

    spec = replace(TinyLlama(), layers=16, embd=2048, heads=16, kv_heads=4, ff=5632, context=8192,
                   quant="F16", name="Synthetic 0.6B")
    return write_tiny_llama(path, spec)


def used(nvml, index: int) -> int:
    return nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used


def check(model: Path, ctx: int, num_gpu: int, batch: int) -> None:
    import llama_cpp
    import pynvml as nvml

    inventory = NvmlProbe().read()
    info = read_model_info(model)
    plan = plan_memory(info, inventory, num_ctx=ctx, num_batch=batch, num_gpu=num_gpu)
    nvml.nvmlInit()
    before = {d.index: used(nvml, d.index) for d in inventory.devices}
    log, sys.stderr = sys.stderr, io.StringIO()
    try:
        llm = llama_cpp.Llama(str(model), n_ctx=ctx, n_batch=batch, n_ubatch=batch,
                              n_gpu_layers=plan.n_gpu_layers, main_gpu=plan.main_gpu or 0,
                              tensor_split=list(plan.tensor_split) if plan.tensor_split else None,
                              flash_attn=False, verbose=True)
    finally:
        log, sys.stderr = sys.stderr, log
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 200)[:batch]
    llm.eval(tokens)
    grown = {i: used(nvml, i) - b for i, b in before.items()}
    llm.reset()
    llm.eval(tokens[:8])
    t0, n = time.perf_counter(), 128
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    rate = n / (time.perf_counter() - t0)
    buffers = [(m[1], m[2], float(m[3])) for m in BUFFER.finditer(log.getvalue())]
    gpu_reported = sum(s for dev, _, s in buffers if dev.upper().startswith("CUDA")) * (1 << 20)
    llm.close()
    print(f"\n== {model.name} ({info.parameter_size}, {info.quantization}), n_ctx {ctx}, num_gpu {num_gpu}")
    for label, value in plan.rows():
        print(f"plan       {label:<14} {value}")
    for reason in plan.reasons:
        print(f"reason     {reason}")
    for dev, kind, size in buffers:
        print(f"llama.cpp  {dev} {kind} buffer {size:.2f} MiB")
    for d in plan.devices:
        g = grown.get(d.index, 0)
        print(f"GPU {d.index}      planned {human_bytes(d.total_bytes)}, NVML used grew {human_bytes(g)}, "
              f"llama.cpp CUDA buffers {human_bytes(int(gpu_reported))}")
        print(f"ratio      planned/NVML growth {d.total_bytes / g:.3f}   planned/llama.cpp buffers "
              f"{d.total_bytes / gpu_reported:.3f}" if g and gpu_reported else "ratio      n/a")
    print(f"decode     {rate:.1f} tokens/s (greedy, one sequence)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=[])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--num-gpu", type=int, nargs="+", default=[-1])
    args = ap.parse_args()
    inv = NvmlProbe().read()
    print("inventory:", [(d.index, d.name, human_bytes(d.free_bytes)) for d in inv.devices], inv.reason or "")
    models = list(args.model)
    if args.synthetic:
        models.append(synthetic(Path("/tmp/synthetic-0.6b.gguf")))
    for model in models:
        for num_gpu in args.num_gpu:
            check(model, args.ctx, num_gpu, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
