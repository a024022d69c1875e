"""Console benchmark: launch-to-first-frame time and the console's own CPU use.

    python -m benchmarks.bench_console [--seconds 20] [--refresh 1.0] [--rehearsal]
    python -m benchmarks.bench_console --local 4 --fake-local --remote 4     # issue 17's 8 endpoints

Starts the real `gen404-console` in a pseudo-terminal (200x50) with one smoke endpoint on a
free port and private state/config dirs (`--local N`: N of them), then reports:
  * first frame: seconds from exec to the first full screen (the endpoints table drawn)
  * endpoint ready: seconds until the table shows the endpoint ready
  * CPU: the console process's own CPU seconds (utime+stime from /proc, children excluded)
    per wall second over --seconds at the given refresh, once the endpoint is ready
`--remote M` adds M endpoints of "another box": stdlib stand-ins (tests/support/fake_endpoint.py:
/health, /stats, /gpu) bound to 127.0.0.2, watched with `--endpoint http://127.0.0.2:PORT`.
`--fake-local` makes the local endpoints such stand-ins too (on 127.0.0.1, watched with
--attach) so the figure is the console's own cost, not N smoke processes fighting it for CPU.
Mining rehearsal is off by default (it sends generations to the endpoint); --rehearsal turns
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

    waiting = list(urls)
    while waiting and time.perf_counter() - t0 < timeout:
        term.drain(0.2)
        for url in list(waiting):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).json().get("status") == "ready":
                    waiting.remove(url)
    return None if waiting else round(time.perf_counter() - t0, 2)


def start_fakes(host: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    procs, ports = [], []
    for _ in range(count):
        port = free_port()
        cmd = [sys.executable, str(FAKE_ENDPOINT), "--port", str(port), "--host", host, "--load-s", "0"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ports.append(port)
    return procs, ports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--refresh", type=float, default=1.0)
    p.add_argument("--rehearsal", action="store_true")
    p.add_argument("--local", type=int, default=1, metavar="N", help="local endpoints (default 1)")
    p.add_argument("--remote", type=int, default=0, metavar="M", help="remote stand-ins on 127.0.0.2")
    p.add_argument("--fake-local", action="store_true", help="local endpoints are stand-ins, watched")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    fakes, remote_ports = start_fakes("127.0.0.2", args.remote)
    if args.fake_local:
        local_fakes, ports = start_fakes("127.0.0.1", args.local)
        fakes += local_fakes
    else:
        ports = [free_port() for _ in range(args.local)]
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
    if args.fake_local:
        argv.append("--attach")
    if not args.rehearsal:
        argv.append("--no-rehearsal")
    urls = [f"http://127.0.0.1:{p}" for p in ports] + [f"http://127.0.0.2:{p}" for p in remote_ports]
    t0 = time.perf_counter()
    term = Term(argv, env)
    results: dict[str, object] = {
        "machine": "CPU, 2-core dev box" if os.cpu_count() == 2 else f"{os.cpu_count()} CPUs"
    }
    try:
        first = term.read_until(b"Endpoints", 30)
        results["first_frame_s"] = None if first is None else round(time.perf_counter() - t0, 3)
        results["endpoint_ready_s"] = wait_ready(term, urls, t0, 180)
        term.buffer = b""
        c0, w0 = cpu_seconds(term.proc.pid), time.perf_counter()
        while time.perf_counter() - w0 < args.seconds:
            term.drain(0.2)
        c1, w1 = cpu_seconds(term.proc.pid), time.perf_counter()
        results["cpu_s_per_s"] = round((c1 - c0) / (w1 - w0), 4)
        results["window_s"] = round(w1 - w0, 1)
        results["refresh_s"] = args.refresh
        results["rehearsal"] = args.rehearsal
        results["endpoints"] = {"local": args.local, "remote": args.remote, "fake_local": args.fake_local}
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
        for proc in fakes:
            proc.kill()
            proc.wait()
        state = tmp / "state" / "endpoints.json"
        with contextlib.suppress(OSError, ValueError):
            for item in json.loads(state.read_text()).get("endpoints", []):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(item["pid"]), signal.SIGKILL)
    print(f"machine            {results['machine']}")
    print(f"first frame        {results.get('first_frame_s')} s (exec -> endpoints table drawn)")
    kind = "stand-ins" if args.fake_local else "smoke preset, CPU"
    print(
        f"endpoints ready    {results.get('endpoint_ready_s')} s "
        f"({args.local} local: {kind}; {args.remote} remote stand-ins on 127.0.0.2)"
    )
    print(
        f"console CPU        {results.get('cpu_s_per_s')} CPU-s per wall-s over {results.get('window_s')} s "
        f"at refresh {args.refresh}s (rehearsal {'on' if args.rehearsal else 'off'})"
    )
    print(f"console RSS        {results.get('rss_mib')} MiB")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
