"""IR -> RuntimeSpec: resolve the weights, settle the template and stops, plan the memory.

`compile_definition` reads files only through the GGUF reader and the resolver it is given, and
the machine only through the readings in its `CompileOptions` (taken once, by the caller), so the
same definition, files and readings always give the same spec (and digest).

A FROM whose GGUF is the first shard of a split one brings the other shards into the spec
(`RuntimeSpec.splits`, in order): a stored base model's further model layers, the store's (through
the resolver's optional `split_shards`), or the files beside it named as llama.cpp names shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.compiler.templates.chat import compile_template, known_stops, recognise
from corral.compiler.templates.library import library_template
from corral.compiler.errors import CompileError, GGUFError, WeightsError
from corral.compiler.gguf.check import GGUFHeader, check_gguf
from corral.compiler.gguf.info import ModelInfo, model_info_from_header, read_split_info, split_count
from corral.machine.gpus import GpuInventory
from corral.compiler.plan import draft_total, plan_memory, vision_allowance
from corral.compiler.resolve import (DIGEST, SHARD_NAME, ModelResolver, ParentModel, expand, find_weights,
                                     looks_like_path, resolve_model, weights_ref)
from corral.compiler.spec import (THINKING_PARSERS, ChatMessage, LoadOptions, ModelSummary, RuntimeSpec,
                                  TemplateSpec, WeightsRef)
from corral.dsl.ir import ModelDefinition
from corral.dsl.parameters import LOAD_TIME, ParamValue
from corral.dsl.span import Span

# Ollama's template when neither the definition nor the GGUF gives one.
DEFAULT_TEMPLATE = "{{ .Prompt }}"
# GGUFs of these architectures often ship without a chat template; Ollama's own fits them.
ARCHITECTURE_TEMPLATES = {"gemma3": "gemma3-instruct", "gemma2": "gemma-instruct", "gemma": "gemma-instruct"}
DEFAULT_NUM_CTX = 4096
# llama.cpp's server picks 4 slots by default; more rarely pays on a single machine's cores.
AUTO_PARALLEL_CAP = 4


@dataclass(frozen=True)
class CompileOptions:
    """Machine-level settings that are not part of a definition, with the machine's readings.

    The caller reads the machine (`NvmlProbe().read()`, `available_memory()`) once and passes the
    readings here; compiling never reads the machine itself, so a recompile of the same definition
    with the same options gives the same spec whatever the machine is doing at that moment.
    """

    inventory: GpuInventory
    memory_bytes: int  # the host's available memory: bounds a CPU plan's automatic slot count
    num_parallel: int = 0  # 0: as many slots as the memory plan allows, up to AUTO_PARALLEL_CAP
    default_num_ctx: int = DEFAULT_NUM_CTX


def compile_definition(d: ModelDefinition, *, name: str, base_dir: Path, resolver: ModelResolver,
                       options: CompileOptions, source: str | None = None) -> RuntimeSpec:
    """Compile a definition into a runnable spec; raises CompileError subclasses with spans."""
    base, weights_path, weights = _resolve_from(d, base_dir, resolver)
    info, splits = _model_info(weights_path, base, resolver, d.from_.span)
    adapters = (base.adapters if base else ()) + tuple(_adapter(a.value, a.span, base_dir) for a in d.adapters)
    projector = (_projector(d.projector.value, d.projector.span, base_dir) if d.projector is not None
                 else base.projector if base else None)
    vision = _vision_bytes(projector) if projector is not None else 0

    params: dict[str, ParamValue] = dict(base.parameters) if base else {}
    params.update({p.name: p.value for p in d.parameters})

    template = _template(d, base, info)
    stop = _stops(params, template, info)
    num_ctx = int(params.get("num_ctx") or min(options.default_num_ctx, info.context_length or options.default_num_ctx))
    clamped = _clamped_num_ctx(num_ctx, info.context_length)
    if clamped is not None:
        num_ctx = clamped[0]
    draft, draft_header = _draft(d, base_dir, resolver, weights_path) or (None, None)
    draft_bytes = (draft_total(model_info_from_header(draft_header), num_ctx=num_ctx,
                               num_batch=int(params.get("num_batch", 512))) if draft_header is not None else 0)

    def planned(slots: int):
        return plan_memory(info, options.inventory, num_ctx=num_ctx, num_parallel=slots,
                           num_batch=int(params.get("num_batch", 512)), num_gpu=int(params.get("num_gpu", -1)),
                           main_gpu=_opt_int(params.get("main_gpu")),
                           max_sequences=options.num_parallel or None,  # an explicit cap, else the pool's
                           vision_bytes=vision, draft_bytes=draft_bytes)

    plan = planned(options.num_parallel) if options.num_parallel > 0 else _auto_slots(planned, options)
    if clamped is not None:
        plan = plan.model_copy(update={"reasons": (clamped[1], *plan.reasons)})
    load = LoadOptions(
        num_ctx=num_ctx, num_batch=int(params.get("num_batch", 512)), num_parallel=plan.num_parallel,
        num_thread=int(params.get("num_thread", 0)), use_mmap=bool(params.get("use_mmap", True)),
        n_gpu_layers=plan.n_gpu_layers, main_gpu=plan.main_gpu, tensor_split=plan.tensor_split,
    )
    messages = tuple(ChatMessage(role=m.role, content=m.content) for m in d.messages) or (base.messages if base else ())
    system = d.system.value if d.system is not None else (base.system if base else None)
    return RuntimeSpec(
        name=name, weights=weights, splits=splits, adapters=adapters, model=_summary(info), template=template,
        system=system, messages=messages, stop=stop, parameters=params,
        options={k: v for k, v in params.items() if k not in LOAD_TIME and k != "stop"},
        load=load, plan=plan,
        licenses=(base.licenses if base else ()) + tuple(x.value for x in d.licenses),
        requires=d.requires.value if d.requires else None, source=source, parser=_parser(d),
        projector=projector, draft=draft,
    )


def _clamped_num_ctx(num_ctx: int, trained: int | None) -> tuple[int, str] | None:
    """(the trained length, why) when `num_ctx` asks for more than the model was trained on.

    llama.cpp would allocate it, but positions past training are untrained (Corral sets no RoPE
    scaling), so Ollama clamps to the trained length; so does Corral, saying so in the plan.
    """
    if not trained or num_ctx <= trained:
        return None
    return trained, (f"num_ctx {num_ctx} is longer than the {trained} tokens the model was trained on; "
                     f"clamped to {trained}")


def _draft(d: ModelDefinition, base_dir: Path, resolver: ModelResolver,
           target: Path) -> tuple[WeightsRef, GGUFHeader] | None:
    """The DRAFT model's weights (a GGUF path or a model name) and header, checked to share the
    model's vocabulary: speculative decoding compares the two models' token ids."""
    if d.draft is None:
        return None
    value, span = d.draft.value.strip(), d.draft.span
    path = expand(value, base_dir)
    if path.exists() or looks_like_path(value):
        ref = weights_ref(find_weights(path, span, what="DRAFT").resolve())
    else:
        ref = resolve_model(resolver, value, span).weights
    header = _header(ref.path, span)
    theirs, mine = _vocabulary(header.metadata), _vocabulary(check_gguf(target).metadata)
    if theirs != mine:
        raise CompileError(f"the DRAFT model's vocabulary ({theirs[0]}, {theirs[1]} tokens) is not the "
                           f"model's ({mine[0]}, {mine[1]} tokens)", span,
                           hint="a draft model must use the same tokenizer, e.g. a smaller model of the same family")
    return ref, header


def _vocabulary(meta: dict) -> tuple[str, int]:
    """A GGUF's tokenizer model and vocabulary size, from its metadata."""
    tokens = meta.get("tokenizer.ggml.tokens")
    return str(meta.get("tokenizer.ggml.model", "none")), getattr(tokens, "length", 0)


def _parser(d: ModelDefinition) -> str | None:
    """The definition's PARSER, checked against the formats Corral parses."""
    if d.parser is None:
        return None
    name = d.parser.value.strip().lower()
    if name not in THINKING_PARSERS:
        raise CompileError(f"unknown PARSER {d.parser.value!r}", d.parser.span,
                           hint="one of " + ", ".join(THINKING_PARSERS))
    return name


def _auto_slots(planned, options: CompileOptions):
    """The most slots (up to the cap) whose plan keeps every layer where one slot would put it and,
    on the CPU, leaves at least half the available memory to the rest of the machine."""
    one = planned(1)
    budget = options.memory_bytes
    for slots in range(AUTO_PARALLEL_CAP, 1, -1):
        plan = planned(slots)
        if plan.fits and plan.n_gpu_layers >= one.n_gpu_layers and plan.cpu_bytes <= budget // 2:
            return plan.model_copy(update={"reasons": plan.reasons + (
                f"{slots} parallel slots: the most (up to {AUTO_PARALLEL_CAP}) the memory allows; "
                "set num_parallel or CORRAL_NUM_PARALLEL to choose",)})
    return one


def _resolve_from(d: ModelDefinition, base_dir: Path, resolver: ModelResolver
                  ) -> tuple[ParentModel | None, Path, WeightsRef]:
    value, span = d.from_.value, d.from_.span
    digest = DIGEST.match(value)
    if digest:
        path = resolver.blob(f"sha256:{digest.group(1).lower()}")
        if path is None:
            raise WeightsError(f"blob {value} is not in the store", span,
                               hint="upload it with POST /api/blobs, or point FROM at the file")
        return None, path, weights_ref(path, f"sha256:{digest.group(1).lower()}")
    path = expand(value, base_dir)
    if path.exists() or looks_like_path(value):
        found = find_weights(path, span)
        return None, found, weights_ref(found.resolve())
    base = resolve_model(resolver, value, span)
    return base, Path(base.weights.path), base.weights


def _model_info(path: Path, base: ParentModel | None, resolver: ModelResolver, span: Span | None
                ) -> tuple[ModelInfo, tuple[WeightsRef, ...]]:
    """The model in the weights file, and when its header says it is the first shard of a split
    GGUF, the further shards (found by `_find_splits`) and the model all of them make."""
    try:
        header = check_gguf(path)
        count = split_count(header)
        if count == 1:
            return model_info_from_header(header), ()
        number = header.metadata.get("split.no")
        if isinstance(number, int) and number != 0:
            raise WeightsError(f"{path.name} is shard {number + 1} of {count} of a split GGUF",
                               hint="point FROM at the first shard (NAME-00001-of-...gguf), which holds the metadata")
        splits = _find_splits(path, count, base, resolver)
        return read_split_info([path, *(Path(s.path) for s in splits)]), splits
    except WeightsError as e:
        raise type(e)(e.message, span, e.hint) from None


def _find_splits(first: Path, count: int, base: ParentModel | None, resolver: ModelResolver
                 ) -> tuple[WeightsRef, ...]:
    """A split GGUF's shards after `first`: the base model's (its manifest's model layers), the
    resolver's (a store blob's), else the files beside it named as llama.cpp names shards
    (`NAME-00002-of-00003.gguf`); WeightsError when they cannot be found."""
    if base is not None and base.splits:
        return base.splits
    finder = getattr(resolver, "split_shards", None)
    found = finder(first) if finder is not None else None
    if found:
        return tuple(found)
    named = SHARD_NAME.match(first.name)
    if named is None or int(named.group(2)) != 1 or int(named.group(3)) != count:
        raise WeightsError(f"{first.name} is the first of {count} shards of a split GGUF, and Corral finds the "
                           f"others by their names", hint=f"keep the shards together with llama.cpp's names "
                           f"(NAME-00001-of-{count:05d}.gguf, NAME-00002-of-{count:05d}.gguf, ...) and point FROM at "
                           "the first")
    shards = []
    for k in range(2, count + 1):
        shard = first.with_name(f"{named.group(1)}-{k:05d}-of-{count:05d}.gguf")
        if not shard.is_file():
            raise WeightsError(f"{first.name} is the first of {count} shards of a split GGUF, but shard {k} "
                               f"({shard.name}) is not beside it", hint="keep all the shards in one folder")
        shards.append(weights_ref(shard.resolve()))
    return tuple(shards)


def _header(path: str | Path, span: Span | None) -> GGUFHeader:
    """A GGUF's checked header, what is wrong with it reported at the line that names it."""
    try:
        return check_gguf(path)
    except GGUFError as e:
        raise GGUFError(e.message, span, e.hint) from None


def _adapter(value: str, span: Span | None, base_dir: Path) -> WeightsRef:
    path = find_weights(expand(value, base_dir), span, what="ADAPTER")
    _header(path, span)
    return weights_ref(path.resolve())


def _projector(value: str, span: Span | None, base_dir: Path) -> WeightsRef:
    """A PROJECTOR (or second FROM) file, which must be a multimodal projector, not a model."""
    path = find_weights(expand(value, base_dir), span, what="PROJECTOR")
    arch = _header(path, span).metadata.get("general.architecture")
    if arch != "clip":
        raise GGUFError(f"{Path(value).name} is not a multimodal projector: its architecture is {arch!r}, not 'clip'",
                        span, "a definition has one model (its FROM); a PROJECTOR line or a second FROM names its "
                              "projector, an mmproj GGUF")
    return weights_ref(path.resolve())


def _vision_bytes(projector: WeightsRef) -> int:
    """The projector file and the allowance for encoding one image (compiler/plan.py)."""
    meta = check_gguf(projector.path).metadata

    def num(key: str) -> int:
        value = meta.get(f"clip.vision.{key}")
        return value if isinstance(value, int) else 0
    return projector.size + vision_allowance(num("image_size"), num("patch_size"), num("embedding_length"),
                                             num("attention.head_count"))


def _template(d: ModelDefinition, base: ParentModel | None, info: ModelInfo) -> TemplateSpec:
    if d.template is not None:
        text, origin, span = d.template.value, "definition", d.template.span
    elif base is not None and base.template is not None:
        text, origin, span = base.template, "base", None
    elif info.chat_template:
        text, origin, span = info.chat_template, "gguf", None
    elif info.architecture in ARCHITECTURE_TEMPLATES:
        text, origin, span = library_template(ARCHITECTURE_TEMPLATES[info.architecture]), "default", None
    else:
        text, origin, span = DEFAULT_TEMPLATE, "default", None
    compiled = compile_template(text, origin=span)
    name = compiled.name or (recognise(text) if compiled.kind == "jinja" else None)
    return TemplateSpec(kind=compiled.kind, source=text, jinja=compiled.jinja, name=name, origin=origin)  # type: ignore[arg-type]


def _stops(params: dict[str, ParamValue], template: TemplateSpec, info: ModelInfo) -> tuple[str, ...]:
    """Stops from the parameters, then the template's known stops, then the GGUF's eos token."""
    found: list[str] = list(params.get("stop", ()))  # type: ignore[arg-type]
    if "stop" not in params and template.name:
        found += known_stops(template.name)
    if info.eos_token:
        found.append(info.eos_token)
    return tuple(dict.fromkeys(s for s in found if s))


def _summary(info: ModelInfo) -> ModelSummary:
    return ModelSummary(
        architecture=info.architecture, parameter_count=info.parameter_count,
        parameter_size=info.parameter_size, quantization=info.quantization,
        context_length=info.context_length, block_count=info.block_count,
        embedding_length=info.embedding_length, head_count=info.head_count,
        head_count_kv=info.head_count_kv, vocab_size=info.vocab_size,
        bos_token=info.bos_token, eos_token=info.eos_token,
    )


def _opt_int(value: ParamValue | None) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]
