"""Memory plans on injected GPU readings, the compute-buffer calibration, and the GPU probes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.compiler.errors import CompileError
from corral.compiler.gguf.info import ModelInfo, read_model_info
from corral.machine.gpus import GpuDevice, GpuInventory, NvmlProbe
from corral.compiler.plan import GPU_RESERVE_BYTES, MemoryPlan, human_bytes, plan_memory, pool_sequences

MiB, GiB = 1 << 20, 1 << 30


def fake_model(
    *,
    layers: int = 30,
    layer_bytes: int = 2 * MiB,
    input_bytes: int = 28 * MiB,
    output_bytes: int = 1 * MiB,
    tied_copy: int = 28 * MiB,
    embd: int = 576,
    heads: int = 9,
    kv_heads: int = 3,
    head_dim: int = 64,
    vocab: int = 49152,
    context: int = 8192,
) -> ModelInfo:
    """A ModelInfo with SmolLM2's shape by default; sizes are round so the sentences are predictable."""
    return ModelInfo(
        path="/models/fake.gguf", file_size=0, gguf_version=3, architecture="llama", name="fake",
        parameter_count=0, parameter_size="0", quantization="Q4_1", file_type=3, context_length=context,
        block_count=layers, embedding_length=embd, feed_forward_length=None, head_count=heads,
        head_count_kv=kv_heads, head_count_kv_per_layer=(kv_heads,) * layers, key_length=head_dim,
        value_length=head_dim, sliding_window=None, vocab_size=vocab, chat_template=None, bos_token_id=None,
        eos_token_id=None, bos_token=None, eos_token=None, layer_bytes=(layer_bytes,) * layers,
        input_bytes=input_bytes, output_bytes=output_bytes, tied_embeddings=tied_copy > 0,
        tied_copy_bytes=tied_copy, tensors=(),
    )  # fmt: skip


SMALL = fake_model()
# A 70B-like model: 40 blocks of 1 GiB, a 2 GiB head, 8 KV heads of 128: 32 MiB of KV per layer at 8192.
BIG = fake_model(
    layers=40, layer_bytes=GiB, input_bytes=GiB, output_bytes=2 * GiB, tied_copy=0,
    embd=8192, heads=64, kv_heads=8, head_dim=128, vocab=128256,
)  # fmt: skip


def graph(info: ModelInfo, cells: int, batch: int = 512) -> int:
    """The documented compute-buffer formula, restated so a change to it is a visible decision."""
    b, e, h, v = min(batch, cells), info.embedding_length, info.head_count, info.vocab_size
    return max(4 * b * (1 + 4 * e + cells * (1 + h)), 4 * b * (e + v)) + 8 * b * e


def gpus(*devices: tuple[str, float, float]) -> GpuInventory:
    """GPUs as (name, total GiB, free GiB), numbered in order."""
    return GpuInventory(
        devices=tuple(
            GpuDevice(index=i, name=n, total_bytes=int(t * GiB), free_bytes=int(f * GiB)) for i, (n, t, f) in enumerate(devices)
        )
    )


H100 = ("NVIDIA H100 80GB HBM3", 80, 79.1)
NO_NVML = GpuInventory(reason="NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver installed?)")

# name, model, inventory, options, expected: backend, n_gpu_layers, tensor_split, main_gpu, layers per GPU, reasons
PLANS = [
    (
        "one GPU fits everything", SMALL, gpus(H100), {},
        "cuda", 31, (1.0,), 0, {0: 31},
        ("all 31 layers (30 blocks + output) fit on GPU 0 (NVIDIA H100 80GB HBM3, 79.1 GiB free)",),
    ),
    (
        "the GPU with most free memory is preferred", SMALL, gpus(("A", 16, 0.5), ("B", 16, 10)), {},
        "cuda", 31, (0.0, 1.0), 1, {1: 31},
        ("all 31 layers (30 blocks + output) fit on GPU 1 (B, 10.0 GiB free)",),
    ),
    (
        "two unequal GPUs split by free memory", BIG, gpus(("A", 48, 40), ("B", 24, 20)), {},
        "cuda", 41, (0.6758, 0.3242), None, {0: 28, 1: 13},
        ("all 41 layers (40 blocks + output) fit across GPU 0 (A, 40.0 GiB free) and GPU 1 (B, 20.0 GiB free), "
         "split by free memory",),
    ),
    (
        "fits nowhere", BIG, gpus(("T4", 16, 1)), {},
        "cpu", 0, None, None, {},
        ("no layer fits on GPU: GPU 0 (T4, 1.0 GiB free), less the 457.0 MiB reserve and the 1.1 GiB compute buffer; "
         "running on CPU",),
    ),
    (
        "partial offload", BIG, gpus(("RTX", 24, 24)), {},
        "cuda", 20, (1.0,), 0, {0: 20},
        ("20 of 41 layers fit on GPU 0 (RTX, 24.0 GiB free); the other 21 run on CPU",),
    ),
    (
        "num_gpu overrides the automatic count", SMALL, gpus(H100), {"num_gpu": 5},
        "cuda", 5, (1.0,), 0, {0: 5},
        ("num_gpu=5 puts 5 of 31 layers on GPU 0 (NVIDIA H100 80GB HBM3, 79.1 GiB free); the other 26 run on CPU",),
    ),
    (
        "num_gpu above the layer count", SMALL, gpus(H100), {"num_gpu": 99},
        "cuda", 31, (1.0,), 0, {0: 31},
        ("num_gpu=99 is more than the model's 31 layers; offloading all 31",
         "all 31 layers (30 blocks + output) fit on GPU 0 (NVIDIA H100 80GB HBM3, 79.1 GiB free)"),
    ),
    (
        "num_gpu=0", SMALL, gpus(H100), {"num_gpu": 0},
        "cpu", 0, None, None, {},
        ("num_gpu=0: running on CPU as asked",),
    ),
    (
        "main_gpu pins one GPU", SMALL, gpus(("A", 80, 79), ("B", 40, 30)), {"main_gpu": 1},
        "cuda", 31, (0.0, 1.0), 1, {1: 31},
        ("main_gpu=1 pins the model to GPU 1 (B)", "all 31 layers (30 blocks + output) fit on GPU 1 (B, 30.0 GiB free)"),
    ),
    (
        "main_gpu too small for everything", BIG, gpus(("A", 80, 79), ("B", 24, 24)), {"main_gpu": 1},
        "cuda", 20, (0.0, 1.0), 1, {1: 20},
        ("main_gpu=1 pins the model to GPU 1 (B)", "20 of 41 layers fit on GPU 1 (B, 24.0 GiB free); the other 21 run on CPU"),
    ),
    (
        "no NVML", SMALL, NO_NVML, {},
        "cpu", 0, None, None, {},
        ("no GPU: NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver installed?); running on CPU",),
    ),
    (
        "no GPU found", SMALL, GpuInventory(reason="no NVIDIA GPU found"), {},
        "cpu", 0, None, None, {},
        ("no GPU: no NVIDIA GPU found; running on CPU",),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "info, inventory, options, backend, ngl, split, main_gpu, layers, reasons",
    [p[1:] for p in PLANS],
    ids=[p[0] for p in PLANS],
)
def test_placement(info, inventory, options, backend, ngl, split, main_gpu, layers, reasons) -> None:
    plan = plan_memory(info, inventory, num_ctx=8192, **options)
    assert (plan.backend, plan.n_gpu_layers, plan.main_gpu) == (backend, ngl, main_gpu)
    assert plan.tensor_split == split
    assert {d.index: d.layers for d in plan.devices} == layers
    assert plan.reasons == reasons
    assert plan.fits
    for device in plan.devices:
        assert device.total_bytes + GPU_RESERVE_BYTES <= device.free_bytes


def test_split_follows_the_room_each_gpu_has_left() -> None:
    plan = plan_memory(BIG, gpus(("A", 48, 40), ("B", 24, 20)), num_ctx=8192)
    room = [f * GiB - GPU_RESERVE_BYTES - graph(BIG, 8192) for f in (40, 20)]
    assert plan.tensor_split == pytest.approx([r / sum(room) for r in room], abs=1e-4)


def test_explicit_num_gpu_that_does_not_fit_is_honoured_and_flagged() -> None:
    plan = plan_memory(BIG, gpus(("RTX", 24, 24)), num_ctx=8192, num_gpu=41)
    assert (plan.backend, plan.n_gpu_layers, plan.fits) == ("cuda", 41, False)
    assert plan.reasons == (
        "num_gpu=41 puts 41 layers on GPU, more than fits (GPU 0 needs 44.8 GiB with 24.0 GiB free); "
        "loading may run out of memory",
    )


@pytest.mark.parametrize(
    "options, message, hint",
    [
        ({"main_gpu": 2}, "main_gpu 2 does not exist", "GPUs on this machine: 0 (A), 1 (B)"),
        ({"kv_cache_type": "q3_k"}, "unknown kv_cache_type 'q3_k'", "use one of f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl"),
    ],
)
def test_user_errors(options: dict, message: str, hint: str) -> None:
    with pytest.raises(CompileError) as caught:
        plan_memory(SMALL, gpus(("A", 8, 8), ("B", 8, 8)), num_ctx=2048, **options)
    assert (caught.value.message, caught.value.hint) == (message, hint)


@pytest.mark.parametrize("options", [{"num_ctx": 0}, {"num_ctx": 512, "num_parallel": 0}, {"num_ctx": 512, "num_gpu": -2}])
def test_invalid_arguments(options: dict) -> None:
    with pytest.raises(ValueError):
        plan_memory(SMALL, NO_NVML, **options)


# --- KV cache and compute buffer arithmetic -----------------------------------------------------


@pytest.mark.parametrize(
    "num_ctx, num_parallel, kv_type, cells, kv_bytes",
    [
        (512, 1, "f16", 512, 11_796_480),  # llama.cpp: "CPU KV buffer size = 11.25 MiB" for SmolLM2
        (2048, 1, "f16", 2048, 45 * MiB),
        (2048, 4, "f16", 8192, 180 * MiB),  # one unified cache for all slots
        (1000, 1, "f16", 1024, 22.5 * MiB),  # rounded up to a multiple of 256, as llama.cpp does
        (2048, 1, "f32", 2048, 90 * MiB),
        (2048, 1, "q8_0", 2048, 45 * MiB * 17 // 32),
        (2048, 1, "q4_0", 2048, 45 * MiB * 9 // 32),
    ],
)
def test_kv_cache(num_ctx: int, num_parallel: int, kv_type: str, cells: int, kv_bytes: int) -> None:
    plan = plan_memory(SMALL, NO_NVML, num_ctx=num_ctx, num_parallel=num_parallel, kv_cache_type=kv_type)
    assert (plan.n_ctx, plan.kv_bytes) == (cells, kv_bytes)


@pytest.mark.parametrize(
    "info, num_ctx, num_batch, llama_cpp_mib",
    [
        # "CPU compute buffer size" + "CPU output buffer size" logged by llama.cpp (llama-cpp-python 0.3.36)
        (SMALL, 512, 512, 98.25 + 0.19),
        (SMALL, 512, 128, 24.56 + 0.19),
        (SMALL, 2048, 512, 99.38 + 0.19),
        (SMALL, 2048, 128, 24.84 + 0.19),
        (SMALL, 8192, 512, 166.38 + 0.19),
        (SMALL, 8192, 128, 41.60 + 0.19),
        (fake_model(layers=18, embd=640, heads=4, kv_heads=1, head_dim=256, vocab=262144), 2048, 512, 514.50 + 1.00),
    ],
    ids=["smol-512-512", "smol-512-128", "smol-2048-512", "smol-2048-128", "smol-8192-512", "smol-8192-128", "gemma3"],
)
def test_compute_buffer_matches_llama_cpp(info: ModelInfo, num_ctx: int, num_batch: int, llama_cpp_mib: float) -> None:
    """At most 0.1% below what llama.cpp allocates (its log rounds to 0.01 MiB), at most 2% above
    (measured on a one-sequence context: the logits buffer holds a row per sequence)."""
    plan = plan_memory(info, NO_NVML, num_ctx=num_ctx, num_batch=num_batch, max_sequences=1)
    assert llama_cpp_mib * 0.999 <= plan.compute_bytes / MiB <= llama_cpp_mib * 1.02


def test_tied_head_costs_a_copy_only_on_gpu() -> None:
    cpu = plan_memory(SMALL, NO_NVML, num_ctx=512)
    gpu = plan_memory(SMALL, gpus(H100), num_ctx=512)
    assert cpu.weights_bytes == 28 * MiB + 30 * 2 * MiB + 1 * MiB
    assert gpu.weights_bytes == cpu.weights_bytes + 28 * MiB
    assert gpu.devices[0].weights_bytes == 30 * 2 * MiB + 1 * MiB + 28 * MiB
    assert gpu.cpu_bytes < 40 * MiB  # the embedding and the host buffers only


@pytest.mark.parametrize(
    "info, options, note",
    [
        (SMALL, {"num_ctx": 16384}, "num_ctx 16384 is longer than the 8192 tokens the model was trained on; answers may degrade past that"),
        (SMALL, {"num_ctx": 2048, "kv_cache_type": "q8_0"}, "kv_cache_type q8_0 needs flash attention: llama.cpp refuses a quantized V cache without it"),
    ],
)
def test_notes(info: ModelInfo, options: dict, note: str) -> None:
    assert note in plan_memory(info, NO_NVML, **options).reasons


def test_rows() -> None:
    plan = plan_memory(BIG, gpus(("A", 48, 40), ("B", 24, 20)), num_ctx=8192)
    rows = dict(plan.rows())
    assert rows["backend"] == "CUDA" and rows["GPU layers"] == "41/41"
    assert rows["tensor split"] == "0.68, 0.32"
    assert rows["GPU 0 (A)"].endswith("of 40.0 GiB free, 28 layers")
    assert rows["KV cache"] == "1.2 GiB (8192 cells, f16)"
    assert rows["total"] == human_bytes(plan.total_bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in plan.rows())


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (98 * MiB, "98.0 MiB"), (int(79.1 * GiB), "79.1 GiB")])
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.model
def test_real_smollm2_plan(smollm2_gguf: Path) -> None:
    """llama.cpp logs 92.10 MiB of weights, 45.00 MiB of KV and 99.38 + 0.19 MiB of buffers here."""
    plan = plan_memory(read_model_info(smollm2_gguf), NO_NVML, num_ctx=2048, max_sequences=1)
    assert plan.weights_bytes == 96_576_768
    assert plan.kv_bytes == 45 * MiB
    assert plan.total_bytes / MiB == pytest.approx(92.10 + 45.00 + 99.38 + 0.19, rel=0.005)


@pytest.mark.parametrize("num_ctx, num_parallel, max_sequences, cells, sequences", [
    (4096, 4, None, 16384, 32),  # the default: four full-length sequences' cells, 32 at once on the CPU
    (512, 1, None, 512, 16),  # a small pool: one sequence per 32 cells
    (256, 1, None, 256, 8),
    (128, 4, None, 512, 16),
    (4096, 4, 8, 16384, 8),  # CORRAL_NUM_PARALLEL caps the sequences
    (300, 1, None, 512, 16),  # cells round up to llama.cpp's 256
])
def test_the_pool_and_how_many_sequences_share_it(num_ctx: int, num_parallel: int, max_sequences: int | None,
                                                  cells: int, sequences: int) -> None:
    plan = plan_memory(SMALL, NO_NVML, num_ctx=num_ctx, num_parallel=num_parallel, max_sequences=max_sequences)
    assert (plan.n_ctx, plan.max_sequences, plan.sequences) == (cells, sequences, sequences)
    assert min(pool_sequences(cells, num_parallel), 32) == (sequences if max_sequences is None else 32)


def test_the_cpu_plan_costs_the_logits_of_the_sequences_it_serves() -> None:
    """llama.cpp's logits buffer holds a row of 4 x vocabulary bytes per sequence the context serves:
    the CPU plan's 32, not the 64 it would have on a GPU."""
    default = plan_memory(SMALL, NO_NVML, num_ctx=4096, num_parallel=4)
    asked = plan_memory(SMALL, NO_NVML, num_ctx=4096, num_parallel=4, max_sequences=32)
    assert default.max_sequences == 32
    assert (default.compute_bytes, default.total_bytes) == (asked.compute_bytes, asked.total_bytes)


def test_on_a_gpu_64_sequences_share_the_pool() -> None:
    plan = plan_memory(SMALL, gpus(H100), num_ctx=4096, num_parallel=4)
    assert (plan.backend, plan.max_sequences) == ("cuda", 64)


def test_the_plan_shows_the_pool() -> None:
    plan = plan_memory(SMALL, NO_NVML, num_ctx=2048, num_parallel=4)
    assert dict(plan.rows())["KV pool"] == "8192 cells shared by up to 32 sequences; holds 4 of the full 2048 tokens"


# --- Properties ---------------------------------------------------------------------------------

gpu_readings = st.lists(st.tuples(st.integers(0, 96 * GiB), st.integers(0, 96 * GiB)), max_size=4)


@given(
    readings=gpu_readings,
    layers=st.integers(1, 80),
    layer_mib=st.integers(1, 4096),
    num_ctx=st.integers(1, 131072),
    num_parallel=st.integers(1, 8),
    num_gpu=st.integers(-1, 100),
)
@settings(max_examples=200, deadline=None)
def test_plan_invariants(readings, layers, layer_mib, num_ctx, num_parallel, num_gpu) -> None:
    devices = tuple(
        GpuDevice(index=i, name=f"G{i}", total_bytes=max(a, b), free_bytes=min(a, b)) for i, (a, b) in enumerate(readings)
    )
    inventory = GpuInventory(devices=devices, reason=None if devices else "no NVIDIA GPU found")
    info = fake_model(layers=layers, layer_bytes=layer_mib * MiB)
    plan: MemoryPlan = plan_memory(info, inventory, num_ctx=num_ctx, num_parallel=num_parallel, num_gpu=num_gpu)
    assert 0 <= plan.n_gpu_layers <= layers + 1
    assert (plan.backend == "cuda") == (plan.n_gpu_layers > 0)
    assert plan.total_bytes == plan.weights_bytes + plan.kv_bytes + plan.compute_bytes
    assert plan.total_bytes == plan.cpu_bytes + sum(d.total_bytes for d in plan.devices)
    assert sum(d.layers for d in plan.devices) == plan.n_gpu_layers
    assert plan.reasons
    if plan.tensor_split is not None:
        assert len(plan.tensor_split) == len(devices) and sum(plan.tensor_split) == pytest.approx(1, abs=1e-3)
    if plan.fits:
        assert all(d.total_bytes + GPU_RESERVE_BYTES <= d.free_bytes for d in plan.devices)
    if num_gpu == -1 and devices and plan.n_gpu_layers < layers + 1:
        # automatic mode offloads as much as fits: one more layer would not
        more = plan_memory(info, inventory, num_ctx=num_ctx, num_parallel=num_parallel, num_gpu=plan.n_gpu_layers + 1)
        assert not more.fits


# --- GPU probes ---------------------------------------------------------------------------------


class FakeNvml:
    """Just enough of pynvml for NvmlProbe, with the error classes it recognises."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):
        pass

    class NVMLError_DriverNotLoaded(NVMLError):
        pass

    def __init__(self, devices=(), init_error: Exception | None = None, broken: tuple[int, ...] = ()):
        self.devices, self.init_error, self.broken, self.shutdowns = list(devices), init_error, broken, 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.broken:
            raise self.NVMLError("Unknown Error")
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.devices[h][0].encode()

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}{h}{h}-uuid"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=self.devices[h][1], free=self.devices[h][2])


TWO = [("NVIDIA A100", 80 * GiB, 70 * GiB), ("NVIDIA L4", 24 * GiB, 20 * GiB)]


@pytest.mark.parametrize(
    "nvml, env, names, reason",
    [
        (FakeNvml(init_error=FakeNvml.NVMLError_LibraryNotFound()), {}, [],
         "NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver installed?)"),
        (FakeNvml(init_error=FakeNvml.NVMLError_DriverNotLoaded()), {}, [], "NVML not available: the NVIDIA driver is not loaded"),
        (FakeNvml(init_error=OSError("libnvidia-ml.so.1: cannot open")), {}, [], "NVML not available: libnvidia-ml.so.1: cannot open"),
        (FakeNvml([]), {}, [], "no NVIDIA GPU found"),
        (FakeNvml(TWO), {}, ["NVIDIA A100", "NVIDIA L4"], None),

        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": "1"}, ["NVIDIA L4"], None),
        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": "1,0"}, ["NVIDIA L4", "NVIDIA A100"], None),
        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": "GPU-111"}, ["NVIDIA L4"], None),
        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": "0,7,1"}, ["NVIDIA A100"], None),  # CUDA stops at a bad entry
        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": ""}, [], "CUDA_VISIBLE_DEVICES='' hides every GPU"),
        (FakeNvml(TWO), {"CUDA_VISIBLE_DEVICES": "-1"}, [], "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
    ],
)  # fmt: skip
def test_nvml_probe(nvml: FakeNvml, env: dict, names: list[str], reason: str | None) -> None:
    inventory = NvmlProbe(nvml=nvml, environ=env).read()
    assert [d.name for d in inventory.devices] == names
    assert [d.index for d in inventory.devices] == list(range(len(names)))  # CUDA's numbering
    assert inventory.reason == reason
    if nvml.init_error is None:
        assert nvml.shutdowns == 1


def test_an_unreadable_gpu_is_skipped_and_keeps_the_numbering() -> None:
    """CUDA still counts a GPU NVML cannot read, so the next one stays number 1."""
    inventory = NvmlProbe(nvml=FakeNvml(TWO, broken=(0,)), environ={}).read()
    assert [(d.index, d.name) for d in inventory.devices] == [(1, "NVIDIA L4")]
    assert inventory.reason == "GPU 0 skipped: Unknown Error"


def test_nvml_probe_reads_memory() -> None:
    inventory = NvmlProbe(nvml=FakeNvml(TWO), environ={}).read()
    assert inventory.devices[0] == GpuDevice(
        index=0, name="NVIDIA A100", total_bytes=80 * GiB, free_bytes=70 * GiB, uuid="GPU-000-uuid"
    )


def test_real_nvml_never_raises() -> None:
    inventory = NvmlProbe().read()
    assert inventory.devices or inventory.reason
    for device in inventory.devices:
        assert 0 <= device.free_bytes <= device.total_bytes and device.total_bytes > 0
