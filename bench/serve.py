"""emodet serve under load, on loopback only (127.0.0.1), beside emodet predict on the same clips.

    python bench/serve.py [--model M.onnx] [--work /tmp/emodet-bench-serve] [--seconds 10]

Without --model it trains and exports a tiny log-mel CNN with global normalisation on a synthetic
corpus (configs/cnn_logmel.yaml, a few epochs: the timing does not depend on its accuracy) under
--work, once. Then, in this order and in this run:

1. reference: ``emodet predict``'s own work on the same 3 s clips (EmotionPredictor.predict on each
   file, one thread, in this process: p50/p99), and the command itself over the folder of clips
   (wall time, interpreter start included);
2. HTTP: ``emodet serve MODEL`` (one process, as a user starts it), N concurrent clients (1, 8, 32)
   posting the clips (raw audio/wav bodies on keep-alive connections) for --seconds each: requests/s,
   p50/p99 latency, errors;
3. memory: --requests requests (10,000) at 8 clients; the server's RSS before (after a warm-up) and after;
4. streams: a server pinned to one core (CPU 0; the clients on CPU 1), M concurrent WebSocket streams
   sending 16 kHz float32 in 200 ms chunks in real time for --stream-seconds; a stream keeps up when no
   window is dropped and its predictions arrive within a hop (0.5 s) of their audio; the largest M that
   keeps up, and the server's CPU use.

Targets (issue 20, 2 cores): >= 150 requests/s with p99 <= 50 ms at 8 clients; memory flat over
10,000 requests; >= 40 live streams a core. Every loop is bounded in count and time, and every
address is 127.0.0.1. Figures move when other jobs run: the script lists busy processes first.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

HOST = "127.0.0.1"  # never anything else
REPO = Path(__file__).resolve().parents[1]


def emodet(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emodet", *map(str, args)], check=True, capture_output=True,
                          text=True, **kwargs)


def busy_processes(interval: float = 1.0) -> list[str]:
    """Other processes that used at least a fifth of a core over the last ``interval`` seconds (timing suffers)."""
    def ticks() -> dict[int, int]:
        out = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                out[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return out

    first = ticks()
    time.sleep(interval)
    busy = []
    for pid, now in ticks().items():
        share = (now - first.get(pid, now)) / os.sysconf("SC_CLK_TCK") / interval
        if pid != os.getpid() and share >= 0.2:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            busy.append(f"{pid} {share:.0%} of a core: {cmd[:90]}")
    return busy


# -- the model and the clips -------------------------------------------------------------------
def tiny_model(work: Path) -> Path:
    """A tiny log-mel CNN, globally normalised, its front end in the graph (built once under ``work``)."""
    model = work / "cnn_global.onnx"
    if model.exists():
        return model
    print("building the tiny model (synthetic corpus, 4 epochs of configs/cnn_logmel.yaml, export)...", flush=True)
    emodet("data", "synth", "--out", work / "synth", "--per-class", 6, "--speakers", 4, "--seed", 0)
    emodet("train", "--config", REPO / "configs" / "cnn_logmel.yaml", "--run-name", "cnn_global", "--runs-dir",
           work / "runs", "--data-root", work / "synth", "--set", "data.normalize=global", "--set", "data.corpus=folder",
           "--set", "training.epochs=4", "--set", f"features.cache_dir={work / 'cache'}", "--no-progress")
    emodet("export", work / "runs" / "cnn_global", "--out", model, "--with-features")
    return model


def clips(work: Path, n: int = 16) -> list[Path]:
    """``n`` 3 s clips (synthetic speech, cut or repeated to 3 s), written once."""
    from emodet.core.audio import load_audio

    folder = work / "clips"
    if len(list(folder.glob("*.wav"))) >= n:
        return sorted(folder.glob("*.wav"))[:n]
    if not (work / "synth").exists():
        emodet("data", "synth", "--out", work / "synth", "--per-class", 6, "--speakers", 4, "--seed", 0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted((work / "synth").rglob("*.wav"))[:: 7][:n]):
        wav = load_audio(path)
        sf.write(folder / f"clip{i:02d}.wav", np.resize(wav, 48000), 16000, subtype="PCM_16")
    return sorted(folder.glob("*.wav"))


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def reference(model: Path, paths: list[Path], repeats: int = 20) -> dict:
    """What ``emodet predict`` does per file, here (p50/p99), and the command over the folder (wall)."""
    from emodet.runtime import EmotionPredictor

    p = EmotionPredictor(model)
    for path in paths:
        p.predict(str(path))
    times = []
    for _ in range(repeats):
        for path in paths:
            began = time.perf_counter()
            p.predict(str(path))
            times.append(time.perf_counter() - began)
    began = time.perf_counter()
    emodet("predict", model, paths[0].parent, "--json")
    wall = time.perf_counter() - began
    return {"p50_ms": percentiles(times)[0], "p99_ms": percentiles(times)[1], "cli_s": wall, "cli_files": len(paths)}


# -- the server ----------------------------------------------------------------------------------
class Server:
    """``emodet serve MODEL`` in its own process on a free loopback port (optionally pinned to CPUs)."""

    def __init__(self, model: Path, cpus: set[int] | None = None, workers: int = 1):
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen([sys.executable, "-m", "emodet", "serve", str(model), "--host", HOST, "--port",
                                      str(self.port), "--workers", str(workers)], preexec_fn=pin,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not answer /health within 60 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post_loop(port: int, bodies: list[bytes], stop_at: float, max_requests: int, out: dict, lock) -> None:
    """One client: keep-alive POSTs until ``stop_at`` or ``max_requests``; latencies and errors into ``out``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    latencies, errors, i = [], 0, 0
    while time.perf_counter() < stop_at and i < max_requests:
        body = bodies[i % len(bodies)]
        i += 1
        began = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "audio/wav"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200 or b'"label"' not in data:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            continue
        latencies.append(time.perf_counter() - began)
    conn.close()
    with lock:
        out["latencies"] += latencies
        out["errors"] += errors


def load(port: int, bodies: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    out, lock = {"latencies": [], "errors": 0}, threading.Lock()
    stop_at = time.perf_counter() + seconds
    per_client = -(-max_requests // clients)
    threads = [threading.Thread(target=post_loop, args=(port, bodies, stop_at, per_client, out, lock))
               for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    p50, p99 = percentiles(out["latencies"]) if out["latencies"] else (float("nan"), float("nan"))
    return {"clients": clients, "requests": len(out["latencies"]), "rps": len(out["latencies"]) / wall, "p50_ms": p50,
            "p99_ms": p99, "errors": out["errors"]}


# -- live streams --------------------------------------------------------------------------------
async def one_stream(port: int, audio: np.ndarray, seconds: float, chunk_s: float, offset: float, stats: dict) -> None:
    import websockets

    await asyncio.sleep(offset)  # streams start spread over a hop, as real clients would
    chunk = int(chunk_s * 16000)
    pieces = [np.resize(audio[i:], chunk).astype("<f4").tobytes() for i in range(0, len(audio), chunk)]
    async with websockets.connect(f"ws://{HOST}:{port}/stream?format=f32le", max_size=2**20, compression=None) as ws:
        json.loads(await ws.recv())  # ready
        began = time.monotonic()

        async def send() -> None:
            for k in range(int(seconds / chunk_s)):
                await asyncio.sleep(max(0.0, began + (k + 1) * chunk_s - time.monotonic()))
                await ws.send(pieces[k % len(pieces)])
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        async for text in ws:
            message = json.loads(text)
            if message["type"] == "prediction":
                stats["lags"].append(time.monotonic() - (began + message["end"]))
            elif message["type"] == "summary":
                stats["dropped_s"] += message["dropped_s"]
                break
        await sender


async def streams(port: int, audio: np.ndarray, m: int, seconds: float, chunk_s: float = 0.2) -> dict:
    stats = {"lags": [], "dropped_s": 0.0}
    rng = np.random.default_rng(0)
    await asyncio.wait_for(asyncio.gather(*(one_stream(port, audio, seconds, chunk_s, float(rng.uniform(0, 0.5)), stats)
                                            for _ in range(m))), timeout=seconds + 60)
    lags = np.array(stats["lags"]) if stats["lags"] else np.array([np.inf])
    return {"streams": m, "windows": len(stats["lags"]), "lag_p50_ms": float(np.percentile(lags, 50) * 1000),
            "lag_p99_ms": float(np.percentile(lags, 99) * 1000), "dropped_s": stats["dropped_s"]}


def stream_capacity(model: Path, audio: np.ndarray, counts: list[int], seconds: float, hop_s: float = 0.5) -> list[dict]:
    """M streams against a server pinned to CPU 0 (clients on CPU 1), up the list until one fails to keep up."""
    server = Server(model, cpus={0})
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1} if os.cpu_count() > 1 else mine)
    rows = []
    try:
        for m in counts:
            cpu0, began = server.cpu_seconds(), time.monotonic()
            row = asyncio.run(streams(server.port, audio, m, seconds))
            row["server_core_share"] = (server.cpu_seconds() - cpu0) / (time.monotonic() - began)
            row["keeps_up"] = row["dropped_s"] == 0 and row["lag_p99_ms"] <= hop_s * 1000
            rows.append(row)
            print(f"  {m:4d} streams: windows {row['windows']}, lag p50 {row['lag_p50_ms']:.0f} ms p99 "
                  f"{row['lag_p99_ms']:.0f} ms, dropped {row['dropped_s']:.1f} s, server {row['server_core_share']:.0%} "
                  f"of its core -> {'keeps up' if row['keeps_up'] else 'falls behind'}", flush=True)
            if not row["keeps_up"]:
                break
    finally:
        os.sched_setaffinity(0, mine)
        server.stop()
    return rows


# -- the run ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an exported model (default: build the tiny CNN under --work)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/emodet-bench-serve"))
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of load at each client count")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=10000, help="requests of the memory run")
    ap.add_argument("--streams", type=int, nargs="+", default=[10, 20, 40, 60, 80, 120])
    ap.add_argument("--stream-seconds", type=float, default=20.0)
    args = ap.parse_args()

    busy = busy_processes()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; " + (
        "busy processes (figures will suffer):\n  " + "\n  ".join(busy) if busy else "no other busy process"))
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or tiny_model(args.work)
    paths = clips(args.work)
    bodies = [p.read_bytes() for p in paths]
    print(f"model {model} ({model.stat().st_size / 1e6:.2f} MB); {len(paths)} clips of 3 s ({len(bodies[0]) / 1e3:.0f} KB)")

    ref = reference(model, paths)
    print(f"reference, emodet predict's work per clip (this process, 1 thread): p50 {ref['p50_ms']:.1f} ms, p99 "
          f"{ref['p99_ms']:.1f} ms; the command over {ref['cli_files']} clips: {ref['cli_s']:.2f} s wall "
          f"({ref['cli_files'] / ref['cli_s']:.1f} clips/s, interpreter start included)", flush=True)

    server = Server(model)
    try:
        load(server.port, bodies, 4, 2.0, 400)  # warm-up
        rows = []
        for c in args.clients:
            cpu0 = server.cpu_seconds()
            rows.append(load(server.port, bodies, c, args.seconds, 100000))
            r = rows[-1]
            r["server_cpu_ms"] = (server.cpu_seconds() - cpu0) / max(1, r["requests"] + r["errors"]) * 1000
            print(f"HTTP {c:3d} clients: {r['rps']:7.1f} requests/s, p50 {r['p50_ms']:6.1f} ms, p99 {r['p99_ms']:6.1f} ms, "
                  f"errors {r['errors']} ({r['requests']} requests); server CPU {r['server_cpu_ms']:.1f} ms a request",
                  flush=True)
        before = server.rss_mb()
        soak = load(server.port, bodies, 8, 600.0, args.requests)
        after = server.rss_mb()
        print(f"memory: {soak['requests']} requests at 8 clients ({soak['rps']:.0f}/s, errors {soak['errors']}): server "
              f"RSS {before:.1f} MB before, {after:.1f} MB after ({after - before:+.1f} MB)", flush=True)
    finally:
        server.stop()

    from emodet.core.audio import load_audio

    print(f"streams, server on one core, {args.stream_seconds:g} s each, 200 ms chunks, window 2 s, hop 0.5 s:", flush=True)
    cap = stream_capacity(model, load_audio(paths[0]), args.streams, args.stream_seconds)
    kept = max((r["streams"] for r in cap if r["keeps_up"]), default=0)

    at8 = next((r for r in rows if r["clients"] == 8), None)
    print("\nsummary (targets: >= 150 requests/s and p99 <= 50 ms at 8 clients; memory flat; >= 40 streams a core)")
    if at8:
        print(f"  8 clients: {at8['rps']:.0f} requests/s, p99 {at8['p99_ms']:.1f} ms, errors {at8['errors']}  "
              f"[{'met' if at8['rps'] >= 150 and at8['p99_ms'] <= 50 else 'short'}]  beside emodet predict's "
              f"{ref['p50_ms']:.1f} ms a clip (p50)")
    print(f"  memory over {soak['requests']} requests: {after - before:+.1f} MB")
    print(f"  live streams one core keeps up with: {kept} (of those tried: {', '.join(str(r['streams']) for r in cap)})  "
          f"[{'met' if kept >= 40 else 'short'}]")
    busy = busy_processes()
    if busy:
        print("  busy processes at the end (figures may suffer):\n    " + "\n    ".join(busy))


if __name__ == "__main__":
    main()
