"""``facelab serve`` under a bounded load on 127.0.0.1, and its answers to hostile uploads.

Starts the real server (``facelab serve RUN``, uvicorn) in a subprocess, sends ``--requests`` photo uploads
with ``--concurrency`` in flight at once (httpx), and reports throughput, latency p50/p95, the status codes
(503s are the service refusing politely when its prediction slots are full: they are counted apart from
errors) and the server's peak memory (VmHWM). Then it sends each hostile upload once and records the status.

    python benchmarks/bench_serve.py --run runs/train-celeba --root ~/facelab-data/celeba --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench_photo_latency import photos  # benchmarks/ is on sys.path when run as a script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A grey 8-bit PNG of ``width`` x ``height`` with the given compressed pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def hostile() -> dict[str, bytes]:
    """Uploads a public service meets, each of which must get a clear 4xx."""
    side = 10_000  # 100 Mpx of zeros compress to about 100 kB
    bomb = _png(side, side, zlib.compress(b"\x00" * (side + 1) * side, 9))
    return {"empty body": b"", "text named .jpg": b"not an image at all", "truncated JPEG": photos(None, 1, 0)[0][:500],
            "PNG header of 40000x40000": _png(40_000, 40_000, zlib.compress(b"\x00" * 1000)),
            f"zip bomb PNG ({side}x{side} in {len(bomb):,} bytes)": bomb,
            "PDF/PNG polyglot": b"%PDF-1.4\n" + bomb[:100], "30 MB upload": b"\xff\xd8\xff" + b"\x00" * (30 << 20)}


async def load(url: str, data: list[bytes], n: int, concurrency: int) -> tuple[list[float], Counter]:
    latencies: list[float] = []
    codes: Counter = Counter()
    queue = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            r = await client.post(url, files={"file": (f"{i}.jpg", data[i % len(data)], "image/jpeg")})
            codes[r.status_code] += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--engine", default="onnx")
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--max-concurrent", type=int, default=2, help="the server's prediction slots")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    port = _free_port()
    cmd = [sys.executable, "-m", "facelab.cli", "serve", str(args.run), "--port", str(port), "--engine", args.engine,
           "--detector", args.detector, "--max-concurrent", str(args.max_concurrent), "--faces", "detect"]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        data = photos(args.root, 50, 0)
        t0 = time.perf_counter()
        latencies, codes = asyncio.run(load(base + "/v1/predict", data, args.requests, args.concurrency))
        wall = time.perf_counter() - t0
        table = {}
        for name, body in hostile().items():
            r = httpx.post(base + "/v1/predict", files={"file": ("x.jpg", body, "image/jpeg")}, timeout=60)
            table[name] = {"status": r.status_code, "detail": (r.json().get("detail") or r.json().get("note", ""))[:120]}
        alive = httpx.get(base + "/healthz").status_code == 200
        peak = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = np.array(latencies) * 1000
    errors = sum(c for code, c in codes.items() if code not in (200, 503))
    out = {"run": str(args.run), "engine": args.engine, "detector": args.detector, "requests": args.requests,
           "concurrency": args.concurrency, "server_prediction_slots": args.max_concurrent, "cpus": os.cpu_count(),
           "status_codes": {str(k): v for k, v in sorted(codes.items())}, "errors": errors,
           "throughput_per_s": round(codes[200] / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
           "p95_ms": round(float(np.percentile(ms, 95)), 1), "server_peak_rss_mb": peak, "alive_after": alive,
           "hostile": table}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.requests} requests, {args.concurrency} in flight: {out['throughput_per_s']}/s, p50 {out['p50_ms']} ms, "
          f"p95 {out['p95_ms']} ms, codes {out['status_codes']}, errors {errors}, peak {peak:.0f} MB")
    for name, r in table.items():
        print(f"  {r['status']}  {name}: {r['detail']}")


if __name__ == "__main__":
    main()
