"""Test doubles for the server's dependencies: a model source, a scheduler and an engine.

They follow the runtime's contracts (Models.spec/list/show, Scheduler.use/load/unload/running/close,
Engine.generate/embed) and record what the server asked of them, so the HTTP layer is tested
without loading a model. Specs are real RuntimeSpecs, so real prompt rendering runs.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from corral.compiler.plan import MemoryPlan
from corral.compiler.spec import LoadOptions, ModelSummary, RuntimeSpec, TemplateSpec, WeightsRef
from corral.store.errors import ModelNotFoundError
from corral.sources.stored import ModelListing, ShowInfo, details_of
from corral.engine.requests import Chunk, EmbedRequest, Embeddings, Final, GenerateRequest
from corral.runtime.scheduler import Lease, RunningModel

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# A Qwen-like template that renders tools itself.
CHATML_TOOLS = ("{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t.function.name }}\n{% endfor %}"
                "<|im_end|>\n{% endif %}" + CHATML)
MODIFIED = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def make_spec(name: str = "smol:latest", *, template: str = CHATML, system: str | None = None,
              stop: tuple[str, ...] = ("<|im_end|>",), options: dict | None = None) -> RuntimeSpec:
    size = 1000
    plan = MemoryPlan(backend="cpu", n_gpu_layers=0, layer_count=2, tensor_split=None, main_gpu=None, devices=(),
                      cpu_bytes=size, weights_bytes=size, kv_bytes=0, compute_bytes=0, total_bytes=size,
                      n_ctx=2048, num_ctx=2048, num_parallel=1, num_batch=512, kv_cache_type="f16",
                      fits=True, reasons=("no GPU: test",))
    return RuntimeSpec(
        name=name, weights=WeightsRef(path=f"/models/{name}.gguf", size=size), adapters=(),
        model=ModelSummary(architecture="llama", parameter_count=135_000_000, parameter_size="135M",
                           quantization="Q4_1", context_length=8192, block_count=2, embedding_length=8,
                           head_count=1, head_count_kv=1, vocab_size=10, bos_token=None, eos_token=None),
        template=TemplateSpec(kind="jinja", source=template, jinja=template, name=None, origin="gguf"),
        system=system, messages=(), stop=stop, parameters=dict(options or {}), options=dict(options or {}),
        load=LoadOptions(num_ctx=2048, num_batch=512, num_parallel=1, num_thread=0, use_mmap=True,
                         n_gpu_layers=0, main_gpu=None, tensor_split=None),
        plan=plan, licenses=("MIT",), requires=None, source=None)


class FakeModels:
    def __init__(self, *specs: RuntimeSpec):
        self.specs = {s.name: s for s in specs}

    def _find(self, name: str) -> RuntimeSpec:
        spec = self.specs.get(name) or self.specs.get(f"{name}:latest")
        if spec is None:
            raise ModelNotFoundError(name)
        return spec

    def spec(self, name: str) -> RuntimeSpec:
        return self._find(name)

    def list(self) -> list[ModelListing]:
        return [ModelListing(s.name, s.name, "ab" * 32, s.weights.size, MODIFIED, details_of(s))
                for s in self.specs.values()]

    def show(self, name: str) -> ShowInfo:
        spec = self._find(name)
        return ShowInfo(modelfile=f"FROM {spec.weights.path}\n", parameters="", template=spec.template.source,
                        system=spec.system or "", license="MIT", details=details_of(spec),
                        model_info={"general.architecture": "llama"}, capabilities=["completion"],
                        modified_at=MODIFIED, spec=spec)


@dataclass
class FakeEngine:
    """Answers every generation with `pieces`, one per step, `delay` seconds apart."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    delay: float = 0.0
    done_reason: str = "stop"
    requests: list[GenerateRequest] = field(default_factory=list)
    finished: int = 0
    closed_early: int = 0
    fail_after: Exception | None = None  # raised after the first piece

    async def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk | Final]:
        self.requests.append(req)
        done = False
        try:
            for i, piece in enumerate(self.pieces):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield Chunk(req.id, piece)
                if i == 0 and self.fail_after is not None:
                    raise self.fail_after
            done = True
            self.finished += 1
            yield Final(req.id, self.done_reason, 7, 1_000, len(self.pieces), 2_000)
        finally:
            if not done:
                self.closed_early += 1

    async def embed(self, req: EmbedRequest) -> Embeddings:
        vector = (0.6, 0.8, 0.0) if req.normalize else (3.0, 4.0, 0.0)
        return Embeddings(req.id, tuple(vector for _ in req.inputs), 2 * len(req.inputs), 5_000)


class FakeScheduler:
    """Hands out leases on one FakeEngine; counts them, records keep_alive, loads and unloads."""

    def __init__(self, models: FakeModels, engine: FakeEngine | None = None):
        self.models = models
        self.engine = engine or FakeEngine()
        self.in_use = 0
        self.keep_alives: list[float | None] = []
        self.loaded: dict[str, float | None] = {}
        self.unloaded: list[str] = []
        self.closed = False

    @asynccontextmanager
    async def use(self, name: str, keep_alive: float | None = None,
                  spec: RuntimeSpec | None = None) -> AsyncIterator[Lease]:
        spec = spec or self.models.spec(name)
        self.keep_alives.append(keep_alive)
        self.loaded[spec.name] = keep_alive
        self.in_use += 1
        try:
            yield Lease(spec, self.engine, 0)
        finally:
            self.in_use -= 1

    async def load(self, name: str, keep_alive: float | None = None) -> int:
        async with self.use(name, keep_alive):
            return 0

    async def unload(self, name: str) -> bool:
        self.unloaded.append(name)
        return self.loaded.pop(self.models.spec(name).name, "missing") != "missing"

    def running(self) -> list[RunningModel]:
        out = []
        for name in self.loaded:
            spec = self.models.spec(name)
            out.append(RunningModel(name, spec.digest, spec.plan.total_bytes, 0, None, spec, self.in_use))
        return out

    async def close(self) -> None:
        self.closed = True


class Broken:
    """Every method call (sync or async, and `use`) raises `error`: the error-shape tests' dependency."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, name: str) -> Any:
        if name in ("close",):
            async def close() -> None:
                return None
            return close

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error
        return fail
