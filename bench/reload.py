"""Hot reload, measured: how soon an edit answers, and whether any request fails across edits.

    python bench/reload.py [--edits 50] [--load-edits 100] [--clients 8]

Starts `corral serve --library` on a temporary library holding SmolLM2-135M, then:
1. latency: --edits times, rewrites the definition with a longer SYSTEM and times from the write
   until a chat request's usage.prompt_tokens shows the new prompt (requests back to back);
   prints p50/p99 (target: p50 <= 250 ms, p99 <= 1 s);
2. failures: --clients concurrent clients send short chats while the definition is rewritten
   --load-edits times (every tenth edit changes num_ctx, a reload; the rest SYSTEM, a spec swap);
   prints how many requests failed (target: 0).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFINITION = "FROM ./smol.gguf\nPARAMETER temperature 0\nPARAMETER num_ctx {ctx}\nSYSTEM {system}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, words: int, ctx: int = 1024) -> None:
    tmp = path.with_name(path.name + ".tmp")  # as editors save: write aside, then rename
    tmp.write_text(DEFINITION.format(ctx=ctx, system="You are brief." + " Really." * words))
    tmp.replace(path)


def prompt_tokens(client: httpx.Client) -> int:
    r = client.post("/v1/chat/completions", json={"model": "smol", "max_tokens": 1,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
    r.raise_for_status()
    return r.json()["usage"]["prompt_tokens"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--load-edits", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        library.mkdir()
        (library / "smol.gguf").symlink_to(MODEL)
        definition = library / "smol.Modelfile"
        write(definition, 0)
        port = free_port()
        env = {**os.environ, "CORRAL_MODELS": str(Path(tmp) / "models"), "CORRAL_HOST": f"127.0.0.1:{port}",
               "CORRAL_NUM_PARALLEL": str(args.clients), "CORRAL_KEEP_ALIVE": "-1"}
        server = subprocess.Popen([sys.executable, "-m", "corral.cli.main", "serve", "--library", str(library)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                for _ in range(600):
                    try:
                        client.get("/")
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                last = prompt_tokens(client)
                latencies = []
                for i in range(1, args.edits + 1):
                    started = time.perf_counter()
                    write(definition, i)
                    while (seen := prompt_tokens(client)) <= last:
                        pass
                    latencies.append(time.perf_counter() - started)
                    last = seen
                latencies.sort()
                p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
                print(f"spec-only edit live, {args.edits} edits: p50 {statistics.median(latencies) * 1e3:.0f} ms, "
                      f"p99 {p99 * 1e3:.0f} ms (targets 250 ms / 1000 ms)")

                failures: list[str] = []
                served = [0]
                stop = threading.Event()

                def hammer(i: int) -> None:
                    with httpx.Client(base_url=url, timeout=300) as c:
                        while not stop.is_set():
                            r = c.post("/v1/chat/completions", json={
                                "model": "smol", "max_tokens": 8,
                                "messages": [{"role": "user", "content": f"Say a word about {i}."}]})
                            if r.status_code != 200:
                                failures.append(f"{r.status_code} {r.text[:200]}")
                            served[0] += 1

                threads = [threading.Thread(target=hammer, args=(i,)) for i in range(args.clients)]
                for t in threads:
                    t.start()
                for i in range(args.load_edits):
                    write(definition, i % 7, ctx=1024 if (i // 10) % 2 == 0 else 2048)
                    time.sleep(0.1)
                time.sleep(2)
                stop.set()
                for t in threads:
                    t.join()
                print(f"{args.load_edits} edits ({args.load_edits // 10} of them reloads) under {args.clients} "
                      f"clients: {served[0]} requests, {len(failures)} failed (target 0)")
                for f in failures[:5]:
                    print("  failed:", f)
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
