"""Memory planning: how much a model needs at a given context, and where its layers go.

The plan mirrors what llama.cpp will do with it, so the numbers can be checked against its logs:

* **Layers.** llama.cpp counts `block_count + 1` offloadable layers: the repeating blocks and the
  output head. `n_gpu_layers = k` puts the output head and the top `k - 1` blocks on the GPUs;
  the token embedding always stays on the CPU. A tied head (no `output.weight`) reuses
  `token_embd` on the CPU but is a second copy of it on a GPU. Across GPUs, llama.cpp hands
  layers out in CUDA order by cumulative `tensor_split` fractions (`get_layer_buft_list` in
  llama-model.cpp); `_assign` copies that rule.
* **KV cache.** Per layer: `cells x n_head_kv(layer) x (key_length + value_length) x type size`,
  on the device of its layer. `cells = num_ctx x num_parallel` (one unified cache, the pool that
  every running sequence takes cells from), rounded up to a multiple of 256 as llama.cpp does. So
  `num_parallel` is how many full-length sequences the pool holds; up to `max_sequences` shorter
  ones run in it at once (64, or fewer in a small pool: one per 32 cells), unless an explicit
  num_parallel caps them. The logits buffer holds one row per sequence. Sliding-window layers are counted at full
  size: llama.cpp's default `swa_full=true` allocates them so.
* **Compute buffer.** Ollama's graph formula for llama-like models, plus two activations:
  `max(4b(1 + 4e + c(1 + h)), 4b(e + v)) + 8be` bytes, with b = min(num_batch, cells) tokens per
  micro-batch, e = embedding length, c = cells, h = heads, v = vocabulary. The first term is the
  attention scores and mask (no flash attention), the second the logits. For SmolLM2 (n_ctx
  512-8192, n_batch 128-512) and Gemma 3 it lands between 0.1% below and 2% above the "compute
  buffer size" llama.cpp logs on the CPU. Every GPU holding a layer gets one; the CPU gets one
  too when it runs any layer, else only small host buffers, plus the logits output buffer.
* **Vision.** A model with a projector (mmproj) holds it beside the weights, where the layers
  run (on the GPU its room is kept on every GPU used, as part of the reserve), plus an allowance
  for encoding one image: `4 x patches x (8e + patches x h)` bytes with the projector's own
  patches, embedding length and heads (`vision_allowance`). The image's tokens take KV cells from
  the pool like text tokens, so num_ctx covers them.
* **Reserve.** Each GPU keeps 457 MiB back (Ollama's CUDA minimum) for the CUDA context, cuBLAS
  workspaces and fragmentation.

With `num_gpu=-1` the planner takes the fewest GPUs (most free memory first) that hold every
layer, splitting layers by the memory each has left after its reserve and compute buffer; if no
set holds them all, the set that holds the most; if none holds one layer, the CPU. Every choice is
written to `reasons`, in sentences a user can act on.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict

from corral.compiler.errors import CompileError
from corral.compiler.gguf.info import ModelInfo
from corral.machine.gpus import GpuDevice, GpuInventory

MiB = 1 << 20
GiB = 1 << 30
GPU_RESERVE_BYTES = 457 * MiB
MAX_SEQUENCES = 64  # sequences sharing the pool at most, unless num_parallel is set
# On the CPU, fewer: each decode's attention scans every cell of the shared pool for each sequence,
# so beyond about 32 a step grows faster than the tokens it adds (SmolLM2 on 2 cores, 64 requests
# of 144 tokens in 8192 cells: 274 tokens/s with 32 at once, 212 with all 64, which also ran the
# pool full and paused some).
CPU_MAX_SEQUENCES = 32
CELLS_PER_SEQUENCE = 32  # a small pool admits one sequence per this many cells
CTX_ALIGN = 256
KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}


class DevicePlan(BaseModel):
    """What one GPU will hold."""

    model_config = ConfigDict(frozen=True)

    index: int
    name: str
    free_bytes: int
    layers: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes


class MemoryPlan(BaseModel):
    """Where a model's memory goes, the llama.cpp settings that put it there, and why."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["cpu", "cuda"]
    n_gpu_layers: int  # llama.cpp's meaning: the output head counts as the last layer
    layer_count: int  # block_count + 1
    tensor_split: tuple[float, ...] | None  # one fraction per inventory GPU, by index
    main_gpu: int | None
    devices: tuple[DevicePlan, ...]
    cpu_bytes: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    n_ctx: int  # KV cells llama.cpp allocates
    num_ctx: int
    num_parallel: int
    num_batch: int
    kv_cache_type: str
    max_sequences: int = 0  # sequences running in the pool at once; 0: num_parallel
    vision_bytes: int = 0  # the projector and one image's encoding (models that see images)
    draft_bytes: int = 0  # the DRAFT model: its weights, one sequence's KV at num_ctx, its compute
    fits: bool = True  # False only when an explicit num_gpu asks for more than the GPUs have free
    reasons: tuple[str, ...] = ()

    @property
    def sequences(self) -> int:
        """Sequences the pool serves at once."""
        return self.max_sequences or self.num_parallel

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a two-column table."""
        rows = [
            ("backend", "CUDA" if self.backend == "cuda" else "CPU"),
            ("GPU layers", f"{self.n_gpu_layers}/{self.layer_count}"),
        ]
        if self.tensor_split and len(self.tensor_split) > 1:
            rows.append(("tensor split", ", ".join(f"{f:.2f}" for f in self.tensor_split)))
        if self.main_gpu is not None:
            rows.append(("main GPU", str(self.main_gpu)))
        for d in self.devices:
            used = f"{human_bytes(d.total_bytes)} of {human_bytes(d.free_bytes)} free, {d.layers} layers"
            rows.append((f"GPU {d.index} ({d.name})", used))
        rows += [
            ("CPU", human_bytes(self.cpu_bytes)),
            ("weights", human_bytes(self.weights_bytes)),
            ("KV cache", f"{human_bytes(self.kv_bytes)} ({self.n_ctx} cells, {self.kv_cache_type})"),
            ("KV pool", f"{self.n_ctx} cells shared by up to {self.sequences} sequences; holds "
                        f"{self.n_ctx // self.num_ctx} of the full {self.num_ctx} tokens"),
            ("compute", human_bytes(self.compute_bytes)),
        ]
        if self.vision_bytes:
            rows.append(("vision", f"{human_bytes(self.vision_bytes)} (the projector and one image)"))
        if self.draft_bytes:
            rows.append(("draft", f"{human_bytes(self.draft_bytes)} (the DRAFT model and one sequence's KV)"))
        rows.append(("total", human_bytes(self.total_bytes)))
        return rows


def human_bytes(n: int) -> str:
    """1.5 GiB, 98.3 MiB: binary units, as nvidia-smi and llama.cpp's logs count."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True, slots=True)
class _Costs:
    """Bytes of each placeable piece of one model at one context size."""

    layer_weights: tuple[int, ...]  # blocks, then the output head as a GPU holds it
    head_cpu_bytes: int  # the output head on the CPU, where a tied head costs nothing extra
    layer_kv: tuple[int, ...]  # blocks, then 0 for the head
    input_bytes: int
    graph_bytes: int  # the compute buffer of a backend that runs layers
    host_bytes: int  # host buffers with every layer offloaded, plus the logits output buffer
    output_buffer: int

    @property
    def count(self) -> int:
        return len(self.layer_weights)

    def cpu_compute(self, ngl: int) -> int:
        """The CPU's compute buffer: a full graph when it runs any layer, else the host buffers."""
        return self.host_bytes if ngl >= self.count else self.graph_bytes + self.output_buffer


@dataclass(frozen=True, slots=True)
class _Placement:
    """One candidate: `ngl` layers over `devices` (in CUDA order) split by `fractions`."""

    ngl: int
    devices: tuple[GpuDevice, ...]
    fractions: tuple[float, ...]
    layers: tuple[int, ...]  # per device
    weights: tuple[int, ...]
    kv: tuple[int, ...]
    cpu_bytes: int
    cpu_weights: int
    graph_bytes: int
    reserve: int

    def need(self, i: int) -> int:
        """Bytes GPU `i` must have free: its layers, their KV, a compute buffer and the reserve."""
        return self.weights[i] + self.kv[i] + self.graph_bytes + self.reserve if self.layers[i] else 0

    @property
    def fits(self) -> bool:
        return all(self.need(i) <= d.free_bytes for i, d in enumerate(self.devices))

    def device_plans(self) -> tuple[DevicePlan, ...]:
        return tuple(
            DevicePlan(
                index=d.index, name=d.name, free_bytes=d.free_bytes, layers=self.layers[i],
                weights_bytes=self.weights[i], kv_bytes=self.kv[i], compute_bytes=self.graph_bytes,
            )
            for i, d in enumerate(self.devices)
            if self.layers[i]
        )  # fmt: skip


def plan_memory(
    info: ModelInfo,
    inventory: GpuInventory,
    *,
    num_ctx: int,
    num_parallel: int = 1,
    num_batch: int = 512,
    num_gpu: int = -1,
    main_gpu: int | None = None,
    kv_cache_type: str = "f16",
    reserve_bytes: int = GPU_RESERVE_BYTES,
    max_sequences: int | None = None,
    vision_bytes: int = 0,
    draft_bytes: int = 0,
) -> MemoryPlan:
    """Plan where `info`'s weights, KV cache and compute buffers go on `inventory`'s GPUs.

    num_gpu: -1 = as many layers as fit, 0 = CPU only, N = exactly N layers (llama.cpp counting).
    main_gpu: pin the model to this one GPU. reserve_bytes: kept free on every GPU used.
    max_sequences: sequences sharing the KV pool; None: MAX_SEQUENCES (CPU_MAX_SEQUENCES on the
    CPU), fewer in a small pool.
    vision_bytes: the projector and its image allowance (see the module docstring), 0 for none.
    draft_bytes: the DRAFT model's own total (`draft_total`), loaded where the model's layers go.
    Raises CompileError for an unknown main_gpu or kv_cache_type; ValueError for sizes below 1.
    """
    for name, value in (("num_ctx", num_ctx), ("num_parallel", num_parallel), ("num_batch", num_batch)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if num_gpu < -1:
        raise ValueError(f"num_gpu must be -1 (auto), 0 (CPU) or a layer count, got {num_gpu}")
    if kv_cache_type not in KV_TYPE_BYTES:
        raise CompileError(f"unknown kv_cache_type '{kv_cache_type}'", hint=f"use one of {', '.join(KV_TYPE_BYTES)}")
    cells = -(-num_ctx * num_parallel // CTX_ALIGN) * CTX_ALIGN
    sequences = max_sequences or pool_sequences(cells, num_parallel)
    costs = _costs(info, cells, min(num_batch, cells), sequences, KV_TYPE_BYTES[kv_cache_type])
    reasons = _notes(info, num_ctx, kv_cache_type)
    extra = vision_bytes + draft_bytes
    chosen = _choose(info, inventory, costs, num_gpu, main_gpu, reserve_bytes + extra, reasons)
    if not chosen.ngl and max_sequences is None:
        sequences = max(num_parallel, min(sequences, CPU_MAX_SEQUENCES))
        # llama.cpp sizes its logits buffer by the sequences the context serves: cost the CPU's count.
        costs = _costs(info, cells, min(num_batch, cells), sequences, KV_TYPE_BYTES[kv_cache_type])
        chosen = _evaluate(costs, (), 0, reserve_bytes + extra)
    where = "each GPU used" if chosen.ngl else "the CPU"
    if vision_bytes:
        reasons.append(f"projector and one image: {vision_bytes / MiB:.0f} MiB, kept on {where}")
    if draft_bytes:
        reasons.append(f"DRAFT model and one sequence's KV: {draft_bytes / MiB:.0f} MiB, kept on {where}")

    devices = chosen.device_plans()
    weights, kv = chosen.cpu_weights + sum(chosen.weights), sum(costs.layer_kv)
    compute = sum(d.compute_bytes for d in devices) + costs.cpu_compute(chosen.ngl)
    share = sum(chosen.fractions) or 1.0
    used = {d.index: f / share for d, f in zip(chosen.devices, chosen.fractions)}
    return MemoryPlan(
        backend="cuda" if chosen.ngl else "cpu",
        n_gpu_layers=chosen.ngl,
        layer_count=costs.count,
        tensor_split=tuple(round(used.get(d.index, 0.0), 4) for d in inventory.devices) if chosen.ngl else None,
        main_gpu=chosen.devices[0].index if chosen.ngl and len(chosen.devices) == 1 else None,
        devices=devices,
        cpu_bytes=chosen.cpu_bytes + (0 if chosen.ngl else extra),
        weights_bytes=weights,
        kv_bytes=kv,
        compute_bytes=compute,
        total_bytes=weights + kv + compute + extra,
        n_ctx=cells,
        num_ctx=num_ctx,
        num_parallel=num_parallel,
        num_batch=num_batch,
        kv_cache_type=kv_cache_type,
        max_sequences=sequences,
        fits=chosen.fits,
        reasons=tuple(reasons),
        vision_bytes=vision_bytes,
        draft_bytes=draft_bytes,
    )


def draft_total(info: ModelInfo, *, num_ctx: int, num_batch: int, kv_cache_type: str = "f16") -> int:
    """Bytes a DRAFT model takes beside its model: all its weights, the KV of the one sequence it
    drafts for at num_ctx, and its compute buffers (speculative decoding runs it for one sequence)."""
    cells = -(-num_ctx // CTX_ALIGN) * CTX_ALIGN
    costs = _costs(info, cells, min(num_batch, cells), 1, KV_TYPE_BYTES.get(kv_cache_type, 2.0))
    return sum(costs.layer_weights) + costs.input_bytes + sum(costs.layer_kv) + costs.graph_bytes + costs.host_bytes


def vision_allowance(image_size: int, patch_size: int, embedding_length: int, head_count: int) -> int:
    """Bytes to encode one image with a projector of these sizes: activations and attention scores."""
    patches = (image_size // max(patch_size, 1)) ** 2
    return 4 * patches * (8 * embedding_length + patches * max(head_count, 1))


def pool_sequences(cells: int, num_parallel: int) -> int:
    """How many sequences a pool of `cells` serves at once by default."""
    return max(num_parallel, min(MAX_SEQUENCES, cells // CELLS_PER_SEQUENCE))


def _costs(info: ModelInfo, cells: int, ubatch: int, parallel: int, kv_type_bytes: float) -> _Costs:
    per_cell = [h * (info.key_length + info.value_length) for h in info.head_count_kv_per_layer]
    b, e, h, v = ubatch, info.embedding_length, info.head_count, info.vocab_size
    output_buffer = 4 * v * parallel
    return _Costs(
        layer_weights=info.layer_bytes + (info.output_bytes + info.tied_copy_bytes,),
        head_cpu_bytes=info.output_bytes,
        layer_kv=tuple(int(cells * n * kv_type_bytes) for n in per_cell) + (0,),
        input_bytes=info.input_bytes,
        graph_bytes=max(4 * b * (1 + 4 * e + cells * (1 + h)), 4 * b * (e + v)) + 8 * b * e,
        host_bytes=12 * b * e + output_buffer,
        output_buffer=output_buffer,
    )


def _assign(layer_count: int, ngl: int, fractions: Sequence[float]) -> list[int | None]:
    """llama.cpp's layer placement: the slot in `fractions` of each layer, None for the CPU."""
    start, active = max(layer_count - ngl, 0), min(ngl, layer_count)
    total, running, cumulative = sum(fractions), 0.0, []
    for f in fractions:
        running += f
        cumulative.append(running / total if total else 0.0)
    return [
        None if il < start or active == 0 else min(bisect_right(cumulative, (il - start) / active), len(fractions) - 1)
        for il in range(layer_count)
    ]


def _evaluate(costs: _Costs, devices: tuple[GpuDevice, ...], ngl: int, reserve: int) -> _Placement:
    fractions = _room(costs, devices, reserve)
    layers, weights, kv = [0] * len(devices), [0] * len(devices), [0] * len(devices)
    cpu_weights = cpu_kv = 0
    for il, slot in enumerate(_assign(costs.count, ngl, fractions)):
        if slot is None:
            cpu_weights += costs.head_cpu_bytes if il == costs.count - 1 else costs.layer_weights[il]
            cpu_kv += costs.layer_kv[il]
        else:
            layers[slot] += 1
            weights[slot] += costs.layer_weights[il]
            kv[slot] += costs.layer_kv[il]
    cpu_weights += costs.input_bytes
    cpu = cpu_weights + cpu_kv + costs.cpu_compute(ngl)
    return _Placement(
        ngl, devices, fractions, tuple(layers), tuple(weights), tuple(kv), cpu, cpu_weights, costs.graph_bytes, reserve
    )


def _room(costs: _Costs, devices: Sequence[GpuDevice], reserve: int) -> tuple[float, ...]:
    """Split fractions: what each GPU has left for layers after its reserve and compute buffer."""
    room = tuple(float(max(d.free_bytes - reserve - costs.graph_bytes, 0)) for d in devices)
    if sum(room) > 0:
        return room
    free = tuple(float(d.free_bytes) for d in devices)
    return free if sum(free) > 0 else (1.0,) * len(devices)


def _most_layers(costs: _Costs, devices: tuple[GpuDevice, ...], reserve: int) -> _Placement:
    """The most layers that fit on `devices`; ngl 0 when none does."""
    for ngl in range(costs.count, 0, -1):
        placement = _evaluate(costs, devices, ngl, reserve)
        if placement.fits:
            return placement
    return _evaluate(costs, (), 0, reserve)


def _choose(
    info: ModelInfo,
    inventory: GpuInventory,
    costs: _Costs,
    num_gpu: int,
    main_gpu: int | None,
    reserve: int,
    reasons: list[str],
) -> _Placement:
    count, cpu_only = costs.count, _evaluate(costs, (), 0, reserve)
    if num_gpu == 0:
        reasons.append("num_gpu=0: running on CPU as asked")
        return cpu_only
    if not inventory.devices:
        reasons.append(f"no GPU: {inventory.reason or 'no GPU found'}; running on CPU")
        return cpu_only
    if main_gpu is not None:
        device = inventory.device(main_gpu)
        if device is None:
            present = ", ".join(f"{d.index} ({d.name})" for d in inventory.devices)
            raise CompileError(f"main_gpu {main_gpu} does not exist", hint=f"GPUs on this machine: {present}")
        groups = [(device,)]
        reasons.append(f"main_gpu={main_gpu} pins the model to GPU {main_gpu} ({device.name})")
    else:
        # The fewest GPUs first, those with most free memory; llama.cpp fills them in CUDA order.
        by_free = sorted(inventory.devices, key=lambda d: (-d.free_bytes, d.index))
        groups = [tuple(sorted(by_free[:k], key=lambda d: d.index)) for k in range(1, len(by_free) + 1)]

    wanted = count if num_gpu == -1 else min(num_gpu, count)
    if num_gpu > count:
        reasons.append(f"num_gpu={num_gpu} is more than the model's {count} layers; offloading all {count}")
    for group in groups:
        placement = _evaluate(costs, group, wanted, reserve)
        if placement.fits:
            reasons.append(_fit_sentence(placement, count, info.block_count, num_gpu))
            return placement
    if num_gpu > 0:
        placement = _evaluate(costs, groups[-1], wanted, reserve)
        short = "; ".join(
            f"GPU {d.index} needs {human_bytes(placement.need(i))} with {human_bytes(d.free_bytes)} free"
            for i, d in enumerate(placement.devices)
            if placement.need(i) > d.free_bytes
        )
        reasons.append(
            f"num_gpu={num_gpu} puts {wanted} layers on GPU, more than fits ({short}); loading may run out of memory"
        )
        return placement
    # max() keeps the first of equals: the fewest GPUs that reach the most layers.
    placement = max((_most_layers(costs, group, reserve) for group in groups), key=lambda p: p.ngl)
    if placement.ngl:
        reasons.append(_fit_sentence(placement, count, info.block_count, num_gpu))
        return placement
    tight = _and([f"GPU {d.index} ({d.name}, {human_bytes(d.free_bytes)} free)" for d in groups[-1]])
    reasons.append(
        f"no layer fits on GPU: {tight}, less the {human_bytes(reserve)} reserve and the "
        f"{human_bytes(costs.graph_bytes)} compute buffer; running on CPU"
    )
    return cpu_only


def _fit_sentence(placement: _Placement, count: int, blocks: int, num_gpu: int) -> str:
    used = [d for i, d in enumerate(placement.devices) if placement.layers[i]]
    where = _and([f"GPU {d.index} ({d.name}, {human_bytes(d.free_bytes)} free)" for d in used])
    place = f"on {where}" if len(used) == 1 else f"across {where}, split by free memory"
    if placement.ngl >= count:
        return f"all {count} layers ({blocks} blocks + output) fit {place}"
    rest = f"the other {count - placement.ngl} run on CPU"
    if num_gpu > 0:
        return f"num_gpu={num_gpu} puts {placement.ngl} of {count} layers {place}; {rest}"
    return f"{placement.ngl} of {count} layers fit {place}; {rest}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _notes(info: ModelInfo, num_ctx: int, kv_cache_type: str) -> list[str]:
    notes = []
    if info.context_length and num_ctx > info.context_length:
        notes.append(
            f"num_ctx {num_ctx} is longer than the {info.context_length} tokens the model was trained on; "
            "answers may degrade past that"
        )
    if kv_cache_type not in ("f32", "f16", "bf16"):
        notes.append(
            f"kv_cache_type {kv_cache_type} needs flash attention: llama.cpp refuses a quantized V cache without it"
        )
    return notes
