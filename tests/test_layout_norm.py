"""LayoutGroupNorm: ATen's GroupNorm when eager, a layout-preserving form of the same maths when
compiled; on CUDA, the compiled VAE-style backward has no layout copies around cuDNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.guidance.layout_norm import LayoutGroupNorm, use_layout_group_norm

CL = torch.channels_last


def _block(channels: int = 16, groups: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)
    )
    with torch.no_grad():  # non-trivial affine parameters
        block[0].weight.normal_()
        block[0].bias.normal_()
    return block


def test_swap_keeps_parameters_and_goes_back() -> None:
    block = _block()
    keys = set(block.state_dict())
    assert use_layout_group_norm(block) == 1 and type(block[0]) is LayoutGroupNorm
    assert set(block.state_dict()) == keys
    assert use_layout_group_norm(block, enabled=False) == 1 and type(block[0]) is nn.GroupNorm


def test_eager_calls_are_atens_kernel_bit_for_bit() -> None:
    block = _block()
    x = torch.randn(2, 16, 8, 8).to(memory_format=CL)
    before = block(x)
    use_layout_group_norm(block)
    assert torch.equal(block(x), before)


@pytest.mark.parametrize("shape", [(2, 16, 8, 8), (2, 16, 24)])  # conv activations; attention's (B, C, L)
def test_compiled_form_matches_aten_and_keeps_channels_last(shape: tuple[int, ...]) -> None:
    norm = _block()[0]
    x = torch.randn(shape)
    if len(shape) == 4:
        x = x.to(memory_format=CL)
    ref_in = x.clone().requires_grad_(True)
    ref = norm(ref_in)
    ref.square().sum().backward()
    use_layout_group_norm(norm)
    compiled = torch.compile(norm, dynamic=False)
    inp = x.clone().requires_grad_(True)
    out = compiled(inp)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inp.grad, ref_in.grad, rtol=1e-4, atol=1e-4)
    if len(shape) == 4:  # the compiled form follows the input's layout (ATen's CUDA kernel gives NCHW)
        assert out.is_contiguous(memory_format=CL) and inp.grad.is_contiguous(memory_format=CL)


def _copies_under_conv_backward(block: nn.Module, x: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile

    compiled = torch.compile(block, dynamic=False)
    for _ in range(2):
        compiled(x.detach().requires_grad_(True)).sum().backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        compiled(x.detach().requires_grad_(True)).sum().backward()
    events = prof.events()
    conv = [e for e in events if e.name == "aten::convolution_backward"]
    assert conv, "the backward ran no convolution_backward"
    copies = {"aten::contiguous", "aten::_to_copy", "aten::clone"}
    return sum(
        1
        for e in events
        if e.name in copies
        and any(
            c.time_range.start <= e.time_range.start and e.time_range.end <= c.time_range.end for c in conv
        )
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's layout copies are a CUDA matter")
def test_compiled_backward_has_no_layout_copies_on_cuda() -> None:
    torch._dynamo.reset()
    block = (
        nn.Sequential(_block(), _block())
        .to("cuda", torch.bfloat16)
        .to(memory_format=CL)
        .requires_grad_(False)
    )
    x = torch.randn(2, 16, 32, 32, device="cuda", dtype=torch.bfloat16).to(memory_format=CL)
    aten_copies = _copies_under_conv_backward(block, x)
    torch._dynamo.reset()
    use_layout_group_norm(block)
    assert _copies_under_conv_backward(block, x) == 0 < aten_copies
