"""RuntimeSpecs for engine tests, built directly (no compiler): only what the engine reads matters."""

from __future__ import annotations

from pathlib import Path

from corral.compiler.plan import MemoryPlan
from corral.compiler.spec import LoadOptions, ModelSummary, RuntimeSpec, TemplateSpec, WeightsRef

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "<|im_start|>assistant\n")


def chatml(user: str) -> str:
    """SmolLM2's prompt for one user message."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def runtime_spec(weights: Path, *, name: str = "smollm2:test", num_ctx: int = 1024, num_batch: int = 512,
                 num_parallel: int = 4, num_thread: int = 0,
                 adapters: tuple[Path, ...] = ()) -> RuntimeSpec:
    """A CPU-only spec for `weights` (SmolLM2's shape in the summary; the engine ignores it)."""
    size = weights.stat().st_size
    plan = MemoryPlan(
        backend="cpu", n_gpu_layers=0, layer_count=31, tensor_split=None, main_gpu=None, devices=(),
        cpu_bytes=size, weights_bytes=size, kv_bytes=0, compute_bytes=0, total_bytes=size,
        n_ctx=num_ctx * num_parallel, num_ctx=num_ctx, num_parallel=num_parallel, num_batch=num_batch,
        kv_cache_type="f16", fits=True, reasons=())
    return RuntimeSpec(
        name=name,
        weights=WeightsRef(path=str(weights), size=size),
        adapters=tuple(WeightsRef(path=str(a), size=a.stat().st_size) for a in adapters),
        model=ModelSummary(
            architecture="llama", parameter_count=134_515_008, parameter_size="135M", quantization="Q4_1",
            context_length=8192, block_count=30, embedding_length=576, head_count=9, head_count_kv=3,
            vocab_size=49152, bos_token="<|im_start|>", eos_token="<|im_end|>"),
        template=TemplateSpec(kind="jinja", source=CHATML, jinja=CHATML, name="chatml", origin="definition"),
        system=None, messages=(), stop=("<|im_end|>",), parameters={}, options={},
        load=LoadOptions(num_ctx=num_ctx, num_batch=num_batch, num_parallel=num_parallel,
                         num_thread=num_thread, use_mmap=True, n_gpu_layers=0, main_gpu=None,
                         tensor_split=None),
        plan=plan, licenses=(), requires=None, source=None)
