"""Parse + validate time of a 50-line Modelfile (median of many runs). Target: under 5 ms.

    python bench/parse.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from corral.dsl import parse_modelfile

LINES = [
    "# A 50-line Modelfile: every command, comments, quoting forms and multi-line values.",
    "FROM ./weights/SmolLM2-135M-Instruct.Q4_1.gguf",
    "ADAPTER ./lora/concise.gguf",
    "PARAMETER num_ctx 4096",
    "PARAMETER num_batch 512",
    "PARAMETER num_thread 2",
    "PARAMETER seed 42",
    "PARAMETER temperature 0.2",
    "PARAMETER top_k 40",
    "PARAMETER top_p 0.9",
    "PARAMETER min_p 0.05",
    "PARAMETER repeat_penalty 1.1",
    "PARAMETER repeat_last_n 64",
    'PARAMETER stop "<|im_end|>"',
    "PARAMETER stop <|endoftext|>",
    '# The template, in Ollama\'s Go syntax.',
    'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}',
    "{{ .Content }}<|im_end|>",
    "{{ end }}<|im_start|>assistant",
    '"""',
    'SYSTEM """You are a concise assistant.',
    "Answer in one sentence.",
    "Never make things up.",
    '"""',
    "MESSAGE user Is Toronto in Canada?",
    "MESSAGE assistant Yes.",
    "MESSAGE user Is Sacramento in Canada?",
    "MESSAGE assistant No.",
    'MESSAGE user """Is Ontario',
    'in Canada?"""',
    "MESSAGE assistant Yes.",
    "",
    'LICENSE """Apache License 2.0',
    "Licensed under the Apache License, Version 2.0 (the \"License\");",
    "you may not use this file except in compliance with the License.",
    '"""',
    "LICENSE MIT",
    "REQUIRES 0.5.0",
]
LINES += [f"# padding comment {i}" for i in range(50 - len(LINES))]
MODELFILE = "\n".join(LINES) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    assert len(MODELFILE.splitlines()) == 50
    parse_modelfile(MODELFILE, "bench.Modelfile")  # warm: grammar compiled once per process
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        parse_modelfile(MODELFILE, "bench.Modelfile")
        times.append(time.perf_counter() - t0)
    times.sort()
    median = statistics.median(times) * 1e3
    p99 = times[int(len(times) * 0.99)] * 1e3
    print(f"parse+validate, 50-line Modelfile: median {median:.3f} ms, p99 {p99:.3f} ms "
          f"over {args.runs} runs; target 5 ms -> {median / 5:.2f}x of budget")


if __name__ == "__main__":
    main()
