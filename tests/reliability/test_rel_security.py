"""Security: loopback by default, a key (or an explicit --insecure) for anything else, request
size limits on every path, no shell anywhere, a private state directory, and the API key never
written to a log or an answer.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console import paths
from console.config import EndpointSpec
from console.supervisor import Supervisor, launch_endpoint, serve_command
from engine.commands import score as score_command
from engine.commands import serve as serve_command_module
from engine.service.endpoint import GENERATE_BODY_LIMIT, SMALL_BODY_LIMIT
from engine.service.security import API_KEY_ENV
from tests.support.reliability_kit import API_KEY, AUTH, VALIDATOR_BODY_LIMIT, listening_addresses
from tests.support.server import REPO_ROOT, ServerProcess, gen404_cmd

# ---------------------------------------------------------------- binding


@pytest.mark.parametrize("command", ["serve", "validator"])
def test_default_bind_is_loopback(command: str) -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    serve_command_module.register(subparsers)
    score_command.register(subparsers)
    assert parser.parse_args([command]).host == "127.0.0.1"


def test_running_services_listen_on_loopback_only(endpoint: ServerProcess, validator: ServerProcess) -> None:
    """Both shared servers were started without --host: the kernel's socket table says 127.0.0.1."""
    assert listening_addresses(endpoint.port) == {"127.0.0.1"}
    assert listening_addresses(validator.port) == {"127.0.0.1"}
    assert serve_command(EndpointSpec(10006, "smoke"))[-2:] == ["--host", "127.0.0.1"]  # the console's


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    return subprocess.run(
        gen404_cmd(*args),
        cwd=REPO_ROOT,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


# The next argument makes each command stop with a usage error right AFTER the bind check, so a
# refusal is the bind rule speaking, and a pass opens no socket (nothing listens on 0.0.0.0).
STOP_AFTER_BIND = {
    "serve": (["--preset", "no-such-preset"], "unknown preset"),
    "validator": (["--max-body-mb", "0"], "--max-body-mb must be positive"),
}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gpu-box.example"])
@pytest.mark.parametrize("command", ["serve", "validator"])
def test_non_loopback_bind_needs_a_key_or_insecure(command: str, host: str) -> None:
    stop, stopped = STOP_AFTER_BIND[command]
    base = [command, "--host", host, "--port", "1", *stop]
    refused = _cli(base)
    assert refused.returncode == 2 and f"refusing to bind {host}" in refused.stderr, refused.stderr
    for args, env in (
        ([*base, "--insecure"], None),
        ([*base, "--api-key", "k3y"], None),
        (base, {API_KEY_ENV: "k3y"}),
    ):
        passed = _cli(args, env)
        assert passed.returncode == 2 and stopped in passed.stderr, (args, env, passed.stderr)
        assert "refusing to bind" not in passed.stderr


@pytest.mark.parametrize("command", ["serve", "validator"])
def test_a_blank_key_is_no_key(command: str) -> None:
    stop, _ = STOP_AFTER_BIND[command]
    r = _cli([command, "--host", "0.0.0.0", "--port", "1", *stop], {API_KEY_ENV: "   "})
    assert r.returncode == 2 and "refusing to bind" in r.stderr


# ---------------------------------------------------------------- keys never leak


def test_the_api_key_never_reaches_logs_or_answers(endpoint: ServerProcess, validator: ServerProcess) -> None:
    wrong_keys = [API_KEY + "x", API_KEY[:-1], "rel-other-secret-" + API_KEY[::-1]]
    answers: list[str] = []
    with httpx.Client(timeout=30.0) as client:
        for server in (endpoint, validator):
            for key in wrong_keys:
                for path in ("/generate/", "/stats", "/validate_txt_to_3d_ply/", "/version/"):
                    r = client.post(
                        server.url(path), data={"prompt": key}, headers={"Authorization": f"Bearer {key}"}
                    )
                    assert r.status_code == 401, (path, r.status_code)
                    answers.append(r.text + str(r.headers))
        r = client.post(endpoint.url("/generate/"), data={"prompt": "a key-shaped spoon"}, headers=AUTH)
        assert r.status_code == 200
        answers.append(str(r.headers))
        r = client.put(endpoint.url("/preset"), json={"name": "tiny"}, headers=AUTH)
        answers.append(r.text)
        for path in ("/stats", "/health", "/presets"):
            r = client.get(endpoint.url(path), headers=AUTH)
            assert r.status_code == 200
            answers.append(r.text)
        r = client.post(
            validator.url("/validate_txt_to_3d_ply/"), json={"prompt": "x", "data": "@@"}, headers=AUTH
        )
        answers.append(r.text)
    logs = endpoint.output() + validator.output()
    assert 'POST /generate/ HTTP/1.1" 401' in logs  # the access log is on (debug): it was written
    for secret in (API_KEY, *wrong_keys):
        assert secret not in logs
        assert not any(secret in a for a in answers)


# ---------------------------------------------------------------- request size limits


def _over(limit: int) -> bytes:
    return b"prompt=" + b"a" * limit


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    ("service", "method", "path", "limit", "reads_body"),
    [
        ("endpoint", "POST", "/generate/", GENERATE_BODY_LIMIT, True),
        ("endpoint", "POST", "/generate_spz/", GENERATE_BODY_LIMIT, True),
        ("endpoint", "PUT", "/preset", SMALL_BODY_LIMIT, True),
        ("endpoint", "GET", "/stats", SMALL_BODY_LIMIT, False),
        ("endpoint", "POST", "/no-such-path", SMALL_BODY_LIMIT, False),
        ("validator", "POST", "/validate_txt_to_3d_ply/", VALIDATOR_BODY_LIMIT, True),
        ("validator", "GET", "/version/", 64 * 1024, False),
    ],
)
def test_every_path_has_a_body_limit(
    request: pytest.FixtureRequest, service: str, method: str, path: str, limit: int, reads_body: bool
) -> None:
    """Over the limit: 413 from Content-Length before reading; a chunked body gets 413 as soon as
    it passes the limit on paths that read bodies (the others answer without reading it, so it
    never reaches memory). At the limit: not 413."""
    server: ServerProcess = request.getfixturevalue(service)
    body = _over(limit)
    headers = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(timeout=30.0) as client:
        declared = client.request(method, server.url(path), content=body, headers=headers)
        chunked = client.request(method, server.url(path), content=_chunks(body), headers=headers)
        at_limit = client.request(method, server.url(path), content=body[:limit], headers=headers)
    assert declared.status_code == 413, declared.text[:200]
    if reads_body:
        assert chunked.status_code == 413, chunked.text[:200]
    else:
        assert chunked.status_code in (200, 404, 405), chunked.text[:200]
    assert at_limit.status_code != 413
    if service == "validator" and path == "/validate_txt_to_3d_ply/":
        assert declared.json()["score"] == 0.0  # the subnet's failure shape, even from the guard
        assert chunked.json()["score"] == 0.0
    assert server.proc.poll() is None


# ---------------------------------------------------------------- no shell


SHELL_PATTERNS = re.compile(
    r"shell\s*=\s*True|os\.system\s*\(|os\.popen\s*\(|create_subprocess_shell|"
    r"subprocess\.getoutput|subprocess\.getstatusoutput|commands\.getoutput"
)


def test_no_shell_anywhere() -> None:
    """Every process is started from an argument list (exec), never through a shell."""
    roots = ["engine", "console", "benchmarks", "scripts", "tests"]
    offenders = []
    scanned = 0
    for root in roots:
        for path in (REPO_ROOT / root).rglob("*.py"):
            if path == Path(__file__):
                continue  # the patterns themselves
            scanned += 1
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if SHELL_PATTERNS.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert scanned > 50
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------- private state directory


def test_state_dir_is_created_0700_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEN404_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    old = os.umask(0)  # the most permissive umask: the modes must be explicit
    try:
        state = paths.state_dir()
        assert state == tmp_path / "xdg" / "gen404"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        # the console's logs and state file inside it
        sup = Supervisor(paths.default_log_dir(), paths.state_file(), prober=None, launcher=_true_launcher)  # type: ignore[arg-type]
        ep = sup.add(EndpointSpec(1, "tiny"))
        assert ep.process is not None
        ep.process.poll()
        logs = paths.default_log_dir()
        assert stat.S_IMODE(logs.stat().st_mode) == 0o700
        assert stat.S_IMODE((logs / "gen-1.log").stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.state_file().stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_an_existing_open_state_dir_is_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    monkeypatch.setenv("GEN404_STATE_DIR", str(loose))
    assert paths.state_dir() == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def _true_launcher(spec: EndpointSpec, log_path: Path) -> object:
    return launch_endpoint(spec, log_path, command=lambda s: [sys.executable, "-c", "pass"])
