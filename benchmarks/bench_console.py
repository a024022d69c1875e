"""Console benchmark: launch-to-first-frame time and the console's own CPU use.

    python -m benchmarks.bench_console [--endpoints 8] [--remote 4] [--kind fake|smoke] [--seconds 20]
                                       [--refresh 1.0] [--rehearsal]

Starts the real `gen404-console` in a pseudo-terminal (200x50) with private state/config dirs
and N endpoints on loopback, then reports:
  * first frame: seconds from exec to the first full screen (the endpoints table drawn)
  * endpoints ready: seconds until every endpoint's GET /health says ready
  * CPU: the console process's own CPU seconds (utime+stime from /proc, children excluded)
    per wall second over --seconds at the given refresh, once the endpoints are ready
--kind fake (default): N stdlib stand-ins (tests/support/fake_endpoint.py: the /health, /stats
and /presets contract, ~50 ms to start) that the bench starts and the console watches
(`--no-spawn`), so the figure is the console's own cost of probing and drawing N endpoints.
--kind smoke: the console spawns N real `gen404 serve --preset smoke` (heavy: ~1 GB each).
--remote M: M of the N endpoints are "another box": stand-ins bound to 127.0.0.2 (they also
answer GET /gpu) that the console watches as remote ones (`--endpoint http://127.0.0.2:PORT`),
whatever --kind says for the local ones. `--endpoints 8 --remote 4` is issue 17's eight.
Mining rehearsal is off by default (it sends generations to the endpoints); --rehearsal turns
it on. The console is quit with `q` `s` (stop endpoints) and any leftover is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSOLE = Path(sys.executable).parent / "gen404-console"
FAKE_ENDPOINT = REPO / "tests" / "support" / "fake_endpoint.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Term:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.buffer = b""

    def read_until(self, needle: bytes, timeout: float) -> float | None:
        """Seconds until `needle` appears in the output (None on timeout); keeps draining."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if needle in self.buffer:
                return time.perf_counter() - start
            self.drain(0.05)
        return None

    def drain(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            with contextlib.suppress(OSError):
                self.buffer = (self.buffer + os.read(self.master, 65536))[-200_000:]

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())


def wait_ready(term: Term, urls: list[str], t0: float, timeout: float) -> float | None:
    """Seconds from launch until every endpoint's GET /health says ready (polled beside the console)."""
    import httpx

    waiting = set(urls)
    while waiting and time.perf_counter() - t0 < timeout:
        term.drain(0.2)
        for url in sorted(waiting):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(f"{url}/health", timeout=1, trust_env=False)
                if r.json().get("status") == "ready":
                    waiting.discard(url)
    return None if waiting else round(time.perf_counter() - t0, 2)


def cpu_window(term: Term, seconds: float) -> tuple[float, float]:
    """The console's CPU seconds per wall second over `seconds` (its own, children excluded)."""
    c0, w0 = cpu_seconds(term.proc.pid), time.perf_counter()
    while time.perf_counter() - w0 < seconds:
        term.drain(0.2)
    c1, w1 = cpu_seconds(term.proc.pid), time.perf_counter()
    return round((c1 - c0) / (w1 - w0), 4), round(w1 - w0, 1)


def start_fakes(host: str, ports: list[int], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for port in ports:
        with open(log_dir / f"fake-{host}-{port}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(FAKE_ENDPOINT),
                        "--port",
                        str(port),
                        "--host",
                        host,
                        "--preset",
                        "smoke",
                        "--keep-alive",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return procs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", type=int, default=8)
    p.add_argument(
        "--remote", type=int, default=0, metavar="M", help="of them, remote stand-ins on 127.0.0.2"
    )
    p.add_argument("--kind", choices=("fake", "smoke"), default="fake", help="what the local endpoints are")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each CPU window")
    p.add_argument(
        "--steady-after", type=float, default=75.0, help="start of the steady window, s after launch"
    )
    p.add_argument("--refresh", type=float, default=1.0)
    p.add_argument("--rehearsal", action="store_true")
    args = p.parse_args()
    if not 0 <= args.remote <= args.endpoints:
        p.error("--remote must be between 0 and --endpoints")

    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    ports: list[int] = []
    while len(ports) < args.endpoints:
        port = free_port()
        if port not in ports:
            ports.append(port)
    remote_ports, ports = ports[: args.remote], ports[args.remote :]
    fakes = start_fakes("127.0.0.2", remote_ports, tmp / "fake-logs")
    if args.kind == "fake":
        fakes += start_fakes("127.0.0.1", ports, tmp / "fake-logs")
    env = dict(
        os.environ,
        GEN404_STATE_DIR=str(tmp / "state"),
        GEN404_CONFIG_DIR=str(tmp / "config"),
        TERM="xterm-256color",
        COLUMNS="200",
        LINES="50",
    )
    argv = [str(CONSOLE), "--refresh", str(args.refresh)]
    for port in ports:
        argv += ["--endpoint", f"{port}:smoke"]
    for port in remote_ports:
        argv += ["--endpoint", f"http://127.0.0.2:{port}"]
    if args.kind == "fake":
        argv.append("--no-spawn")  # watch the stand-ins the bench started
    if not args.rehearsal:
        argv.append("--no-rehearsal")
    t0 = time.perf_counter()
    term = Term(argv, env)
    results: dict[str, object] = {
        "machine": "CPU, 2-core dev box" if os.cpu_count() == 2 else f"{os.cpu_count()} CPUs",
        "endpoints": args.endpoints,
        "remote": args.remote,
        "kind": args.kind,
        "load_1min_at_start": round(os.getloadavg()[0], 2),  # other work sharing the box
    }
    try:
        first = term.read_until(b"Endpoints", 30)
        results["first_frame_s"] = None if first is None else round(time.perf_counter() - t0, 3)
        urls = [f"http://127.0.0.1:{p}" for p in ports] + [f"http://127.0.0.2:{p}" for p in remote_ports]
        results["endpoints_ready_s"] = wait_ready(term, urls, t0, 180)
        term.buffer = b""
        results["cpu_first_s_per_s"], results["window_s"] = cpu_window(term, args.seconds)
        # steady state: every endpoint up more than a minute, so the uptime column (seconds
        # for the first minute) no longer changes every refresh
        settle = max(0.0, args.steady_after - (time.perf_counter() - t0))
        end = time.perf_counter() + settle
        while time.perf_counter() < end:
            term.drain(0.2)
        results["cpu_s_per_s"], _ = cpu_window(term, args.seconds)
        results["refresh_s"] = args.refresh
        results["rehearsal"] = args.rehearsal
        results["rss_mib"] = round(
            int(Path(f"/proc/{term.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024, 1
        )
        term.send("q")
        time.sleep(0.5)
        term.send("s")
        end = time.perf_counter()
        while term.proc.poll() is None and time.perf_counter() - end < 15:
            term.drain(0.1)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        state = tmp / "state" / "endpoints.json"
        with contextlib.suppress(OSError, ValueError):
            for item in json.loads(state.read_text()).get("endpoints", []):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(item["pid"]), signal.SIGKILL)
        for proc in fakes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"machine            {results['machine']}")
    print(f"first frame        {results.get('first_frame_s')} s (exec -> endpoints table drawn)")
    print(
        f"endpoints ready    {results.get('endpoints_ready_s')} s "
        f"({len(ports)} local x {args.kind}, {args.remote} remote stand-ins on 127.0.0.2)"
    )
    print(f"load at start      {results['load_1min_at_start']} (1-min load average: other work on the box)")
    mode = f"at refresh {args.refresh}s (rehearsal {'on' if args.rehearsal else 'off'})"
    print(
        f"console CPU first  {results.get('cpu_first_s_per_s')} CPU-s per wall-s over {results.get('window_s')} s "
        f"after ready {mode} (uptimes still tick every second)"
    )
    print(
        f"console CPU steady {results.get('cpu_s_per_s')} CPU-s per wall-s over {results.get('window_s')} s "
        f"from {args.steady_after:g} s after launch {mode}"
    )
    print(f"console RSS        {results.get('rss_mib')} MiB")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
