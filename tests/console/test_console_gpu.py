"""NVML sampling: every field, per-field degradation, no driver (fake pynvml and the real one)."""

from __future__ import annotations

from console.gpu import NvmlSampler, cuda_gpu_count, decode_clock_events
from console.widgets.gpu import render_snapshot
from tests.support.fakes import FakeNvml


def test_all_fields_read_and_rendered() -> None:
    snap = NvmlSampler(FakeNvml(count=2)).sample()
    assert snap.error is None and snap.driver == "550.54.15"
    assert [g.index for g in snap.gpus] == [0, 1]
    g = snap.gpus[0]
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert (g.util, g.temp, g.power, g.power_limit, g.sm_clock, g.fan) == (
        50.0,
        61.0,
        312.0,
        700.0,
        1980,
        30.0,
    )
    assert g.mem_used == 40 * 2**30 and g.mem_total == 80 * 2**30 and g.mem_percent == 50.0
    assert g.clock_events == ["sw-power-cap"]
    text = render_snapshot(snap).plain
    for expected in (
        "GPU0 NVIDIA H100",
        "GPU1",
        "61°C",
        "PWR 312/700W",
        "SM 1980 MHz",
        "FAN 30%",
        "40.0/80.0 GiB",
    ):
        assert expected in text
    assert "sw-power-cap" in text and "N/A" not in text


def test_one_failing_field_leaves_the_others() -> None:
    nvml = FakeNvml(fail={"temp", "fan", "clock_events", "power_limit"})
    g = NvmlSampler(nvml).sample().gpus[0]
    assert g.temp is None and g.fan is None and g.clock_events is None and g.power_limit is None
    assert g.util == 50.0 and g.power == 312.0 and g.sm_clock == 1980 and g.mem_used == 40 * 2**30
    text = render_snapshot(NvmlSampler(nvml).sample()).plain
    assert "N/A°C" not in text  # unit only on a value
    assert "FAN N/A" in text and "PWR 312/N/A" in text and "clocks: N/A" in text
    assert "SM 1980 MHz" in text and "50%" in text


def test_every_field_failing_still_lists_the_gpu() -> None:
    fields = {"name", "util", "mem", "temp", "power", "power_limit", "sm_clock", "fan", "clock_events"}
    g = NvmlSampler(FakeNvml(fail=fields)).sample().gpus[0]
    assert g.index == 0 and g.name is None and g.util is None and g.mem_percent is None
    assert render_snapshot(NvmlSampler(FakeNvml(fail=fields)).sample()).plain.startswith("GPU0 N/A")


def test_history_feeds_the_sparklines() -> None:
    nvml = FakeNvml()
    sampler = NvmlSampler(nvml, history=3)
    for util in (10, 20, 30, 40):
        nvml.util = util
        g = sampler.sample().gpus[0]
    assert g.util_history == [20.0, 30.0, 40.0]
    assert len(g.mem_history) == 3


def test_no_driver_is_a_message_not_a_crash() -> None:
    snap = NvmlSampler(FakeNvml(init_error=True)).sample()
    assert snap.gpus == [] and "NVIDIA driver not available" in (snap.error or "")
    assert "No GPU monitoring" in render_snapshot(snap).plain
    assert cuda_gpu_count(FakeNvml(init_error=True))[0] == 0


def test_real_pynvml_without_driver_on_this_box() -> None:
    # this dev box / CI has nvidia-ml-py but no NVIDIA driver: the real "no driver" case
    sampler = NvmlSampler()
    snap = sampler.sample()
    sampler.close()
    if snap.gpus:  # a GPU box: fields are read
        assert snap.gpus[0].name
    else:
        assert snap.error


def test_zero_gpus_and_clock_event_decoding() -> None:
    snap = NvmlSampler(FakeNvml(count=0)).sample()
    assert snap.gpus == [] and "no NVIDIA GPU" in (snap.error or "")
    assert decode_clock_events(0) == []
    assert decode_clock_events(0x1 | 0x40) == ["idle", "hw-thermal"]
