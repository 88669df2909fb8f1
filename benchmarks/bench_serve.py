"""``facelab serve`` under load on 127.0.0.1: throughput, latency, wrong answers and memory; and its answers to
hostile uploads.

Starts the real server (``facelab serve RUN``, uvicorn) in a subprocess for each detector and engine and runs
three measurements against it (``--mode``, default all):

* ``load``: real photos (GENKI-4K's photos, CelebA validation faces pasted into 640x480 photos, and 2x2 group
  photos of GENKI faces) are first served one at a time, each answer kept as the photo's reference; then
  ``--clients`` levels (default 1, 4, 16) of clients post them at once, each client one request after the other,
  ``--rounds`` times the photo set per level. Reported per level: photos/s, p50/p95 latency, status codes, errors
  (any status but 200), wrong answers (a 200 whose body differs from the photo's reference in anything but
  ``seconds``) and the server's peak RSS (VmHWM) so far. The server queues every client (``--max-queue`` = the
  largest level), so a 503 would be an error too.
* ``memory``: a fresh server per upload kind; after one warm-up photo its RSS is the baseline, then 16 clients
  post the same worst-case upload at once (a PNG of pixels just under the limit, its 16-bit variant, a JPEG
  just under the limit) with the service's default pixel limit and with the decoder's 89.5 Mpx; the peak RSS
  above the baseline and the status codes are reported (403/413/503 are the service refusing, not failing).
* ``hostile``: each hostile upload once, with the status it got.

Every figure is printed as JSON with ``--json``. The machine running this may be shared: compare the ratios
(clients 4 and 16 against 1, one detector against the other) rather than the absolute figures.

    python benchmarks/bench_serve.py --run runs/train-celeba --celeba ~/facelab-data/celeba \\
        --genki ~/facelab-data/genki4k/files --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import httpx2 as httpx
import numpy as np

from bench_photo_latency import photos as pasted_photos  # benchmarks/ is on sys.path when run as a script

MAX_PIXELS = 89_478_485  # the decoder's own limit (facelab.data.decode.MAX_PIXELS)


# ---- the server ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb(pid: int) -> dict[str, float | None]:
    """The process's current (VmRSS) and peak (VmHWM) resident memory in MB."""
    out: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class Server:
    """``facelab serve`` in a subprocess, on a free port, until the ``with`` block ends."""

    def __init__(self, run: Path, *, engine: str, detector: str, options: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "facelab.cli", "serve", str(run), "--port", str(self.port),
                    "--engine", engine, "--detector", detector, "--faces", "detect", *options]

    def __enter__(self) -> Server:
        self.log = tempfile.TemporaryFile()  # the server's stderr (a pipe nobody reads would block it when full)
        self.proc = subprocess.Popen(self.cmd, stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 600  # the onnx engine may export the run first
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server stopped: {self.stderr()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise SystemExit("the server did not start within 600 s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        elif self.proc.returncode:
            _progress(f"the server ended with {self.proc.returncode}: {self.stderr()[-1000:]}")
        self.log.close()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def memory(self) -> dict[str, float | None]:
        return _memory_mb(self.proc.pid)


# ---- photos ----------------------------------------------------------------------------------------------
def _jpeg(image_bgr: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def real_photos(genki: Path | None, celeba: Path | None, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """About ``n`` different photos with faces, named: GENKI-4K photos as they are, CelebA validation faces pasted
    into 640x480 photos, and 640x480 group photos of four GENKI faces. Synthetic faces when neither is given."""
    out: list[tuple[str, bytes]] = []
    if genki is not None:
        files = sorted(genki.glob("*.jpg"))
        out += [(f"genki/{p.name}", p.read_bytes()) for p in files[: n // 3]]
        rng = np.random.default_rng(seed)
        for g in range(n // 6):
            picks = rng.choice(len(files), 4, replace=False)
            tiles = [cv2.resize(cv2.imread(str(files[i])), (320, 240), interpolation=cv2.INTER_AREA) for i in picks]
            group = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
            out.append((f"group/{g}", _jpeg(group)))
    rest = n - len(out)
    out += [(f"celeba-pasted/{i}", data) for i, data in enumerate(pasted_photos(celeba, rest, seed))]
    return out


def _png(width: int, height: int, *, bit_depth: int = 8, rows: int | None = None) -> bytes:
    """A grey PNG of ``width`` x ``height`` black pixels (a few hundred kB for tens of megapixels); with ``rows``,
    only that many rows of pixel data follow the header (a header that lies)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, 0, 0, 0, 0])
    row = b"\x00" * (1 + width * bit_depth // 8)  # filter byte + pixels
    idat = zlib.compressobj(9)
    body = b"".join(idat.compress(row) for _ in range(height if rows is None else rows)) + idat.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def worst_cases(pixels: int, face: bytes) -> dict[tuple[str, str], bytes]:
    """Uploads of just under ``pixels`` pixels that cost the decoder the most: PNGs (decoded whole) and a JPEG
    (decoded reduced) with a real face pasted in."""
    side = int(pixels ** 0.5) - 1
    w, h = int(side * 1.2), int(side / 1.2)
    photo = np.full((h, w, 3), 128, np.uint8)
    small = cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(small, (small.shape[1] * 4, small.shape[0] * 4))
    photo[h // 3: h // 3 + big.shape[0], w // 3: w // 3 + big.shape[1]] = big
    return {("png8", f"PNG 8-bit grey {side}x{side}"): _png(side, side),
            ("png16", f"PNG 16-bit grey {side}x{side}"): _png(side, side, bit_depth=16),
            ("jpeg", f"JPEG {w}x{h} with a face"): _jpeg(photo)}


# ---- load ------------------------------------------------------------------------------------------------
def _canonical(r: httpx.Response) -> str | None:
    if r.status_code != 200:
        return None
    body = r.json()
    body.pop("seconds", None)
    return json.dumps(body, sort_keys=True)


async def _post(client: httpx.AsyncClient, url: str, name: str, data: bytes) -> httpx.Response:
    return await client.post(url, files={"file": (name.replace("/", "_"), data, "application/octet-stream")})


async def references(url: str, photos: list[tuple[str, bytes]]) -> list[str | None]:
    """Each photo served alone, one after the other."""
    async with httpx.AsyncClient(timeout=300) as client:
        return [_canonical(await _post(client, url, n, d)) for n, d in photos]  # served alone: must not fail


async def load(url: str, photos: list[tuple[str, bytes]], alone: list[str | None], clients: int,
               rounds: int) -> dict[str, Any]:
    """``clients`` clients posting every photo ``rounds`` times in all, each one request at a time."""
    jobs = [i for _ in range(rounds) for i in range(len(photos))]
    np.random.default_rng(clients).shuffle(jobs)
    latencies: list[float] = []
    codes: Counter = Counter()
    wrong: list[str] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while jobs:
            i = jobs.pop()
            t0 = time.perf_counter()
            try:
                r = await _post(client, url, *photos[i])
            except httpx.HTTPError as e:  # the server died or hung up
                codes[type(e).__name__] += 1
                continue
            codes[r.status_code] += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
                if _canonical(r) != alone[i]:
                    wrong.append(photos[i][0])

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "requests": sum(codes.values()), "seconds": round(wall, 2),
            "photos_per_s": round(codes[200] / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
            "errors": sum(c for k, c in codes.items() if k != 200),
            "errors_5xx": sum(c for k, c in codes.items() if isinstance(k, int) and k >= 500),
            "connection_errors": sum(c for k, c in codes.items() if not isinstance(k, int)),
            "wrong_answers": len(wrong), "wrong_photos": sorted(set(wrong))[:10]}


def run_load(args: argparse.Namespace, photos: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    rows = []
    for detector in args.detectors:
        for engine in args.engines:
            options = ["--max-concurrent", str(args.max_concurrent), "--max-queue", str(max(args.clients))]
            with Server(args.run, engine=engine, detector=detector, options=options) as server:
                url = server.url + "/v1/predict"
                alone = asyncio.run(references(url, photos))
                levels = []
                for clients in args.clients:
                    level = asyncio.run(load(url, photos, alone, clients, args.rounds))
                    level.update(server.memory(), alive=server.alive)
                    levels.append(level)
                    _progress(f"{detector}/{engine} x{clients}: {level['photos_per_s']}/s p95 {level['p95_ms']} ms "
                              f"errors {level['errors']} wrong {level['wrong_answers']}")
            one = levels[0]["photos_per_s"]
            for level in levels:
                level["photos_per_s_vs_1_client"] = round(level["photos_per_s"] / one, 2) if one else None
            rows.append({"detector": detector, "engine": engine, "photos": len(photos),
                         "photos_with_faces_alone": sum(a is not None and '"box"' in a for a in alone),
                         "levels": levels})
    return rows


# ---- memory ----------------------------------------------------------------------------------------------
async def _burst(url: str, data: bytes, clients: int) -> Counter:
    async def one(client: httpx.AsyncClient) -> int | str:
        try:
            return (await _post(client, url, "upload", data)).status_code
        except httpx.HTTPError as e:  # the server died or hung up
            return type(e).__name__

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        return Counter(await asyncio.gather(*(one(client) for _ in range(clients))))


def run_memory(args: argparse.Namespace, warm: bytes) -> list[dict[str, Any]]:
    rows = []
    for limit_name, limit in (("service default", None), ("decoder's 89.5 Mpx", MAX_PIXELS)):
        cases = worst_cases(limit or args.default_pixels, warm)
        for (kind, name), data in cases.items():
            if kind not in args.worst:
                continue
            options = ["--max-concurrent", str(args.max_concurrent)] + (["--max-pixels", str(limit)] if limit else [])
            with Server(args.run, engine=args.engines[0], detector=args.detectors[0], options=options) as server:
                asyncio.run(references(server.url + "/v1/predict", [("warm", warm)]))
                base = server.memory()["rss_mb"] or 0.0
                t0 = time.perf_counter()
                codes = asyncio.run(_burst(server.url + "/v1/predict", data, args.burst))
                wall = time.perf_counter() - t0
                peak = server.memory()["peak_rss_mb"] or 0.0
                row = {"limit": limit_name, "upload": name, "upload_kb": round(len(data) / 1024),
                       "clients": args.burst, "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
                       "seconds": round(wall, 1), "baseline_rss_mb": round(base), "peak_rss_mb": round(peak),
                       "peak_above_baseline_mb": round(peak - base), "alive_after": server.alive}
            rows.append(row)
            _progress(f"memory {limit_name} {name}: +{row['peak_above_baseline_mb']} MB, {row['status_codes']}")
    return rows


# ---- hostile ---------------------------------------------------------------------------------------------
def hostile(face: bytes) -> dict[str, bytes]:
    """Uploads a public service meets, each of which must get a clear 4xx."""
    side = 10_000  # 100 Mpx of zeros compress to about 100 kB
    return {"empty body": b"", "text named .jpg": b"not an image at all", "truncated JPEG": face[:500],
            "PNG header of 40000x40000": _png(40_000, 40_000, rows=1),
            f"zip bomb PNG ({side}x{side})": _png(side, side), "PDF/PNG polyglot": b"%PDF-1.4\n" + _png(8, 8),
            "30 MB upload": b"\xff\xd8\xff" + b"\x00" * (30 << 20)}


def run_hostile(args: argparse.Namespace, face: bytes) -> dict[str, Any]:
    table = {}
    with Server(args.run, engine=args.engines[0], detector=args.detectors[0], options=[]) as server:
        for name, body in hostile(face).items():
            try:
                r = httpx.post(server.url + "/v1/predict", files={"file": ("x.jpg", body, "image/jpeg")}, timeout=120)
            except httpx.HTTPError as e:  # e.g. the server closed the connection while the client still sent
                table[name] = {"status": None, "detail": f"{type(e).__name__}: {e}"[:120]}
                continue
            detail = r.json().get("detail") or r.json().get("note") or "" if r.content else ""
            table[name] = {"status": r.status_code, "detail": str(detail)[:120]}
        table["alive after"] = server.alive
    return table


# ---- main ------------------------------------------------------------------------------------------------
def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "note": "a machine shared with other work: compare ratios, not absolute figures"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a classifier run trained on aligned faces (CelebA)")
    ap.add_argument("--celeba", type=Path, default=None, help="CelebA root: validation faces pasted into photos")
    ap.add_argument("--genki", type=Path, default=None, help="GENKI-4K's files/ folder of photos")
    ap.add_argument("--mode", nargs="+", choices=["load", "memory", "hostile"], default=["load", "memory", "hostile"])
    ap.add_argument("--photos", type=int, default=24, help="different photos in the load test")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=2, help="times each level posts the photo set")
    ap.add_argument("--detectors", nargs="+", default=["mtcnn", "retinaface"])
    ap.add_argument("--engines", nargs="+", default=["torch", "onnx"])
    ap.add_argument("--max-concurrent", type=int, default=2, help="the server's prediction slots (its default: 2)")
    ap.add_argument("--burst", type=int, default=16, help="clients posting the worst-case upload at once")
    ap.add_argument("--default-pixels", type=int, default=52_000_000, help="the service's default pixel limit")
    ap.add_argument("--worst", nargs="+", choices=["png8", "png16", "jpeg"], default=["png8", "png16", "jpeg"],
                    help="the worst-case uploads of the memory test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    photos = real_photos(args.genki, args.celeba, args.photos)
    out: dict[str, Any] = {"run": str(args.run), "machine": _machine(), "server_prediction_slots": args.max_concurrent,
                           "photos": sorted(Counter(n.split("/")[0] for n, _ in photos).items())}
    if "load" in args.mode:
        out["load"] = run_load(args, photos)
    if "memory" in args.mode:
        out["memory"] = run_memory(args, photos[0][1])
    if "hostile" in args.mode:
        out["hostile"] = run_hostile(args, photos[0][1])
    out["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for row in out.get("load", []):
        for lv in row["levels"]:
            print(f"{row['detector']:10s} {row['engine']:5s} x{lv['clients']:<3d} {lv['photos_per_s']:6.2f}/s "
                  f"({lv['photos_per_s_vs_1_client']}x) p50 {lv['p50_ms']:7.1f} p95 {lv['p95_ms']:7.1f} ms "
                  f"errors {lv['errors']} wrong {lv['wrong_answers']} peak RSS {lv['peak_rss_mb']:.0f} MB")
    for row in out.get("memory", []):
        print(f"{row['limit']:20s} {row['upload']:32s} x{row['clients']}: +{row['peak_above_baseline_mb']} MB "
              f"(peak {row['peak_rss_mb']} MB) {row['status_codes']} alive {row['alive_after']}")
    for name, r in out.get("hostile", {}).items():
        print(f"  {r if isinstance(r, bool) else r['status']}  {name}")


if __name__ == "__main__":
    main()
