"""Hostile input, property-based (hypothesis), against the real services and the codecs:

- thousands of random and malformed bodies at `POST /generate/` and `PUT /preset` of a real
  endpoint and at `POST /validate_txt_to_3d_ply/` of a real validation service (random bytes,
  random content types, bad multipart, invalid UTF-8, bad base64, wrong compression codes,
  truncated and mutated PLY/SPZ, bad or missing API keys): never a 500, the process survives,
  memory stays bounded;
- garbage on a raw socket: answered or closed, never left hanging;
- random and mutated bytes into the SPZ decoder and the PLY reader: only SpzError / PlyError;
  a header claiming a billion splats is refused before anything is allocated (tracemalloc).
"""

from __future__ import annotations

import base64
import json
import socket
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.formats import ply, spz
from engine.splats import Splats
from tests.support.reliability_kit import API_KEY, AUTH, MIN_SPLATS, Figures, rss_kib
from tests.support.server import ServerProcess

FUZZ = settings(
    max_examples=1500,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
GENERATE_OK = {200, 400, 401, 413, 415, 422}
VALIDATE_OK = {200, 400, 401, 413, 422}
RSS_GROWTH_LIMIT_KIB = 64 * 1024  # a service's RSS after a fuzz run, over its RSS before


# ---------------------------------------------------------------- sample files


def _splats(n: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    f = np.float32
    return Splats(
        positions=rng.normal(0, 0.3, (n, 3)).astype(f),
        sh_dc=rng.normal(0, 0.5, (n, 3)).astype(f),
        sh_rest=np.zeros((n, 0, 3), f),
        opacities=rng.normal(0, 1, n).astype(f),
        scales=rng.normal(-4, 0.5, (n, 3)).astype(f),
        rotations=rng.normal(0, 1, (n, 4)).astype(f),
    )


SMALL_PLY = ply.write_ply(_splats(40))
SMALL_SPZ = spz.splats_to_spz(_splats(40))


# ---------------------------------------------------------------- request strategies


@dataclass
class Req:
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=zzz",
        "application/json",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        "form-data; name=prompt",
        "application/x-www-form-urlencoded; charset=latin-1",
        "*/*",
        ";;;",
    ]
)
BAD_TEXT = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\r\n", max_size=20),  # whitespace only
    st.text(min_size=1025, max_size=1400),  # over the prompt limit
    st.text(max_size=30).map(lambda t: t + "\x00"),  # a NUL character
)
BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80abc"])


def _auth_variants() -> st.SearchStrategy[dict[str, str]]:
    """Mostly the right key (so the parsers behind the guard get fuzzed), else a wrong one."""
    bad = st.sampled_from(
        [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {API_KEY}"},
            {"Authorization": f"Bearer {API_KEY[:-1]}"},
            {"Authorization": f"Bearer {API_KEY}x"},
            {"Authorization": f"bearer  {API_KEY[::-1]}"},
            {"Authorization": "Bearer " + "A" * 4000},
        ]
    )
    return st.integers(0, 9).flatmap(lambda i: bad.map(dict) if i == 9 else st.just(dict(AUTH)))


@st.composite
def generate_requests(draw: st.DrawFn) -> Req:
    kind = draw(
        st.sampled_from(["bytes", "bytes", "urlencoded", "urlencoded", "multipart", "multipart", "huge"])
    )
    headers = draw(_auth_variants())
    if kind == "bytes":
        body = draw(st.binary(max_size=2048))
        ctype = draw(st.one_of(st.none(), CONTENT_TYPES, st.text(max_size=40).map(_latin1_safe)))
    elif kind == "urlencoded":
        ctype = "application/x-www-form-urlencoded"
        value = draw(
            st.one_of(
                BAD_TEXT.map(lambda t: quote(t).encode()),
                BAD_UTF8.map(lambda b: "".join(f"%{x:02X}" for x in b).encode()),
                BAD_UTF8,
                st.just(b"%zz%"),
            )
        )
        name = draw(st.sampled_from([b"prompt", b"Prompt", b"prompt[]", b"", b"p%72ompt"]))
        body = name + b"=" + value + draw(st.sampled_from([b"", b"&", b"&prompt=ok", b"&&=&"]))
    elif kind == "multipart":
        boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a b", "--", "ß"]))
        ctype = f"multipart/form-data; boundary={boundary}"
        body = draw(_bad_multipart(boundary.encode("utf-8")))
    else:  # bodies over the 64 KiB limit, declared or not
        body = b"prompt=" + b"a" * draw(st.integers(64 * 1024 - 6, 96 * 1024))
        ctype = "application/x-www-form-urlencoded"
    if ctype is not None:
        headers["Content-Type"] = ctype
    return Req(body, headers)


def _latin1_safe(text: str) -> str | None:
    """Printable ASCII without edge spaces (what an HTTP client will send at all), or None."""
    return "".join(c for c in text if 32 <= ord(c) < 127).strip() or None


@st.composite
def _bad_multipart(draw: st.DrawFn, boundary: bytes) -> bytes:
    value = draw(st.one_of(BAD_TEXT.map(lambda t: t.encode()), BAD_UTF8, st.binary(max_size=64)))
    name = draw(st.sampled_from([b'name="prompt"', b"name=prompt", b'name="\xff"', b"", b'filename="x"']))
    part = b"--" + boundary + b"\r\nContent-Disposition: form-data; " + name + b"\r\n\r\n" + value + b"\r\n"
    tail = draw(st.sampled_from([b"--" + boundary + b"--\r\n", b"", b"--" + boundary, b"--wrong--\r\n"]))
    body = part + tail
    cut = draw(st.integers(0, len(body)))
    return draw(st.sampled_from([body, body[:cut], body[cut:], b"\r\n" + body]))


@st.composite
def validate_bodies(draw: st.DrawFn) -> Req:
    headers = draw(_auth_variants())
    kind = draw(st.sampled_from(["json", "json", "json", "raw"]))
    if kind == "raw":
        body = draw(
            st.one_of(
                st.binary(max_size=2048),
                st.sampled_from(
                    [b"[" * 5000, b"{" * 5000, b'{"data": "' + b"A" * 2000, b"null", b"\xff\xfe{}"]
                ),
            )
        )
        ctype = draw(st.one_of(st.none(), CONTENT_TYPES))
        if ctype is not None:
            headers["Content-Type"] = ctype
        return Req(body, headers)
    payload = draw(_payload_bytes())
    data = draw(
        st.one_of(
            st.just(base64.b64encode(payload).decode()),
            st.just(base64.b64encode(payload).decode()),
            st.just(base64.urlsafe_b64encode(payload).decode() + "!"),  # bad base64
            st.text(max_size=60),
            st.just(base64.b64encode(payload).decode()[:-1]),  # bad padding
            st.none(),
            st.integers(),
        )
    )
    doc: dict[str, object] = {
        "prompt": draw(
            st.one_of(st.text(max_size=40), BAD_TEXT, st.none(), st.integers(), st.lists(st.text()))
        ),
        "data": data,
        "compression": draw(
            st.one_of(
                st.sampled_from([0, 2]),
                st.integers(-(2**70), 2**70),
                st.sampled_from(["2", 2.5, None, True, [2], -0.0]),
            )
        ),
    }
    if draw(st.booleans()):
        doc.pop(draw(st.sampled_from(["prompt", "data", "compression"])))
    headers["Content-Type"] = "application/json"
    return Req(json.dumps(doc).encode(), headers)


@st.composite
def _payload_bytes(draw: st.DrawFn) -> bytes:
    """What a result might look like: random, truncated or mutated PLY/SPZ, or a lying header."""
    kind = draw(st.sampled_from(["random", "ply", "spz", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=1024))
    if kind == "header":
        return _ply_with_count(draw(st.integers(-5, 2**40))) + draw(st.binary(max_size=256))
    src = SMALL_PLY if kind == "ply" else SMALL_SPZ
    return _mutate(draw, src)


@st.composite
def mutations(draw: st.DrawFn, src: bytes) -> bytes:
    """A real file cut short, with one byte flipped, or with random bytes spliced in."""
    return _mutate(draw, src)


def _mutate(draw: st.DrawFn, src: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "splice"]))
    at = draw(st.integers(0, len(src) - 1))
    if how == "truncate":
        return src[:at]
    if how == "flip":
        return src[:at] + bytes([src[at] ^ draw(st.integers(1, 255))]) + src[at + 1 :]
    return src[:at] + draw(st.binary(min_size=1, max_size=32)) + src[at:]


def _ply_with_count(n: int) -> bytes:
    header = ply.ply_header(1, 0, False).decode()
    return header.replace("element vertex 1", f"element vertex {n}").encode()


# ---------------------------------------------------------------- the services


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def _send(client: httpx.Client, url: str, req: Req) -> httpx.Response:
    headers = {k: v.encode("utf-8") for k, v in req.headers.items()}  # raw bytes, not only ASCII
    return client.request(req.method, url, content=req.content, headers=headers)


def _survived(server: ServerProcess, rss_before: int, figures: Figures, name: str, statuses: dict) -> None:
    assert server.proc.poll() is None, server.output()[-3000:]
    growth = rss_kib(server.proc.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB"
    assert "Traceback" not in server.output()
    figures.record(f"{name}.statuses", dict(sorted(statuses.items())))
    figures.record(f"{name}.rss_growth_kib", growth)


def test_generate_survives_random_and_malformed_bodies(
    endpoint: ServerProcess, http: httpx.Client, figures: Figures
) -> None:
    url = endpoint.url("/generate/")
    rss_before = rss_kib(endpoint.proc.pid)
    failed_before = http.get(endpoint.url("/stats"), headers=AUTH).json()["requests"]["failed"]
    statuses: dict[int, int] = {}
    t0 = time.monotonic()

    @FUZZ
    @given(generate_requests())
    def check(req: Req) -> None:
        r = _send(http, url, req)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in GENERATE_OK, (r.status_code, r.text[:300], req)
        if r.status_code == 200:
            assert len(ply.read_ply(r.content)) >= MIN_SPLATS
        else:
            assert "error" in r.json()

    check()
    figures.record("fuzz_generate.examples", sum(statuses.values()))
    figures.record("fuzz_generate.wall_s", time.monotonic() - t0)
    assert http.get(endpoint.url("/stats"), headers=AUTH).json()["requests"]["failed"] == failed_before
    assert endpoint.health()["status"] == "ready"
    _survived(endpoint, rss_before, figures, "fuzz_generate", statuses)


@st.composite
def preset_bodies(draw: st.DrawFn) -> Req:
    body = draw(
        st.one_of(
            st.binary(max_size=512),
            st.sampled_from([b"[" * 4000, b'{"name":' * 400, b'{"name": "\xff"}', b"1e999999", b'"tiny"']),
            st.builds(
                lambda v: json.dumps({"name": v}).encode(),
                st.one_of(st.text(max_size=40), st.integers(), st.none(), st.just("../../etc/passwd")),
            ),
        )
    )
    return Req(body, {**AUTH, "Content-Type": "application/json"}, method="PUT")


def test_put_preset_survives_random_bodies(
    endpoint: ServerProcess, http: httpx.Client, figures: Figures
) -> None:
    url = endpoint.url("/preset")
    statuses: dict[int, int] = {}

    @settings(FUZZ, max_examples=400)
    @given(preset_bodies())
    def check(req: Req) -> None:
        r = _send(http, url, req)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in {200, 400, 404, 413, 422, 503}, (
            r.status_code,
            r.text[:300],
            req.content[:80],
        )
        if r.status_code == 200:  # only "tiny" itself exists among what is drawn: no model reload
            assert r.json()["preset"] == "tiny"

    check()
    assert http.get(endpoint.url("/presets"), headers=AUTH).json()["current"] == "tiny"
    figures.record("fuzz_preset.statuses", dict(sorted(statuses.items())))


def test_deeply_nested_json_is_a_400_not_a_500(
    endpoint: ServerProcess, validator: ServerProcess, http: httpx.Client
) -> None:
    """Regression: PUT /preset answered "[[[[..." (4000 deep, under its 4 KiB limit) with a 500,
    because json.loads raises RecursionError, not ValueError."""
    for body in (b"[" * 4000, b'{"name":' * 500):
        r = http.put(
            endpoint.url("/preset"), content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert r.status_code == 400 and "JSON" in r.json()["error"], r.text[:200]
        r = http.post(validator.url("/validate_txt_to_3d_ply/"), content=body, headers=AUTH)
        assert r.status_code == 422 and r.json()["score"] == 0.0, r.text[:200]
    assert http.get(endpoint.url("/presets"), headers=AUTH).json()["current"] == "tiny"


def test_validator_survives_random_and_malformed_bodies(
    validator: ServerProcess, http: httpx.Client, figures: Figures
) -> None:
    url = validator.url("/validate_txt_to_3d_ply/")
    rss_before = rss_kib(validator.proc.pid)
    statuses: dict[int, int] = {}
    t0 = time.monotonic()

    @settings(FUZZ, max_examples=1200)
    @given(validate_bodies())
    def check(req: Req) -> None:
        r = _send(http, url, req)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in VALIDATE_OK, (r.status_code, r.text[:300], req.content[:120])
        body = r.json()
        assert isinstance(body.get("score"), float), body  # the subnet's shape, failures included
        if r.status_code != 200:
            assert body["score"] == 0.0

    check()
    figures.record("fuzz_validate.examples", sum(statuses.values()))
    figures.record("fuzz_validate.wall_s", time.monotonic() - t0)
    _survived(validator, rss_before, figures, "fuzz_validate", statuses)


@pytest.mark.parametrize(
    "values",
    [
        {"positions": np.nan},
        {"scales": np.inf},
        {"positions": 3e38, "scales": 80.0},
        {"rotations": 0.0},
        {"opacities": -np.inf},
    ],
    ids=["nan-positions", "inf-scales", "huge", "zero-quaternions", "zero-opacity"],
)
def test_validator_scores_degenerate_but_well_formed_results(
    validator: ServerProcess, http: httpx.Client, values: dict[str, float]
) -> None:
    """7000 splats that pass the parser but not arithmetic: a score (maybe 0) or a 400, never a 500.
    Regression: NaN positions and a zero-size extent were answered 500 ("validation failed")."""
    s = _splats(MIN_SPLATS, seed=1)
    for name, value in values.items():
        getattr(s, name)[...] = value
    for data, code in ((ply.write_ply(s), 0), (spz.splats_to_spz(s), 2)):
        body = {"prompt": "a chair", "data": base64.b64encode(data).decode(), "compression": code}
        r = http.post(validator.url("/validate_txt_to_3d_ply/"), json=body, headers=AUTH)
        assert r.status_code in (200, 400), r.text[:300]
        assert 0.0 <= r.json()["score"] <= 1.0, r.text[:300]  # a number: never NaN


def test_header_floods_are_bounded(endpoint: ServerProcess, http: httpx.Client, figures: Figures) -> None:
    """HTTP headers are parsed by h11, which refuses an incomplete head past 16 KiB; a head that
    arrives whole in one socket read (up to 256 KiB on loopback) is parsed. So: big heads are
    either served normally or refused, a 1 MiB head is always refused, and memory stays flat."""
    rss_before = rss_kib(endpoint.proc.pid)
    outcomes: dict[str, str] = {}
    floods = {
        "200KiB_header": {"X-Big": "v" * 200_000},
        "2000_headers": {f"X-H{i}": "v" * 50 for i in range(2000)},
        "1MiB_header": {"X-Big": "v" * 1_048_576},
    }
    for name, extra in floods.items():
        try:
            r = http.post(endpoint.url("/generate/"), data={"prompt": "a cup"}, headers={**AUTH, **extra})
            outcomes[name] = str(r.status_code)
            assert r.status_code == 200 or 400 <= r.status_code < 500, r.status_code
        except httpx.TransportError as exc:  # closed by the server: refused too
            outcomes[name] = type(exc).__name__
    assert outcomes["1MiB_header"] != "200", outcomes
    assert endpoint.health()["status"] == "ready"
    assert rss_kib(endpoint.proc.pid) - rss_before < RSS_GROWTH_LIMIT_KIB
    figures.record("header_flood.outcomes", outcomes)


RAW_GARBAGE = st.one_of(
    st.binary(max_size=1024),
    st.builds(
        lambda line, rest: line + rest,
        st.sampled_from(
            [
                b"POST /generate/ HTTP/1.1\r\n",
                b"POST /generate/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nprompt=",
                b"POST /generate/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
                b"POST /generate/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"POST /generate/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                b"GET /health HTTP/9.9\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
            ]
        ),
        st.binary(max_size=256),
    ),
)


def test_raw_socket_garbage_is_answered_or_closed(endpoint: ServerProcess, figures: Figures) -> None:
    """Bytes that are not (quite) HTTP, then end of input: the server answers 4xx or closes within
    a bound; never a 5xx, never a connection left open."""
    slowest = 0.0

    @settings(FUZZ, max_examples=300)
    @given(RAW_GARBAGE)
    def check(garbage: bytes) -> None:
        nonlocal slowest
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5.0) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):  # EOF within the 5 s socket timeout, or it raises
                reply += chunk
        slowest = max(slowest, time.monotonic() - t0)
        if reply:
            status = int(reply.split(b" ", 2)[1])
            assert status < 500 or status == 503, reply[:200]

    check()
    assert endpoint.health()["status"] == "ready"
    figures.record("raw_garbage.slowest_close_s", slowest)


# ---------------------------------------------------------------- the codecs in process


@settings(FUZZ, max_examples=2000)
@given(
    st.one_of(st.binary(max_size=4096), st.builds(lambda b: b"\x28\xb5\x2f\xfd" + b, st.binary(max_size=512)))
)
def test_spz_decoder_on_random_bytes(data: bytes) -> None:
    with pytest.raises(spz.SpzError):
        spz.decompress(data, include_normals=False)
    with pytest.raises(spz.SpzError):
        spz.spz_to_splats(data)


@st.composite
def spz_frames(draw: st.DrawFn) -> bytes:
    """Valid zstd frames around a header with drawn fields and a body of drawn length."""
    header = spz.HEADER.pack(
        draw(st.sampled_from([spz.MAGIC, spz.MAGIC, 0, 0x5053474F])),
        draw(st.integers(0, 4)),
        draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1))),
        draw(st.integers(0, 5)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
    )
    body = draw(st.binary(max_size=2048))
    return zstandard.ZstdCompressor().compress(header + body)


@settings(FUZZ, max_examples=1500)
@given(st.one_of(spz_frames(), mutations(SMALL_SPZ)))
def test_spz_decoder_on_lying_headers_and_mutations(data: bytes) -> None:
    try:
        out = spz.decompress(data, include_normals=False)
    except spz.SpzError:
        return
    splats = ply.read_ply(out)  # what it returns is always a readable PLY
    assert 0 < len(splats) <= spz.MAX_POINTS


@settings(FUZZ, max_examples=2000)
@given(
    st.one_of(
        st.binary(max_size=4096),
        st.builds(lambda b: b"ply\n" + b, st.binary(max_size=1024)),
        st.builds(lambda n, b: _ply_with_count(n) + b, st.integers(-(2**63), 2**63), st.binary(max_size=512)),
        mutations(SMALL_PLY),
    )
)
def test_ply_reader_on_random_and_mutated_bytes(data: bytes) -> None:
    try:
        splats = ply.read_ply(data)
    except ply.PlyError:
        return
    assert 0 < len(splats) <= ply.MAX_VERTICES
    assert splats.positions.shape == (len(splats), 3)


def _peak_bytes(fn: object) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    error: BaseException | None = None
    try:
        fn()  # type: ignore[operator]
    except (ply.PlyError, spz.SpzError) as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


def test_a_billion_splat_header_is_refused_before_allocation(figures: Figures) -> None:
    billion = 1_000_000_000
    ply_lie = _ply_with_count(billion) + b"\0" * 56
    spz_lie = zstandard.ZstdCompressor().compress(
        spz.HEADER.pack(spz.MAGIC, 2, billion, 0, 12, 0, 0) + b"\0" * 19
    )
    # the largest count either reader accepts, with a body that is not there
    ply_max = _ply_with_count(ply.MAX_VERTICES) + b"\0" * 56
    spz_max = zstandard.ZstdCompressor().compress(
        spz.HEADER.pack(spz.MAGIC, 2, spz.MAX_POINTS, 0, 12, 0, 0) + b"\0" * 19
    )
    cases = {
        "ply_billion": lambda: ply.read_ply(ply_lie),
        "spz_billion": lambda: spz.decompress(spz_lie, include_normals=False),
        "spz_billion_splats": lambda: spz.spz_to_splats(spz_lie),
        "ply_max_claim": lambda: ply.read_ply(ply_max),
        "spz_max_claim": lambda: spz.decompress(spz_max, include_normals=False),
    }
    for name, fn in cases.items():
        peak, error = _peak_bytes(fn)
        assert error is not None, f"{name} was accepted"
        # a few KiB for parsing; the SPZ reader may hold one 16 MiB decompression chunk
        limit = 64 * 1024 if name.startswith("ply") else spz.READ_CHUNK + 1024 * 1024
        assert peak < limit, f"{name}: peak {peak} bytes"
        figures.record(f"lying_header.{name}.peak_bytes", peak)


def test_a_zstd_bomb_costs_what_it_really_decompresses(figures: Figures) -> None:
    """A small frame that really decompresses to a million splats is decoded (it is valid), and
    costs memory in proportion to the points: the cap is the reference's 10 M points."""
    n = 1_000_000
    bomb = zstandard.ZstdCompressor(level=19).compress(
        spz.HEADER.pack(spz.MAGIC, 2, n, 0, 12, 0, 0) + bytes(19 * n)
    )
    peak, error = _peak_bytes(lambda: spz.spz_to_splats(bomb))
    assert error is None
    per_point = peak / n
    assert per_point < 120, per_point  # 19 B payload + 56 B of float32 arrays, plus slack
    figures.record("zstd_bomb.compressed_bytes", len(bomb))
    figures.record("zstd_bomb.points", n)
    figures.record("zstd_bomb.peak_bytes_per_point", per_point)
    figures.record("zstd_bomb.worst_case_mib_at_cap", per_point * spz.MAX_POINTS / 2**20)


def test_gzip_spz_is_refused_with_a_clear_error() -> None:
    """Niantic's gzip SPZ (not the 404 zstd variant): one clear message, not a crash."""
    gz = zlib.compress(spz.HEADER.pack(spz.MAGIC, 2, 1, 0, 12, 0, 0) + bytes(19))
    with pytest.raises(spz.SpzError, match="not zstd"):
        spz.decompress(gz, include_normals=False)


def test_truncated_real_files_are_refused(vectors_dir: Path) -> None:
    hamburger = (vectors_dir / "hamburger.ply").read_bytes()
    robocop = (vectors_dir / "robocop.spz").read_bytes()[:200_000]
    for cut in (0, 10, 200, len(hamburger) // 2, len(hamburger) - 1):
        with pytest.raises(ply.PlyError):
            ply.read_ply(hamburger[:cut])
    with pytest.raises(spz.SpzError, match="truncated|corrupt"):
        spz.decompress(robocop, include_normals=False)
