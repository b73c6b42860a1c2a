"""Throughput under concurrency: Corral's OpenAI endpoint against llama.cpp's raw limits, one run.

    python bench/throughput.py [--clients 1,2,4,8,16] [--tokens 128] [--threads 2]

Starts `corral serve` on a free port with a temporary store holding SmolLM2-135M Q4_1, then for
each N runs N concurrent clients, each asking /v1/completions for --tokens tokens at temperature
0, and prints aggregate tokens/s (completion tokens of all clients over the wall time of the
round) with p50/p99 request latency. In the same run, in-process raw limits on the same weights
and threads: llama-cpp-python single-sequence decode, and low-level multi-sequence decode with
the same N (bench/engine_raw.py). Then the ratios the targets name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, model: Path, threads: int, slots: int) -> tuple[subprocess.Popen, str]:
    (folder / "Modelfile").write_text(f"FROM {model}\nPARAMETER num_thread {threads}\nPARAMETER num_ctx 512\n"
                                      "PARAMETER temperature 0\n")
    env = {**os.environ, "CORRAL_MODELS": str(folder / "models"), "CORRAL_NUM_PARALLEL": str(slots),
           "CORRAL_LIBRARY": str(folder / "nolibrary"), "CORRAL_KEEP_ALIVE": "-1"}
    subprocess.run([sys.executable, "-m", "corral.cli.main", "create", "smol", "-f", str(folder / "Modelfile")],
                   env={**env, "CORRAL_HOST": "127.0.0.1:9"}, check=True, capture_output=True)
    port = free_port()
    env["CORRAL_HOST"] = f"127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "corral.cli.main", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("corral serve did not start")


async def round_of(url: str, n: int, tokens: int) -> tuple[float, float, float, int]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(i: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            r = await client.post("/v1/completions", json={
                "model": "smol", "prompt": f"Chapter {i + 1}. Once upon a time, in a small village by the sea, there lived",
                "max_tokens": tokens, "temperature": 0})
            r.raise_for_status()
            return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    produced = sum(r[1] for r in results)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return produced / wall, statistics.median(latencies), p99, min(r[1] for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    counts = [int(x) for x in args.clients.split(",")]
    from engine_raw import MODEL, llama_single, probe_repack, raw_batched

    repack = probe_repack()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp), MODEL, args.threads, max(counts))
        try:
            asyncio.run(round_of(url, 1, 8))  # load the model and warm up
            served = {n: asyncio.run(round_of(url, n, args.tokens)) for n in counts}
        finally:
            server.terminate()
            server.wait(30)
    single = llama_single(args.tokens, args.threads, repack)
    raw = {n: raw_batched(n, args.tokens, args.threads, repack) for n in counts}

    print(f"SmolLM2-135M Q4_1, {args.threads} threads, {args.tokens}-token completions, temperature 0")
    print(f"raw llama-cpp-python single-sequence decode: {single:.1f} tok/s")
    print(f"{'clients':>7} {'corral tok/s':>12} {'p50 s':>7} {'p99 s':>7} {'p99/p50':>7} {'raw N-seq tok/s':>15} "
          f"{'corral/raw':>10} {'min tokens':>10}")
    for n in counts:
        rate, p50, p99, fewest = served[n]
        print(f"{n:>7} {rate:>12.1f} {p50:>7.2f} {p99:>7.2f} {p99 / p50:>7.2f} {raw[n]:>15.1f} "
              f"{rate / raw[n]:>10.2f} {fewest:>10}")
    if 1 in served:
        print(f"target 1 client >= 0.95 x raw single-sequence: {served[1][0] / single:.2f}")
    if 1 in served and 8 in served:
        print(f"target 8 clients >= 1.6 x 1 client: {served[8][0] / served[1][0]:.2f}; "
              f"p99/p50 at 8 <= 1.2: {served[8][2] / served[8][1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
