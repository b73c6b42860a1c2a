"""Pull throughput against curl, from a real registry on loopback, and memory and resume of a 1 GB pull.

    python bench/pull.py [--size-mb 1024] [--repeats 3]

Starts Debian's `docker-registry` (the CNCF distribution registry) on a free loopback port with the
tests' fixture (tests/registry/conftest.py), makes a model whose weights are one blob of random
bytes in a temporary store, pushes it with corral.registry.push, then, in this one run:

1. `curl` fetching the blob's URL into a file beside the stores (same disk), and
   corral.registry.pull of the model into an empty store, interleaved --repeats times, the one
   going first alternating. The blob was just pushed, so the registry reads it from a warm page
   cache for both. Each pull runs in a subprocess whose resident memory is sampled every 10 ms; its
   time runs from the call to pull() to its return (manifest, download, verification, fsync and
   manifest write included; the modules it uses, httpx's lazy ones too, are imported before),
   curl's is its own `time_total` (curl neither hashes nor fsyncs; the fsync of its file is timed
   apart and shown as "curl+fsync"). Prints the median pull throughput
   as a ratio to curl's median (target >= 0.8), the median of the runs' paired ratios, the CPU
   seconds each spent per GB (the process's and the registry's: a figure other load on the machine
   moves less than wall time), the load average, and the largest growth of resident memory over
   the process's size before the pull (target < 64 MB).
2. A pull stopped at about half (Ctrl-C, then SIGKILL, each in its own run), then pulled again: the
   registry's access log counts the blob bytes it sent each time, and the partial file's sidecar
   says what the first pull had kept. Target: the second pull fetches exactly what was missing.

Needs `docker-registry` and `curl` (apt-get install docker-registry curl). Not run by CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from corral.registry import push  # noqa: E402
from corral.store.manifest import Layer, Manifest, MediaType  # noqa: E402
from corral.store.store import Store  # noqa: E402
from tests.registry.conftest import DockerRegistry  # noqa: E402

NAME = "bench/blob:1g"
MB = 1 << 20

PULL = """
import json, sys, time
from pathlib import Path
import httpx
from corral.registry import pull
from corral.store.store import Store
store, name = Store(Path(sys.argv[1])), sys.argv[2]
httpx.Client().close()  # httpx imports httpcore's backends on its first client (~0.1 s): import time, not pull time
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
result = pull(store, name, insecure=True)
print(json.dumps({"seconds": time.perf_counter() - start, "downloaded": result.downloaded}), flush=True)
sys.stdin.readline()  # stay alive until the bench has read this process's CPU time
"""


def make_model(store: Store, size: int) -> tuple[str, Manifest]:
    """A model whose weights are `size` random bytes, written straight into the store's blobs/."""
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    temp = store.blobs_dir / ".corral-tmp-bench"
    hasher = hashlib.sha256()
    with temp.open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(16 * MB, left))
            hasher.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    digest = f"sha256:{hasher.hexdigest()}"
    os.replace(temp, store.blob_path(digest))
    config_bytes = b'{"model_format":"gguf"}'
    config = store.put_blob_bytes(config_bytes)
    manifest = Manifest(config=Layer(media_type=MediaType.CONFIG.value, digest=config, size=len(config_bytes)),
                        layers=(Layer(media_type=MediaType.MODEL.value, digest=digest, size=size),))
    return digest, manifest


@dataclass
class Run:
    """One fetch: wall seconds, CPU seconds of the fetching process and of the registry."""

    seconds: float
    cpu: float
    registry_cpu: float
    fsync: float = 0.0  # curl only: seconds to fsync its file afterwards (a pull's time includes it)
    growth: int = 0  # pull only: resident memory growth in bytes


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def curl(url: str, target: Path, registry: psutil.Process) -> Run:
    """curl fetching `url` into `target`: its own time_total, then the fsync of the file timed apart."""
    before, registry_before = children_cpu(), cpu_seconds(registry)
    out = subprocess.run(["curl", "-sS", "--fail", "-o", str(target), "-w", "%{size_download} %{time_total}", url],
                         check=True, capture_output=True, text=True).stdout
    run = Run(0.0, children_cpu() - before, cpu_seconds(registry) - registry_before)
    size, seconds = out.split()
    run.seconds = float(seconds)
    assert int(size) == target.stat().st_size
    start = time.perf_counter()
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    run.fsync = time.perf_counter() - start
    target.unlink()
    return run


class Sampler(threading.Thread):
    """Samples a process's resident memory every 10 ms until stopped; keeps the largest."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return


def start_pull(root: Path, name: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", PULL, str(root), name], cwd=REPO, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def pull_measured(root: Path, name: str, registry: psutil.Process) -> Run:
    """One pull in a fresh process: its seconds, CPU (the pull's, not the interpreter's start) and memory growth."""
    process = start_pull(root, name)
    time.sleep(0.2)  # let the interpreter settle before the baseline
    watched = psutil.Process(process.pid)
    baseline, cpu_before, registry_before = watched.memory_info().rss, cpu_seconds(watched), cpu_seconds(registry)
    sampler = Sampler(process.pid)
    sampler.start()
    process.stdin.write("go\n")
    process.stdin.flush()
    line = process.stdout.readline()
    cpu = cpu_seconds(watched) - cpu_before  # before it exits (it waits on stdin's end)
    registry_cpu = cpu_seconds(registry) - registry_before
    sampler.stop.set()
    sampler.join()
    process.stdin.close()
    if process.wait() != 0 or not line:
        raise SystemExit(f"the pull failed: {process.stderr.read()}")
    return Run(json.loads(line)["seconds"], cpu, registry_cpu, growth=sampler.peak - baseline)


class AccessLog:
    """The blob bytes the registry's access log records, read from where the last call stopped."""

    LINE = re.compile(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" (\d{3}) (\d+)')

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def sent(self, digest: str) -> int:
        time.sleep(0.5)  # the registry logs a request when its handler returns
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset = f.tell()
        return sum(int(m.group(3)) for m in self.LINE.finditer(text) if m.group(1) == digest)


def written(path: Path) -> int:
    """Bytes of a sparse partial file that hold data (its allocated blocks)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def interrupted(root: Path, name: str, store_digest: str, size: int, log: AccessLog, sig: signal.Signals) -> dict:
    """Stop a pull at about half with `sig`, pull again, and count what each fetched."""
    store = Store(root)
    blob = store.blob_path(store_digest)
    partial, sidecar = blob.with_name(blob.name + "-partial"), blob.with_name(blob.name + "-partial.json")
    log.sent(store_digest)  # skip what came before
    process = start_pull(root, name)
    process.stdin.write("go\n")
    process.stdin.flush()
    while written(partial) < size // 2:
        if process.poll() is not None:
            raise SystemExit(f"the pull ended before it was stopped: {process.stderr.read()}")
        time.sleep(0.002)
    at = written(partial)
    process.send_signal(sig)
    process.wait(60)
    first = log.sent(store_digest)
    kept = sum(done for _, _, done in json.loads(sidecar.read_text())["parts"])
    again = start_pull(root, name)
    again.stdin.write("go\n")
    again.stdin.flush()
    line = again.stdout.readline()
    again.stdin.close()
    if again.wait() != 0 or not line:
        raise SystemExit(f"the second pull failed: {again.stderr.read()}")
    second = log.sent(store_digest)
    ok = store.has_blob(store_digest) and not partial.exists()
    shutil.rmtree(root)
    return {"signal": sig.name, "stopped_at": at, "first_sent": first, "kept": kept, "second_sent": second,
            "downloaded": json.loads(line)["downloaded"], "refetched": first + second - size, "stored": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("bench/pull.py needs curl: apt-get install curl")
    size = args.size_mb * MB
    gb = size / (1 << 30)
    with tempfile.TemporaryDirectory(prefix="corral-bench-pull-") as tmp:
        work = Path(tmp)
        registry = DockerRegistry(work / "registry", access_log=True)
        try:
            source = Store(work / "source")
            t = time.perf_counter()
            digest, manifest = make_model(source, size)
            name = f"{registry.host}/{NAME}"
            source.write_manifest(name, manifest)
            made = time.perf_counter() - t
            t = time.perf_counter()
            push(source, name, insecure=True)
            pushed = time.perf_counter() - t
            shutil.rmtree(source.root)
            print(f"{args.size_mb} MB of random weights made in {made:.1f} s, pushed in {pushed:.1f} s "
                  f"({size / MB / pushed:.0f} MB/s)")
            url = f"http://{registry.host}/v2/{NAME.split(':')[0]}/blobs/{digest}"
            served = psutil.Process(registry.process.pid)
            curls: list[Run] = []
            pulls: list[Run] = []
            load = os.getloadavg()[0]
            for i in range(args.repeats):
                load = max(load, os.getloadavg()[0])
                def fetch_with_curl() -> None:
                    curls.append(curl(url, work / "curl.out", served))

                def fetch_with_pull() -> None:
                    pulls.append(pull_measured(work / f"pull-{i}", name, served))
                    assert Store(work / f"pull-{i}").has_blob(digest)
                    shutil.rmtree(work / f"pull-{i}")

                for fetch in (fetch_with_curl, fetch_with_pull) if i % 2 == 0 else (fetch_with_pull, fetch_with_curl):
                    fetch()
                c, p = curls[-1], pulls[-1]
                print(f"run {i + 1}: curl {size / MB / c.seconds:.0f} MB/s (+fsync {c.fsync:.2f} s), "
                      f"pull {size / MB / p.seconds:.0f} MB/s, ratio {c.seconds / p.seconds:.2f}; CPU s/GB: curl "
                      f"{c.cpu / gb:.2f} + registry {c.registry_cpu / gb:.2f}, pull {p.cpu / gb:.2f} + registry "
                      f"{p.registry_cpu / gb:.2f}; resident growth {p.growth / MB:.1f} MB")
            load = max(load, os.getloadavg()[0])
            median = statistics.median
            curl_s, pull_s = median(r.seconds for r in curls), median(r.seconds for r in pulls)
            synced = median(r.seconds + r.fsync for r in curls)
            print(f"median of {args.repeats}: curl {size / MB / curl_s:.0f} MB/s (curl+fsync {size / MB / synced:.0f} MB/s), "
                  f"pull {size / MB / pull_s:.0f} MB/s; CPU s/GB: curl {median(r.cpu for r in curls) / gb:.2f} "
                  f"+ registry {median(r.registry_cpu for r in curls) / gb:.2f}, pull {median(r.cpu for r in pulls) / gb:.2f} "
                  f"+ registry {median(r.registry_cpu for r in pulls) / gb:.2f}")
            print(f"target pull >= 0.8 x curl: {curl_s / pull_s:.2f} (median of paired ratios "
                  f"{median(c.seconds / p.seconds for c, p in zip(curls, pulls)):.2f}; x curl+fsync {synced / pull_s:.2f})")
            print(f"load average (1 min) up to {load:.1f} on {os.cpu_count()} cores during the runs")
            if load > os.cpu_count():
                print("noisy: other work shared the cores; wall-time ratios are unreliable, the CPU figures less so")
            print(f"target resident growth < 64 MB: largest {max(r.growth for r in pulls) / MB:.1f} MB")
            log = AccessLog(registry.log_path)
            for sig in (signal.SIGINT, signal.SIGKILL):
                r = interrupted(work / "resume", name, digest, size, log, sig)
                print(f"stopped by {r['signal']} at {r['stopped_at'] / MB:.0f} MB: registry sent "
                      f"{r['first_sent'] / MB:.1f} MB, the sidecar kept {r['kept'] / MB:.1f} MB; "
                      f"the second pull was sent {r['second_sent'] / MB:.1f} MB "
                      f"(missing: {(size - r['kept']) / MB:.1f} MB, exactly: {r['second_sent'] == size - r['kept']}); "
                      f"re-fetched in all {r['refetched'] / MB:.1f} MB; stored and verified: {r['stored']}")
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
