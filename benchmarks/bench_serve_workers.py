"""Throughput of ``facelab serve --workers N`` against one worker, run side by side on the same photos.

For each worker count it starts the real server (``facelab serve RUN --workers N --port 0``) in a subprocess,
waits until it answers, sends ``--requests`` photo uploads with ``--concurrency`` in flight (threads over
http.client, so the client is not the bottleneck of a single event loop), and stops it. Prediction slots and
the queue are per worker, so each server gets ``--max-concurrent`` slots per worker and a queue deep enough
that nothing is refused. The worker counts are run in turn, ``--rounds`` times; the report gives the median photos/s of each count, every
round's figure, the speed-up over the first count, and the load average around the run (a shared machine shows
there).

    python benchmarks/bench_serve_workers.py --run runs/train-celeba --root ~/facelab-data/celeba --workers 1 2 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_photo_latency import photos  # benchmarks/ is on sys.path when run as a script

BOUNDARY = "facelabbench"


def _form(data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    status = conn.getresponse().status
    conn.close()
    return status


def _start(args: argparse.Namespace, workers: int) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "facelab.cli", "serve", str(args.run), "--port", "0", "--workers", str(workers),
           "--engine", args.engine, "--faces", args.faces, "--max-concurrent", str(args.max_concurrent),
           "--max-queue", str(args.concurrency)]
    if args.detector:
        cmd += ["--detector", args.detector]
    env = {**os.environ, "COLUMNS": "500"}
    log = tempfile.NamedTemporaryFile("w+", prefix="bench_serve_workers-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)  # read, never a full pipe
    for _ in range(6000):
        text = Path(log.name).read_text()
        if "http://127.0.0.1:" in text:
            return proc, int(text.split("http://127.0.0.1:")[1].split("/")[0])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"the server did not start: {' '.join(cmd)}\n{Path(log.name).read_text()}")


def measure(args: argparse.Namespace, workers: int, bodies: list[bytes]) -> dict:
    proc, port = _start(args, workers)
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:  # warm-up: every worker loads and runs once
            list(pool.map(lambda b: _post(port, b), bodies[:args.concurrency * 2]))
            t0 = time.perf_counter()
            codes = Counter(pool.map(lambda i: _post(port, bodies[i % len(bodies)]), range(args.requests)))
            wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"workers": workers, "photos_per_s": round(codes[200] / wall, 2), "seconds": round(wall, 2),
            "status_codes": {str(k): v for k, v in sorted(codes.items())}}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--root", type=Path, default=None, help="CelebA root (default: synthetic faces)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--requests", type=int, default=200, help="per server start")
    ap.add_argument("--rounds", type=int, default=3, help="each worker count this many times, interleaved; the "
                    "median is reported")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--faces", default="detect")
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--max-concurrent", type=int, default=2, help="prediction slots per worker")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bodies = [_form(p) for p in photos(args.root, 50, 0)]
    load = os.getloadavg()  # a shared machine shows here: other work competes with every worker count
    runs: dict[int, list[dict]] = {n: [] for n in args.workers}
    for _ in range(args.rounds):  # interleaved, so drifting load on a shared machine hits every count alike
        for n in args.workers:
            runs[n].append(measure(args, n, bodies))
    rows = [{"workers": n, "photos_per_s": statistics.median(r["photos_per_s"] for r in runs[n]),
             "each_round": [r["photos_per_s"] for r in runs[n]],
             "status_codes": dict(sum((Counter(r["status_codes"]) for r in runs[n]), Counter()))}
            for n in args.workers]
    base = rows[0]["photos_per_s"]
    for row in rows:
        row["speedup"] = round(row["photos_per_s"] / base, 2) if base else None
    out = {"run": str(args.run), "engine": args.engine, "faces": args.faces, "detector": args.detector,
           "requests": args.requests, "concurrency": args.concurrency, "slots_per_worker": args.max_concurrent,
           "rounds": args.rounds, "cpus": os.cpu_count(), "machine": _cpu_model(),
           "load_average_before": [round(x, 2) for x in load], "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "results": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for row in rows:
        print(f"{row['workers']} worker(s): {row['photos_per_s']} photos/s median of {row['each_round']} "
              f"(x{row['speedup']}), codes {row['status_codes']}")


if __name__ == "__main__":
    main()
