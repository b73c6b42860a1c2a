"""Planned memory against what llama.cpp really takes, for one model on the CPU.

Two comparisons. First with the buffer sizes llama.cpp itself logs while loading (model, KV,
compute, output): that checks the plan's arithmetic. Then with the process's memory: loads the model with llama_cpp.Llama (n_gpu_layers=0, use_mmap=False so the weights are real
resident pages, not page cache), then decodes one full batch so the compute buffer is touched,
and compares the plan with the growth of the process's resident memory (VmRSS) and its peak
(VmHWM), both measured from just before the load.

llama.cpp's "extra buffer types" (AMX and CPU repacking) are switched off: on this project's
AMX-capable VM they crash the first multi-token decode (SIGSEGV in llama_decode), and they also
give a tied output head its own repacked copy, which the plan (like plain llama.cpp) does not count.

    python bench/plan.py [--model PATH] [--ctx 2048] [--batch 512]
"""

from __future__ import annotations

import argparse
import gc
import io
import re
import sys
from pathlib import Path

from corral.compiler.gguf.info import read_model_info
from corral.machine.gpus import GpuInventory
from corral.compiler.plan import human_bytes, plan_memory

BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "tests" / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (this bench needs Linux)")


def _without_extra_buffer_types(llama_cpp) -> None:
    """Make Llama() build its model params with use_extra_bufts=False (no constructor flag exists)."""
    import llama_cpp.llama as high_level

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    high_level.llama_cpp.llama_model_default_params = params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("llama_cpp is not importable; nothing to compare against", file=sys.stderr)
        return 2

    info = read_model_info(args.model)
    plan = plan_memory(info, GpuInventory(reason="bench runs on CPU"), num_ctx=args.ctx, num_batch=args.batch, num_gpu=0)

    _without_extra_buffer_types(llama_cpp)
    llama_cpp.llama_backend_init()  # load the ggml backends before the baseline: they are not the model
    gc.collect()
    before = _status_kib("VmRSS")
    # verbose=True makes llama-cpp-python print llama.cpp's log to sys.stderr, where we catch it.
    log, sys.stderr = sys.stderr, io.StringIO()
    try:
        llm = llama_cpp.Llama(
            str(args.model), n_ctx=args.ctx, n_batch=args.batch, n_ubatch=args.batch,
            n_gpu_layers=0, use_mmap=False, verbose=True,
        )
        loaded = _status_kib("VmRSS") - before
    finally:
        log, sys.stderr = sys.stderr, log
    buffers = [(m[1], m[2], float(m[3])) for m in BUFFER_LINE.finditer(log.getvalue())]
    reported = int(sum(size for _, _, size in buffers) * (1 << 20))
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # the log has been read; keep llama.cpp quiet from here on
    # One full batch touches the compute buffer, which malloc hands out untouched until then.
    tokens = (llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 64))[: args.batch]
    llm.eval(tokens)
    after = _status_kib("VmRSS") - before
    peak = _status_kib("VmHWM") - before
    llm.close()

    print(f"model      {args.model.name} ({info.parameter_size}, {info.quantization}), n_ctx {args.ctx}, n_batch {args.batch}")
    for label, value in plan.rows():
        print(f"plan       {label:<12} {value}")
    for device, kind, size in buffers:
        print(f"llama.cpp  {device} {kind} buffer {size:.2f} MiB")
    print(f"ratio      planned/llama.cpp buffers    {plan.total_bytes / reported:.3f}")
    print(f"actual     RSS growth after load        {human_bytes(loaded)}")
    print(f"actual     RSS growth after one batch   {human_bytes(after)}  (peak {human_bytes(peak)})")
    print(f"ratio      planned/actual after load    {plan.total_bytes / loaded:.3f}")
    print(f"ratio      planned/actual after a batch {plan.total_bytes / after:.3f}")
    print(f"ratio      planned/actual peak          {plan.total_bytes / peak:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
