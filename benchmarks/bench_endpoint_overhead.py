"""Request overhead of the generation endpoint: what HTTP, queueing and encoding add to a generation.

Starts a real `gen404 serve` on a free loopback port, posts prompts the way the subnet's miner
does (form field `prompt`, url-encoded), and reports per request:

    overhead = client-measured time (request sent -> whole PLY received) - X-Generation-Time

where X-Generation-Time is the engine's own time for Generator.generate. Overhead therefore
covers form parsing, the queue hand-off to the worker thread, PLY encoding (also shown alone,
from X-Timings "encode") and the transfer over loopback.

CPU dev box (smoke preset shortened to 2 steps: overhead does not depend on step count):
    python -m benchmarks.bench_endpoint_overhead -n 10 --set iters=2
GPU box (the lead):
    python -m benchmarks.bench_endpoint_overhead --preset text_mv_fast --random-weights -n 20
Against an endpoint already running: --url http://127.0.0.1:10006
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.server import running_server

REPO_ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["a red sports car", "a wooden chair", "a ceramic teapot with blue flowers", "a small robot"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("-n", "--requests", type=int, default=10, help="measured requests (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset key for the run (through a temporary user preset), e.g. iters=2",
    )
    p.add_argument("--url", help="measure an endpoint that is already running instead of starting one")
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    return p.parse_args()


def measure(client: httpx.Client, base_url: str, prompt: str) -> dict[str, float]:
    started = time.perf_counter()
    response = client.post(base_url + "/generate/", data={"prompt": prompt})
    client_s = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"request failed: {response.status_code} {response.text[:300]}")
    engine_s = float(response.headers["x-generation-time"])
    timings = json.loads(response.headers["x-timings"])
    return {
        "client_s": client_s,
        "engine_s": engine_s,
        "overhead_s": client_s - engine_s,
        "encode_s": float(timings.get("encode", 0.0)),
        "server_wait_s": float(response.headers.get("x-queue-time", 0.0)),
        "bytes": float(len(response.content)),
    }


def summarise(rows: list[dict[str, float]], key: str) -> str:
    values = sorted(r[key] for r in rows)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return f"median {statistics.median(values) * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms   min {values[0] * 1000:8.2f} ms"


def run(base_url: str, args: argparse.Namespace, headers: dict[str, str]) -> None:
    with httpx.Client(timeout=600, headers=headers, trust_env=False) as client:
        health = client.get(base_url + "/health").json()
        for i in range(args.warmup):
            measure(client, base_url, PROMPTS[i % len(PROMPTS)])
        rows = [measure(client, base_url, PROMPTS[i % len(PROMPTS)]) for i in range(args.requests)]
        floor = []  # an HTTP round trip that does no work: the part of overhead no code change removes
        for _ in range(20):
            started = time.perf_counter()
            client.get(base_url + "/health")
            floor.append({"health_s": time.perf_counter() - started})
    print(
        f"endpoint {base_url}: preset {health.get('preset')}, device {health.get('device')}, models {health.get('models')}"
    )
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(
        f"{args.requests} requests (after {args.warmup} warm-up), PLY {statistics.median(r['bytes'] for r in rows) / 1e6:.2f} MB"
    )
    print(f"  client time     {summarise(rows, 'client_s')}")
    print(f"  engine time     {summarise(rows, 'engine_s')}")
    print(f"  overhead        {summarise(rows, 'overhead_s')}   <- client - X-Generation-Time")
    print(f"   of it: encode  {summarise(rows, 'encode_s')}")
    print(
        f"   server hops    {summarise(rows, 'server_wait_s')}   <- X-Queue-Time: parse, queue, thread hand-offs"
    )
    print(f"  GET /health     {summarise(floor, 'health_s')}   <- bare HTTP round trip, for scale")
    if args.json:
        print(
            json.dumps({"overhead_median_s": statistics.median(r["overhead_s"] for r in rows), "rows": rows})
        )


def main() -> None:
    args = parse_args()
    key = os.environ.get("GEN404_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if args.url:
        run(args.url.rstrip("/"), args, headers)
        return
    env: dict[str, str] = {}
    preset = args.preset
    with tempfile.TemporaryDirectory(prefix="gen404-bench-") as tmp:
        if args.set:  # a user preset that extends the chosen one with the overrides
            preset = f"bench_{args.preset}"
            lines = [f"extends: {args.preset}"] + [item.replace("=", ": ", 1) for item in args.set]
            Path(tmp, f"{preset}.yaml").write_text("\n".join(lines) + "\n")
            env["GEN404_PRESETS_DIR"] = tmp
        cmd = ["serve", "--preset", preset, "--device", args.device, "--log-level", "warning"]
        if args.random_weights:
            cmd.append("--random-weights")
        with running_server(cmd, env=env, timeout=900, headers=headers) as server:
            run(server.base_url, args, headers)


if __name__ == "__main__":
    main()
