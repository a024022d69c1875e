"""The local validation service end to end: a real `gen404 validator` subprocess on a loopback
port, the subnet's API with PLY and SPZ payloads, and every bad input answered without harm."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.formats.ply import read_ply, write_ply
from engine.gate import check_gate
from engine.scoring.formula import final_score
from engine.splats import Splats
from tests.support.server import running_server

VALIDATE = "/validate_txt_to_3d_ply/"
BODY_LIMIT_MB = 8


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    args = ["validator", "--host", "127.0.0.1", "--size", "32", "--model", "gen404-tiny"]
    args += [
        "--random-weights",
        "--device",
        "cpu",
        "--max-body-mb",
        str(BODY_LIMIT_MB),
        "--log-level",
        "warning",
    ]
    with running_server(args, ready=None, probe="/version/") as server:
        yield server.base_url
        assert server.proc.poll() is None, "the service died during the tests"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(url: str, body: dict | bytes, **kw) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(url + VALIDATE, content=body, timeout=120, **kw)
    return httpx.post(url + VALIDATE, json=body, timeout=120, **kw)


def test_version(service: str) -> None:
    r = httpx.get(service + "/version/", timeout=10)
    assert r.status_code == 200 and r.json().startswith("gen404-validator")


def test_ply_payload_scores_off_the_event_loop(service: str, vectors_dir: Path) -> None:
    body = {
        "prompt": "a hamburger",
        "data": _b64((vectors_dir / "hamburger.ply").read_bytes()),
        "compression": 0,
    }
    done: list[str] = []
    result: dict = {}

    def score() -> None:
        result["r"] = _post(service, body)
        done.append("score")

    worker = threading.Thread(target=score)
    worker.start()
    time.sleep(0.5)  # the validation is running on the worker thread now
    assert httpx.get(service + "/version/", timeout=30).status_code == 200
    done.append("version")
    worker.join(timeout=120)
    assert done == ["version", "score"], "GET /version/ waited for the scoring: event loop blocked"
    r = result["r"]
    assert r.status_code == 200
    d = r.json()
    assert set(d) >= {"score", "alignment_score", "iqa", "ssim", "lpips", "gate", "views", "timings"}
    for part in ("iqa", "alignment_score", "ssim", "lpips"):  # the subnet's parts, all numbers
        assert isinstance(d[part], float), part
    assert d["gate"]["passed"] is True and d["splats"] == 52709
    assert len(d["views"]) == 16 and len(d["kept"]) == 16
    assert len(d["iqa_views"]) == len(d["ssim_pairs"]) == len(d["lpips_pairs"]) == 16
    assert d["score"] == pytest.approx(final_score(d["alignment_score"], d["iqa"], d["ssim"], d["lpips"]))
    assert d["accepted"] == (d["score"] >= 0.6) and (d["reason"] == "") == d["accepted"]
    assert d["timings"]["render"] > 0 and d["timings"]["request"] >= d["timings"]["total"] > 0


def test_spz_payload(service: str, vectors_dir: Path) -> None:
    body = {
        "prompt": "a hamburger",
        "data": _b64((vectors_dir / "hamburger.spz").read_bytes()),
        "compression": 2,
    }
    r = _post(service, body)
    assert r.status_code == 200
    d = r.json()
    assert d["gate"]["passed"] is True and d["splats"] == 52709 and len(d["views"]) == 16


def test_gate_failure_is_a_zero_score_not_an_error(service: str, vectors_dir: Path) -> None:
    s = read_ply((vectors_dir / "hamburger.ply").read_bytes())
    few = Splats(**{k: getattr(s, k)[:5000] for k in Splats.__dataclass_fields__})
    r = _post(service, {"prompt": "a hamburger", "data": _b64(write_ply(few)), "compression": 0})
    assert r.status_code == 200
    d = r.json()
    assert d["score"] == 0.0 and d["gate"]["passed"] is False and "too few" in d["gate"]["reason"]
    assert d["alignment_score"] is None and d["iqa"] is None and d["views"] == []
    assert d["accepted"] is False and "too few" in d["reason"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompt": "a hamburger", "data": "%%% not base64 %%%", "compression": 0}, 400, "base64"),
        ({"prompt": "a hamburger", "data": _b64(b"ply\nformat ascii 1.0\n"), "compression": 0}, 400, "PLY"),
        ({"prompt": "a hamburger", "data": _b64(b"hello"), "compression": 2}, 400, "SPZ"),
        ({"prompt": "a hamburger", "data": _b64(b"hello"), "compression": 1}, 400, "compression"),
        ({"prompt": "x" * 1025, "data": _b64(b"hello"), "compression": 0}, 400, "1024"),
        ({"prompt": "   ", "data": _b64(b"hello"), "compression": 0}, 400, "prompt"),
        ({"prompt": "a hamburger", "data": "", "compression": 0}, 400, "empty"),
        ({"prompt": "a hamburger", "compression": 0}, 422, "data"),
        (b"{not json", 422, "invalid request"),
        (b"[1, 2]", 422, "invalid request"),
        ({"prompt": None, "data": _b64(b"hello"), "compression": 0}, 400, "prompt"),
    ],
)
def test_bad_inputs_answer_score_zero_with_an_error(
    service: str, body: dict | bytes, status: int, needle: str
) -> None:
    headers = {"content-type": "application/json"} if isinstance(body, bytes) else None
    r = _post(service, body, headers=headers)
    assert r.status_code == status
    d = r.json()
    assert d["score"] == 0.0 and d["error"]
    assert needle.lower() in (str(d["error"]) + " " + str(d.get("detail"))).lower()


def test_body_over_the_limit_is_refused(service: str) -> None:
    big = b'{"prompt": "a hamburger", "compression": 0, "data": "' + b"A" * (BODY_LIMIT_MB << 20) + b'"}'
    r = _post(service, big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    d = r.json()
    assert d["score"] == 0.0 and "too large" in d["error"]


def test_service_survives_everything(service: str) -> None:
    assert httpx.get(service + "/version/", timeout=10).status_code == 200


# ---- gen404 serve --self-score: the endpoint's hook wired to the Scorer -----------------------


def test_serve_self_score_flag_builds_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli import build_parser
    from engine.commands.serve import build_scorer
    from engine.scoring import scorer as scorer_module

    calls: list[dict] = []

    def fake_load_scorer(**kw: object) -> str:
        calls.append(kw)
        return "scorer"

    monkeypatch.setattr(scorer_module, "load_scorer", fake_load_scorer)
    parser = build_parser()
    assert build_scorer(parser.parse_args(["serve"])) is None
    args = parser.parse_args(["serve", "--self-score", "--device", "cpu", "--random-weights"])
    assert callable(build_scorer(args))
    assert calls == [
        {"model": "convnext_large_d", "size": 518, "views": 16, "device": "cpu", "random_weights": True}
    ]


def test_self_score_hook_returns_the_final_score(vectors_dir: Path) -> None:
    from engine.scoring.scorer import load_scorer, self_score_hook

    scorer = load_scorer(model="gen404-tiny", size=32, views=4, device="cpu", random_weights=True)
    score = self_score_hook(scorer)
    s = read_ply((vectors_dir / "hamburger.ply").read_bytes())
    part = Splats(**{k: getattr(s, k)[:8000] for k in Splats.__dataclass_fields__})
    value = score("a hamburger", part)
    assert value == scorer.score(part, "a hamburger").score  # the same number as the full report
    few = Splats(**{k: getattr(s, k)[:100] for k in Splats.__dataclass_fields__})
    assert score("a hamburger", few) == 0.0  # the gate fails


def test_non_finite_parts_become_null_not_a_500() -> None:
    from engine.service.validator import json_safe

    body = json_safe({"score": 0.0, "ssim": float("nan"), "pairs": [1.0, float("inf")], "n": 3})
    assert body == {"score": 0.0, "ssim": None, "pairs": [1.0, None], "n": 3}


async def test_api_key_refusal_keeps_the_score_shape() -> None:
    """The shared guard's own answers (here 401) also carry score 0.0 on the validation path."""
    from engine.service.validator import create_app

    app = create_app(scorer=None, api_key="secret")  # refused before the app (and its scorer) runs
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post(VALIDATE, json={"prompt": "a", "data": "", "compression": 0})
        assert r.status_code == 401
        assert r.json()["score"] == 0.0 and r.json()["error"] == "unauthorized"
        assert int(r.headers["content-length"]) == len(r.content)
        other = await client.get("/version/")
        assert other.status_code == 401 and "score" not in other.json()  # only validation paths


def test_result_that_cannot_be_framed_is_a_400(service: str, vectors_dir: Path) -> None:
    s = read_ply((vectors_dir / "hamburger.ply").read_bytes())
    s.positions[:] = 0.25  # passes the gate, but the bounding box has no size
    r = _post(service, {"prompt": "a hamburger", "data": _b64(write_ply(s)), "compression": 0})
    assert r.status_code == 400
    d = r.json()
    assert d["score"] == 0.0 and "bounding box" in d["detail"]


def test_serve_self_score_puts_scores_in_stats(tmp_path: Path) -> None:
    """A real endpoint with --self-score: each result is scored after its response, into /stats."""
    (tmp_path / "ss_tiny.yaml").write_text("extends: smoke\niters: 2\nnum_pts: 500\n")
    args = ["serve", "--preset", "ss_tiny", "--device", "cpu", "--self-score", "--random-weights"]
    args += ["--score-model", "gen404-tiny", "--score-size", "32", "--score-views", "4"]
    with running_server(args, env={"GEN404_PRESETS_DIR": str(tmp_path)}) as server:
        response = httpx.post(server.url("/generate/"), data={"prompt": "a hamburger"}, timeout=120)
        assert response.status_code == 200
        assert check_gate(read_ply(response.content)).passed
        deadline = time.monotonic() + 60
        while True:
            recent = httpx.get(server.url("/stats"), timeout=5).json()["recent"]
            if recent and recent[-1]["score"] is not None:
                break
            assert time.monotonic() < deadline, f"no score in /stats: {recent}"
            time.sleep(0.2)
        assert 0.0 <= recent[-1]["score"] <= 1.0
        assert recent[-1]["prompt"] == "a hamburger"
