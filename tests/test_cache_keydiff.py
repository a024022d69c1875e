"""benchmarks/probes/cache_keydiff.py: reads torch's cache-key debug lines (the format TORCH_LOGS
writes, copied from a real log) and names the components whose hashes differ between processes,
also when their printed values are identical."""

from __future__ import annotations

from pathlib import Path

from benchmarks.probes.cache_keydiff import main, read_blocks, report

SOURCE = "torch/_functorch/_aot_autograd/autograd_cache.py:904] [0/0]"
META = "TensorMetadata(dtype=torch.float32, shape=torch.Size([8, 3, 3, 3]), stride=(27, 9, 3, 1))"


def _block(
    pid: int, key: str, weight_hash: str, grad: str = "True", kind: str = "Autograd graph cache"
) -> str:
    head = f"V1130 04:30:23.317000 {pid} {SOURCE}"
    return "\n".join(
        [
            f"{head} {kind} hash details for key {key}:",
            f"{head} [cev5uo2jlwdhw2uyzcm7vr6cl23azjfw437f5r5lskm7spucos6] grad_enabled: {grad}",
            f"{head} [{weight_hash}] example_inputs[0]: {META}",
            "",
        ]
    )


def test_identical_printed_values_with_different_hashes_are_reported(tmp_path: Path) -> None:
    log = tmp_path / "endpoint.log"
    same = "iptzzkoblp7eq2qaayxpsuzyjhxpcnlhkpcsl7jtiinizb6hemt"
    other = "zzzzzkoblp7eq2qaayxpsuzyjhxpcnlhkpcsl7jtiinizb6hemt"
    log.write_text(
        "unrelated line\n"
        + _block(100, "a" * 52, same)
        + _block(100, "f" * 52, same, kind="FX graph cache")
        + _block(200, "b" * 52, other)  # the second process logged one key: a cache hit
    )
    blocks = read_blocks([str(log)])
    assert list(blocks) == ["100", "200"] and [len(b) for b in blocks.values()] == [2, 1]
    lines = report(blocks)
    assert "Autograd graph cache: 100 aaaaaaaaaaaa vs 200 bbbbbbbbbbbb: 1 of 2 differ" in lines
    assert any("example_inputs[0]" in line and "printed values identical" in line for line in lines)
    assert not any("grad_enabled" in line for line in lines)  # same hash: not reported
    assert not any(line.startswith("FX graph cache") for line in lines)  # nothing to pair it with


def test_a_differing_value_is_shown_from_where_it_differs(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    same = "iptzzkoblp7eq2qaayxpsuzyjhxpcnlhkpcsl7jtiinizb6hemt"
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text(_block(1, "a" * 52, same, grad="True"))
    second.write_text(_block(2, "a" * 52, same, grad="False").replace("cev5uo2", "xxxxxxx"))
    assert main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 differ" in out and "grad_enabled, from char 0" in out
    assert "1: ...True" in out and "2: ...False" in out
