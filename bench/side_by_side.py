"""Corral against llama.cpp's own server on the same model, threads and load, in one run.

    python bench/side_by_side.py [--clients 1,2,4,8,16,32,64] [--tokens 128] [--threads 2] [--quick]
    python bench/side_by_side.py --two-models      # two busy models against one, same total load
    python bench/side_by_side.py --single-stream   # 1 client: 64 sequences allowed against 1
    python bench/side_by_side.py --shared-prefix   # 16 clients, one 1,500-token system prompt
    python bench/side_by_side.py --embed-beside    # 8 chat clients beside 4 embedding clients, one model

llama-server and llama-batched-bench are built once from the llama.cpp inside the installed
llama-cpp-python (bench/llamacpp_build.py). For each client count N, interleaved so that the
machine's load falls on every server alike: Corral at its defaults (a real `corral serve` on a
free port, sealed home), llama-server at its defaults, llama-server with `-np N` (its best for N),
and llama-batched-bench with N sequences (no HTTP: the limit), each in a KV stream of its own as
llama-server -np N has them and again in one unified cache (`-kvu`) as Corral's pool has them:
the limit of that layout. Every client asks /v1/completions
for --tokens tokens at temperature 0 (llama-server with ignore_eos; Corral's prompts run to the
limit), streamed, so time to first token is measured too. Results: bench/results/side_by_side-
<date>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
RESULTS = REPO / "bench" / "results"
PROMPT = "Chapter {i}. Once upon a time, in a small village by the sea, there lived"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, path: str = "/") -> None:
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{proc.args[0]} did not start")


def start_corral(folder: Path, model: Path, threads: int, models: dict[str, int],
                 env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`corral serve` in a sealed home, with one definition per name -> num_ctx.

    The template is the prompt itself, as llama-server's /v1/completions takes it: with the
    model's chat template (Corral's /v1/completions applies it, as Ollama's does) each prompt would
    be about three times as many tokens as llama-server's, and the two would not run the same work."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "CORRAL_MODELS": str(folder / "models"), "CORRAL_LIBRARY": str(folder / "nolibrary"),
           "CORRAL_KEEP_ALIVE": "-1", "CORRAL_HOST": "127.0.0.1:9", **(env_extra or {})}
    for name, num_ctx in models.items():
        modelfile = folder / f"{name}.Modelfile"
        modelfile.write_text(f"FROM {model}\nPARAMETER num_thread {threads}\nPARAMETER num_ctx {num_ctx}\n"
                             'PARAMETER temperature 0\nTEMPLATE """{{ .Prompt }}"""\n')
        subprocess.run([sys.executable, "-m", "corral.cli.main", "create", name, "-f", str(modelfile)],
                       env=env, check=True, capture_output=True)
    port = free_port()
    env["CORRAL_HOST"] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "corral.cli.main", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url


def start_llama_server(bins: Path, model: Path, threads: int, parallel: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [str(bins / "llama-server"), "-m", str(model), "-t", str(threads), "-tb", str(threads),
            "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    if parallel is not None:  # its best for N clients: N slots in a cache that holds them all
        args += ["-np", str(parallel), "-c", str(max(4096, parallel * 256))]
    env = {**os.environ, "LD_LIBRARY_PATH": str(bins)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc, "/health")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def load(url: str, model: str, n: int, tokens: int, llama: bool, offset: int = 0,
               prompt: str = PROMPT) -> dict:
    """N concurrent streamed completions; tokens/s over the round, TTFT and latency percentiles."""
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=httpx.Limits(max_connections=n + 4)) as client:
        async def one(i: int) -> tuple[float, float, int]:
            body = {"model": model, "prompt": prompt.format(i=i + 1 + offset), "max_tokens": tokens,
                    "temperature": 0, "stream": True}
            if llama:
                body["ignore_eos"] = True
            t0 = time.perf_counter()
            first, produced = None, 0
            async with client.stream("POST", "/v1/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if data.get("choices") and data["choices"][0].get("text"):
                        first = first or time.perf_counter() - t0
                    produced = (data.get("usage") or {}).get("completion_tokens", produced)
            return first or 0.0, time.perf_counter() - t0, produced

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
    ttft, latency = [r[0] for r in results], [r[1] for r in results]
    # A stream's usage may be absent; count the asked-for tokens then (llama-server ignores EOS).
    produced = sum(r[2] or tokens for r in results)
    return {"tok_s": produced / wall, "ttft_p50": statistics.median(ttft), "ttft_p99": pct(ttft, 0.99),
            "lat_p50": statistics.median(latency), "lat_p99": pct(latency, 0.99),
            "min_tokens": min(r[2] or tokens for r in results)}


def batched_bench(bins: Path, model: Path, threads: int, counts: list[int], tokens: int,
                  unified: bool = False) -> dict[int, float]:
    """llama-batched-bench's generation speed (S_TG t/s) with N sequences of 16 + `tokens`: each
    sequence in a KV stream of its own (its default), or all in one unified cache (`-kvu`), the
    layout of Corral's shared pool."""
    cells = max(counts) * (16 + tokens) + 256
    done = subprocess.run([str(bins / "llama-batched-bench"), "-m", str(model), "-c", str(cells), "-b", "2048",
                           "-ub", "512", "-npp", "16", "-ntg", str(tokens), "-npl", ",".join(map(str, counts)),
                           "-t", str(threads), "-tb", str(threads), "-kvu" if unified else "-no-kvu"],
                          env={**os.environ, "LD_LIBRARY_PATH": str(bins)}, capture_output=True, text=True,
                          check=True)
    rates = {}
    for line in done.stdout.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) >= 8 and re.fullmatch(r"\d+", cols[2] or ""):
            rates[int(cols[2])] = float(cols[7])
    return rates


def prompt_tokens(url: str) -> int:
    """The tokens a server counts in the benchmark's first prompt (both must count alike)."""
    body = {"model": "smol", "prompt": PROMPT.format(i=1), "max_tokens": 1, "temperature": 0}
    return httpx.post(url + "/v1/completions", json=body, timeout=300).json()["usage"]["prompt_tokens"]


def side_by_side(args: argparse.Namespace, bins: Path, model: Path, counts: list[int], tmp: Path) -> dict:
    rows: dict[int, dict[str, dict]] = {}
    corral, curl = start_corral(tmp / "corral", model, args.threads, {"smol": 2048})
    defaults, durl = start_llama_server(bins, model, args.threads, None)
    try:
        asyncio.run(load(curl, "smol", 1, 8, False))
        asyncio.run(load(durl, "smol", 1, 8, True))
        counted = {"corral": prompt_tokens(curl), "llama-server": prompt_tokens(durl)}
        print(f"prompt tokens: {counted}", flush=True)
        for n in counts:
            row = rows[n] = {}
            row["corral"] = asyncio.run(load(curl, "smol", n, args.tokens, False))
            row["llama-server"] = asyncio.run(load(durl, "smol", n, args.tokens, True))
            best, burl = start_llama_server(bins, model, args.threads, n)
            try:
                asyncio.run(load(burl, "smol", 1, 8, True))
                row[f"llama-server -np N"] = asyncio.run(load(burl, "smol", n, args.tokens, True))
            finally:
                stop(best)
            print(f"{n:>3} clients: " + ", ".join(f"{k} {v['tok_s']:.1f}" for k, v in row.items()), flush=True)
    finally:
        stop(corral)
        stop(defaults)
    limit = batched_bench(bins, model, args.threads, counts, args.tokens)
    shared = batched_bench(bins, model, args.threads, counts, args.tokens, unified=True)
    for n in counts:
        if n in limit:
            rows[n]["llama-batched-bench"] = {"tok_s": limit[n]}
        if n in shared:
            rows[n]["llama-batched-bench -kvu"] = {"tok_s": shared[n]}
    return {"prompt_tokens": counted, **{str(n): r for n, r in rows.items()}}


def two_models(args: argparse.Namespace, model: Path, tmp: Path) -> dict:
    """One model at 8 clients, then two (the same GGUF at two num_ctx) at 4 each, interleaved."""
    proc, url = start_corral(tmp / "two", model, args.threads, {"a": 2048, "b": 1024})
    rounds: list[dict] = []
    try:
        asyncio.run(load(url, "a", 1, 8, False))
        asyncio.run(load(url, "b", 1, 8, False))

        async def both() -> list[dict]:
            return list(await asyncio.gather(load(url, "a", 4, args.tokens, False),
                                             load(url, "b", 4, args.tokens, False, offset=4)))

        for _ in range(args.repeats):
            alone = asyncio.run(load(url, "a", 8, args.tokens, False))
            a, b = asyncio.run(both())
            rounds.append({"alone": alone["tok_s"], "a": a["tok_s"], "b": b["tok_s"]})
    finally:
        stop(proc)
    alone = statistics.median(r["alone"] for r in rounds)
    a = statistics.median(r["a"] for r in rounds)
    b = statistics.median(r["b"] for r in rounds)
    return {"rounds": rounds, "alone_8": alone, "a_4": a, "b_4": b, "together_over_alone": (a + b) / alone,
            "share_a": a / (a + b), "share_b": b / (a + b)}


async def _embedding_clients(url: str, n: int, stop_at: asyncio.Event) -> int:
    """`n` clients embedding one sentence at a time until `stop_at`; how many they embedded."""
    done = [0]

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            while not stop_at.is_set():
                body = {"model": "smol", "input": [f"Sentence {i}.{done[0]} about the sea and its ships."]}
                (await client.post("/api/embed", json=body)).raise_for_status()
                done[0] += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return done[0]


def embed_beside(args: argparse.Namespace, model: Path, tmp: Path) -> dict:
    """8 chat clients alone, 4 embedding clients alone, then both at once on the same model,
    interleaved: each side's rate as a share of its rate alone (shares summing to 1: no collapse)."""
    proc, url = start_corral(tmp / "embed", model, args.threads, {"smol": 2048})
    rounds: list[dict] = []

    async def embeddings_for(seconds: float) -> float:
        stop_at = asyncio.Event()
        task = asyncio.create_task(_embedding_clients(url, 4, stop_at))
        await asyncio.sleep(seconds)
        stop_at.set()
        return await task / seconds

    async def both(offset: int) -> tuple[float, float]:
        stop_at = asyncio.Event()
        task = asyncio.create_task(_embedding_clients(url, 4, stop_at))
        started = time.perf_counter()
        chat = await load(url, "smol", 8, args.tokens, False, offset=offset)
        elapsed = time.perf_counter() - started
        stop_at.set()
        return chat["tok_s"], await task / elapsed

    try:
        asyncio.run(load(url, "smol", 1, 8, False))
        asyncio.run(embeddings_for(1.0))
        for r in range(args.repeats):
            chat_alone = asyncio.run(load(url, "smol", 8, args.tokens, False, offset=100 * r))["tok_s"]
            embed_alone = asyncio.run(embeddings_for(8.0))
            chat, embeds = asyncio.run(both(100 * r + 50))
            rounds.append({"chat_alone": chat_alone, "embeddings_alone": embed_alone, "chat": chat,
                           "embeddings": embeds})
    finally:
        stop(proc)
    chat_share = statistics.median(r["chat"] / r["chat_alone"] for r in rounds)
    embed_share = statistics.median(r["embeddings"] / r["embeddings_alone"] for r in rounds)
    return {"rounds": rounds, "chat_share": chat_share, "embedding_share": embed_share,
            "shares_sum": chat_share + embed_share}


def single_stream(args: argparse.Namespace, model: Path, tmp: Path) -> dict:
    """One client on a server allowing 64 sequences against one allowing 1, interleaved."""
    many, murl = start_corral(tmp / "many", model, args.threads, {"smol": 2048}, {"CORRAL_NUM_PARALLEL": "64"})
    one, ourl = start_corral(tmp / "one", model, args.threads, {"smol": 2048}, {"CORRAL_NUM_PARALLEL": "1"})
    rounds = []
    try:
        asyncio.run(load(murl, "smol", 1, 8, False))
        asyncio.run(load(ourl, "smol", 1, 8, False))
        for _ in range(args.repeats):
            rounds.append({"64": asyncio.run(load(murl, "smol", 1, args.tokens, False))["tok_s"],
                           "1": asyncio.run(load(ourl, "smol", 1, args.tokens, False))["tok_s"]})
    finally:
        stop(many)
        stop(one)
    ratio = statistics.median(r["64"] / r["1"] for r in rounds)
    return {"rounds": rounds, "ratio_64_over_1": ratio}


# About 1,500 SmolLM2 tokens of rules, then a question that differs per client.
SYSTEM = "You answer questions about the rules of the Harbour Street Library.\n" + "".join(
    f"Rule {r}: a member may borrow up to {r % 7 + 1} books from shelf {r}, for {r % 4 + 1} weeks.\n"
    for r in range(1, 58))
SHARED_PROMPT = SYSTEM + "\nQuestion {i}: how many books may I borrow from shelf {i}?\nAnswer:"


def shared_prefix(args: argparse.Namespace, bins: Path, model: Path, tmp: Path) -> dict:
    """16 clients sharing one long system prompt: Corral with prefix sharing on, off, and
    llama-server (-np 16, its prompt cache on), interleaved; time to first token."""
    n, tokens = 16, 16
    servers = {"corral": start_corral(tmp / "on", model, args.threads, {"smol": 2048}),
               "corral, sharing off": start_corral(tmp / "off", model, args.threads, {"smol": 2048},
                                                   {"CORRAL_PREFIX_CACHE": "off"})}
    # 16 slots of 2,048 cells: start_llama_server's cache of 256 a slot cannot hold this prompt.
    port = free_port()
    proc = subprocess.Popen([str(bins / "llama-server"), "-m", str(model), "-t", str(args.threads), "-tb",
                             str(args.threads), "--host", "127.0.0.1", "--port", str(port), "--no-webui",
                             "-np", str(n), "-c", str(n * 2048)],
                            env={**os.environ, "LD_LIBRARY_PATH": str(bins)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers["llama-server -np 16"] = (proc, f"http://127.0.0.1:{port}")
    wait_up(servers["llama-server -np 16"][1], proc, "/health")
    rounds: list[dict] = []
    try:
        for name, (_, url) in servers.items():  # one request puts the system prompt in each cache
            asyncio.run(load(url, "smol", 1, 4, name.startswith("llama"), offset=100, prompt=SHARED_PROMPT))
        for r in range(args.repeats):
            rounds.append({name: asyncio.run(load(url, "smol", n, tokens, name.startswith("llama"),
                                                  offset=r * n, prompt=SHARED_PROMPT))["ttft_p50"]
                           for name, (_, url) in servers.items()})
    finally:
        for proc, _ in servers.values():
            stop(proc)
    p50 = {name: statistics.median(r[name] for r in rounds) for name in servers}
    return {"rounds": rounds, "ttft_p50": p50,
            "off_over_on": p50["corral, sharing off"] / p50["corral"],
            "llama_server_over_corral": p50["llama-server -np 16"] / p50["corral"]}


def cpu_name() -> str:
    """The processor's model name and widest vector extension: results differ between machines by more
    than their cores (one client: 148 tokens/s on one 2-core machine here, 55 on an AVX2 EPYC)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "an unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "an unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "no AVX")
    return f"{name} ({vector})"


def markdown(report: dict) -> str:
    lines = [f"# Side by side, {report['date']}", "", f"`{report['command']}`", "", report["setup"], ""]
    if "prompt_tokens" in report.get("clients", {}):
        lines += [f"Prompt tokens per request, as each server counts them: {report['clients']['prompt_tokens']}", ""]
    if "clients" in report:
        lines += ["| clients | server | tok/s | vs best llama-server | TTFT p50 s | TTFT p99 s | latency p50 s | "
                  "latency p99 s |", "|---|---|---|---|---|---|---|---|"]
        for n, row in report["clients"].items():
            if n == "prompt_tokens":
                continue
            best = max((v["tok_s"] for k, v in row.items() if k.startswith("llama-server")), default=0)
            for name, r in row.items():
                cells = [f"{r[k]:.2f}" if k in r else "" for k in ("ttft_p50", "ttft_p99", "lat_p50", "lat_p99")]
                lines.append(f"| {n} | {name} | {r['tok_s']:.1f} | {r['tok_s'] / best:.2f} | " + " | ".join(cells) + " |")
    for key in ("two_models", "single_stream", "shared_prefix", "embed_beside"):
        if key in report:
            lines += ["", f"## {key}", "", "```", json.dumps(report[key], indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,2,4,8,16,32,64")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of --two-models/--single-stream")
    ap.add_argument("--quick", action="store_true", help="1 and 8 clients, 64 tokens")
    ap.add_argument("--two-models", action="store_true")
    ap.add_argument("--single-stream", action="store_true")
    ap.add_argument("--embed-beside", action="store_true", help="8 chat clients beside 4 embedding clients")
    ap.add_argument("--shared-prefix", action="store_true", help="16 clients, one 1,500-token system prompt")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.tokens = "1,8", 64
    counts = [int(x) for x in args.clients.split(",")]
    from llamacpp_build import build
    from tests.models import smollm2

    model = smollm2()
    report: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join(["python", "bench/side_by_side.py", *sys.argv[1:]]),
                    "setup": f"SmolLM2-135M Q4_1, {args.threads} threads, {args.tokens}-token completions, "
                             f"temperature 0, {os.cpu_count()} cores of {cpu_name()}"}
    with tempfile.TemporaryDirectory(prefix="corral-sbs-") as tmp:
        if args.two_models:
            report["two_models"] = two_models(args, model, Path(tmp))
        if args.single_stream:
            report["single_stream"] = single_stream(args, model, Path(tmp))
        if args.embed_beside:
            report["embed_beside"] = embed_beside(args, model, Path(tmp))
        if args.shared_prefix:
            report["shared_prefix"] = shared_prefix(args, build(), model, Path(tmp))
        if not (args.two_models or args.single_stream or args.shared_prefix or args.embed_beside):
            report["clients"] = side_by_side(args, build(), model, counts, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The mode and the second are in the name: runs of several modes in one minute must not
    # overwrite each other's results.
    mode = next((m for m in ("two_models", "single_stream", "shared_prefix", "embed_beside") if m in report),
                "clients")
    stem = RESULTS / f"side_by_side-{report['date'][:19].replace(':', '')}-{mode.replace('_', '-')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
