"""The tests' one ChatML template, their compile options and one RuntimeSpec factory.

`CHATML` is the Jinja chat template of SmolLM2 and the tiny test GGUFs (tests/ggufs.py);
`chatml_prompt` is what it renders for one user message. `cpu_options` are the compile options
of a machine without a GPU and with memory to spare, the same on every machine. `runtime_spec`
builds a CPU-only spec directly (no compiler) for engine and scheduler tests, where only what the
engine or the scheduler reads matters.
"""

from __future__ import annotations

from pathlib import Path

from corral.compiler.compile import CompileOptions
from corral.compiler.plan import MemoryPlan
from corral.compiler.spec import LoadOptions, ModelSummary, RuntimeSpec, TemplateSpec, WeightsRef
from corral.machine.gpus import GpuInventory

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chatml_prompt(user: str) -> str:
    """What CHATML renders for one user message, ready for the assistant's answer."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def cpu_options(num_parallel: int = 0) -> CompileOptions:
    """Compile options for a machine with no GPU and 1 TiB free (`num_parallel` 0: automatic)."""
    return CompileOptions(inventory=GpuInventory(reason="tests run models on the CPU"), memory_bytes=1 << 40,
                          num_parallel=num_parallel)


def runtime_spec(weights: Path | None = None, *, name: str = "smollm2:test", size: int = 100,
                 num_ctx: int = 1024, num_batch: int = 512, num_parallel: int = 4, num_thread: int = 0,
                 system: str | None = None, adapters: tuple[Path, ...] = ()) -> RuntimeSpec:
    """A CPU-only spec (SmolLM2's shape in the summary; the engine ignores it).

    With `weights` it runs that file and its size is the file's; without, it names a file that
    does not exist, of `size` bytes (the scheduler's memory plan reads only the size)."""
    if weights is not None:
        size = weights.stat().st_size
    path = str(weights) if weights is not None else f"/models/{name}.gguf"
    plan = MemoryPlan(
        backend="cpu", n_gpu_layers=0, layer_count=31, tensor_split=None, main_gpu=None, devices=(),
        cpu_bytes=size, weights_bytes=size, kv_bytes=0, compute_bytes=0, total_bytes=size,
        n_ctx=num_ctx * num_parallel, num_ctx=num_ctx, num_parallel=num_parallel, num_batch=num_batch,
        kv_cache_type="f16", fits=True, reasons=())
    return RuntimeSpec(
        name=name,
        weights=WeightsRef(path=path, size=size),
        adapters=tuple(WeightsRef(path=str(a), size=a.stat().st_size) for a in adapters),
        model=ModelSummary(
            architecture="llama", parameter_count=134_515_008, parameter_size="135M", quantization="Q4_1",
            context_length=8192, block_count=30, embedding_length=576, head_count=9, head_count_kv=3,
            vocab_size=49152, bos_token="<|im_start|>", eos_token="<|im_end|>"),
        template=TemplateSpec(kind="jinja", source=CHATML, jinja=CHATML, name="chatml", origin="definition"),
        system=system, messages=(), stop=("<|im_end|>",), parameters={}, options={},
        load=LoadOptions(num_ctx=num_ctx, num_batch=num_batch, num_parallel=num_parallel,
                         num_thread=num_thread, use_mmap=True, n_gpu_layers=0, main_gpu=None,
                         tensor_split=None),
        plan=plan, licenses=(), requires=None, source=None)
