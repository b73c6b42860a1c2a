"""A model loaded with a request's load-time options (num_ctx, num_gpu, ...), as Ollama reloads for them.

`load_variant` gives the spec unchanged when the request's load-time options are those the model is
loaded with (num_gpu -1 matches any layer count, as in Ollama), else the spec with those options and
a memory plan made again for them: the scheduler loads it as a variant of the model beside the
definition's own. A num_ctx past what the model was trained on is lowered to that (Ollama's cap);
one whose plan does not fit the machine is refused with the plan's reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from corral.compiler.compile import CompileOptions
from corral.compiler.errors import CompileError
from corral.compiler.gguf.check import check_gguf
from corral.compiler.gguf.info import model_info_from_header, read_split_info
from corral.compiler.plan import plan_memory
from corral.compiler.spec import RuntimeSpec
from corral.dsl.parameters import LOAD_TIME, ParamValue


class VariantError(CompileError):
    """A request's load-time options ask for a model the machine cannot load."""


def requested(options: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
    """The load-time options of a request (None values left out)."""
    return {k: v for k, v in options.items() if k in LOAD_TIME and v is not None}


def _same(spec: RuntimeSpec, wanted: Mapping[str, ParamValue]) -> bool:
    load = spec.load
    current = {"num_ctx": load.num_ctx, "num_batch": load.num_batch, "num_thread": load.num_thread,
               "use_mmap": load.use_mmap, "main_gpu": load.main_gpu, "num_gpu": load.n_gpu_layers}
    for key, value in wanted.items():
        if key == "num_gpu" and int(value) < 0:  # "as many as fit" matches whatever was planned
            continue
        if key in current and current[key] != value:
            return False
    return True


def load_variant(spec: RuntimeSpec, options: Mapping[str, ParamValue], compile_options: CompileOptions
                 ) -> tuple[RuntimeSpec, list[str]]:
    """`spec` loaded with the load-time options in `options`, and notes on what was changed from the
    request (a num_ctx lowered); `spec` itself when nothing would change."""
    wanted = requested(options)
    notes: list[str] = []
    trained = spec.model.context_length
    if "num_ctx" in wanted:
        asked = max(4, int(wanted["num_ctx"]))  # Ollama's floor
        if trained and asked > trained:
            notes.append(f"num_ctx {asked} is lowered to {trained}, the context length {spec.name} was trained on")
            asked = trained
        wanted["num_ctx"] = asked
    if not wanted or _same(spec, wanted):
        return spec, notes
    params = {**spec.parameters, **wanted}
    paths = [Path(w.path) for w in spec.weight_files]
    info = read_split_info(paths) if len(paths) > 1 else model_info_from_header(check_gguf(paths[0]))
    num_ctx = int(params.get("num_ctx") or spec.load.num_ctx)
    num_batch = int(params.get("num_batch", spec.load.num_batch))
    main_gpu = params.get("main_gpu")
    plan = plan_memory(info, compile_options.inventory, num_ctx=num_ctx, num_parallel=spec.load.num_parallel,
                       num_batch=num_batch, num_gpu=int(params.get("num_gpu", -1)),
                       main_gpu=int(main_gpu) if main_gpu is not None else None,
                       max_sequences=compile_options.num_parallel or None)
    if not plan.fits:
        raise VariantError(f"{spec.name} cannot load with these options: {plan.reasons[-1] if plan.reasons else ''}",
                           hint="ask for a smaller num_ctx or num_gpu, or leave them to the model's definition")
    if plan.backend == "cpu" and plan.total_bytes > compile_options.memory_bytes:
        gib = 1024 ** 3
        raise VariantError(f"{spec.name} with num_ctx {num_ctx} needs {plan.total_bytes / gib:.1f} GiB, more than the "
                           f"{compile_options.memory_bytes / gib:.1f} GiB of memory available",
                           hint="ask for a smaller num_ctx")
    load = spec.load.model_copy(update={
        "num_ctx": num_ctx, "num_batch": num_batch, "num_parallel": plan.num_parallel,
        "num_thread": int(params.get("num_thread", spec.load.num_thread)),
        "use_mmap": bool(params.get("use_mmap", spec.load.use_mmap)),
        "n_gpu_layers": plan.n_gpu_layers, "main_gpu": plan.main_gpu, "tensor_split": plan.tensor_split})
    if load == spec.load:  # asked differently, planned the same (num_gpu 99 on a machine without GPUs)
        return spec, notes
    return spec.model_copy(update={"parameters": params, "load": load, "plan": plan}), notes
