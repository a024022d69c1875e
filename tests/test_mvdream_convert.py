"""MVDream checkpoint conversion on synthetic state dicts carrying the real key names and shapes.

The synthetic checkpoints are generated here independently of engine.guidance.convert, by walking
the constructors of MVDream's MultiViewUNetModel / SpatialTransformer3D / ResBlock
(mvdream/ldm/modules/diffusionmodules/openaimodel.py), the LDM AutoencoderKL (Encoder/Decoder
in .../diffusionmodules/model.py) and the OpenCLIP text tower, as sd-v2-base.yaml configures them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from engine.guidance import build_guidance
from engine.guidance.clip_text import ClipTextConfig, ClipTextModel
from engine.guidance.configs import SD21_TEXT_CONFIG, SD21_VAE_CONFIG
from engine.guidance.convert import (
    SCHEDULE_BUFFERS,
    ConversionError,
    load_mvdream_unet,
    load_original_mvdream,
)
from engine.guidance.mvdream import load_original_components
from engine.guidance.mvdream_unet import (
    MultiViewAttnProcessor,
    build_unet,
    mvdream_camera,
    mvdream_unet_config,
)
from engine.guidance.sds import SDSGuidance
from engine.guidance.tiny import TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG, tiny_components
from tests.support.model_dirs import transformers_text_encoder

Shapes = dict[str, tuple[int, ...]]


def _linear(s: Shapes, p: str, cin: int, cout: int, bias: bool = True) -> None:
    s[f"{p}.weight"] = (cout, cin)
    if bias:
        s[f"{p}.bias"] = (cout,)


def _conv(s: Shapes, p: str, cin: int, cout: int, k: int) -> None:
    s[f"{p}.weight"], s[f"{p}.bias"] = (cout, cin, k, k), (cout,)


def _norm(s: Shapes, p: str, c: int) -> None:
    s[f"{p}.weight"], s[f"{p}.bias"] = (c,), (c,)


def _resblock(s: Shapes, p: str, cin: int, cout: int, emb: int) -> None:
    _norm(s, f"{p}.in_layers.0", cin)
    _conv(s, f"{p}.in_layers.2", cin, cout, 3)
    _linear(s, f"{p}.emb_layers.1", emb, cout)
    _norm(s, f"{p}.out_layers.0", cout)
    _conv(s, f"{p}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(s, f"{p}.skip_connection", cin, cout, 1)


def _transformer3d(s: Shapes, p: str, ch: int, ctx: int) -> None:  # use_linear=True, depth 1
    _norm(s, f"{p}.norm", ch)
    _linear(s, f"{p}.proj_in", ch, ch)
    b = f"{p}.transformer_blocks.0"
    for attn, kv in (("attn1", ch), ("attn2", ctx)):
        _linear(s, f"{b}.{attn}.to_q", ch, ch, bias=False)
        _linear(s, f"{b}.{attn}.to_k", kv, ch, bias=False)
        _linear(s, f"{b}.{attn}.to_v", kv, ch, bias=False)
        _linear(s, f"{b}.{attn}.to_out.0", ch, ch)
    _linear(s, f"{b}.ff.net.0.proj", ch, ch * 8)  # GEGLU: 2 x 4 x ch
    _linear(s, f"{b}.ff.net.2", ch * 4, ch)
    for i in (1, 2, 3):
        _norm(s, f"{b}.norm{i}", ch)
    _linear(s, f"{p}.proj_out", ch, ch)


def ldm_unet_shapes(
    mc: int, mult: tuple[int, ...], nres: int, attn_ds: set[int], ctx: int, cam: int = 16
) -> Shapes:
    s: Shapes = {}
    emb = mc * 4
    _linear(s, "time_embed.0", mc, emb)
    _linear(s, "time_embed.2", emb, emb)
    _linear(s, "camera_embed.0", cam, emb)
    _linear(s, "camera_embed.2", emb, emb)
    _conv(s, "input_blocks.0.0", 4, mc, 3)
    chans, ch, ds, idx = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(nres):
            _resblock(s, f"input_blocks.{idx}.0", ch, m * mc, emb)
            ch = m * mc
            if ds in attn_ds:
                _transformer3d(s, f"input_blocks.{idx}.1", ch, ctx)
            chans.append(ch)
            idx += 1
        if level != len(mult) - 1:
            _conv(s, f"input_blocks.{idx}.0.op", ch, ch, 3)
            chans.append(ch)
            idx, ds = idx + 1, ds * 2
    _resblock(s, "middle_block.0", ch, ch, emb)
    _transformer3d(s, "middle_block.1", ch, ctx)
    _resblock(s, "middle_block.2", ch, ch, emb)
    idx = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nres + 1):
            _resblock(s, f"output_blocks.{idx}.0", ch + chans.pop(), mc * m, emb)
            ch, layer = mc * m, 1
            if ds in attn_ds:
                _transformer3d(s, f"output_blocks.{idx}.1", ch, ctx)
                layer = 2
            if level and i == nres:
                _conv(s, f"output_blocks.{idx}.{layer}.conv", ch, ch, 3)
                ds //= 2
            idx += 1
    _norm(s, "out.0", mc)
    _conv(s, "out.2", mc, 4, 3)
    return s


def _vae_resnet(s: Shapes, p: str, cin: int, cout: int) -> None:
    _norm(s, f"{p}.norm1", cin)
    _conv(s, f"{p}.conv1", cin, cout, 3)
    _norm(s, f"{p}.norm2", cout)
    _conv(s, f"{p}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(s, f"{p}.nin_shortcut", cin, cout, 1)


def _vae_mid(s: Shapes, p: str, c: int) -> None:
    _vae_resnet(s, f"{p}.mid.block_1", c, c)
    _norm(s, f"{p}.mid.attn_1.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        _conv(s, f"{p}.mid.attn_1.{name}", c, c, 1)  # LDM AttnBlock: 1x1 convs
    _vae_resnet(s, f"{p}.mid.block_2", c, c)


def ldm_vae_shapes(ch: int, mult: tuple[int, ...], nres: int, z: int = 4) -> Shapes:
    s: Shapes = {}
    _conv(s, "encoder.conv_in", 3, ch, 3)
    block_in = ch
    for i, m in enumerate(mult):
        for j in range(nres):
            _vae_resnet(s, f"encoder.down.{i}.block.{j}", block_in, ch * m)
            block_in = ch * m
        if i != len(mult) - 1:
            _conv(s, f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    _vae_mid(s, "encoder", block_in)
    _norm(s, "encoder.norm_out", block_in)
    _conv(s, "encoder.conv_out", block_in, 2 * z, 3)
    _conv(s, "quant_conv", 2 * z, 2 * z, 1)
    _conv(s, "post_quant_conv", z, z, 1)
    block_in = ch * mult[-1]
    _conv(s, "decoder.conv_in", z, block_in, 3)
    _vae_mid(s, "decoder", block_in)
    for i in reversed(range(len(mult))):
        for j in range(nres + 1):
            _vae_resnet(s, f"decoder.up.{i}.block.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
        if i != 0:
            _conv(s, f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    _norm(s, "decoder.norm_out", block_in)
    _conv(s, "decoder.conv_out", block_in, 3, 3)
    return s


def openclip_text_shapes(width: int, layers: int, hidden: int, vocab: int, proj: int) -> Shapes:
    s: Shapes = {"token_embedding.weight": (vocab, width), "positional_embedding": (77, width)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}"
        _norm(s, f"{p}.ln_1", width)
        s[f"{p}.attn.in_proj_weight"], s[f"{p}.attn.in_proj_bias"] = (3 * width, width), (3 * width,)
        _linear(s, f"{p}.attn.out_proj", width, width)
        _norm(s, f"{p}.ln_2", width)
        _linear(s, f"{p}.mlp.c_fc", width, hidden)
        _linear(s, f"{p}.mlp.c_proj", hidden, width)
    _norm(s, "ln_final", width)
    s["text_projection"], s["logit_scale"], s["attn_mask"] = (width, proj), (), (77, 77)
    return s


def checkpoint_shapes(unet: Shapes, vae: Shapes, clip: Shapes) -> Shapes:
    s: Shapes = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    s |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    s |= {f"cond_stage_model.model.{k}": v for k, v in clip.items()}
    s |= {name: (1000,) for name in SCHEDULE_BUFFERS}
    return s


@functools.cache
def _tiny_checkpoint() -> dict[str, torch.Tensor]:
    text = TINY_TEXT_CONFIG
    shapes = checkpoint_shapes(
        ldm_unet_shapes(32, (1, 2), 1, {1}, text["hidden_size"]),
        ldm_vae_shapes(8, (1, 1, 2, 2), 1),
        openclip_text_shapes(
            text["hidden_size"],
            text["num_hidden_layers"] + 1,
            text["intermediate_size"],
            text["vocab_size"],
            32,
        ),
    )
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}


def tiny_checkpoint() -> dict[str, torch.Tensor]:
    return dict(_tiny_checkpoint())  # a fresh dict per test; tensors are never modified


@pytest.fixture()
def tiny_models() -> dict:
    return tiny_components(seed=1)


def _load_tiny(models: dict, ckpt: dict[str, torch.Tensor]) -> None:
    load_original_mvdream(ckpt, models["unet"], models["vae"], models["text_encoder"])


def test_tiny_original_checkpoint_loads_strictly_into_the_right_places(tiny_models: dict) -> None:
    ckpt = tiny_checkpoint()
    _load_tiny(tiny_models, ckpt)
    unet, vae, text = tiny_models["unet"], tiny_models["vae"], tiny_models["text_encoder"]
    before = tiny_components(seed=1)
    for part in ("unet", "vae", "text_encoder"):  # every parameter was overwritten
        old = before[part].state_dict()
        for name, value in tiny_models[part].state_dict().items():
            assert name.endswith("position_ids") or not torch.equal(value, old[name]), name
    u, f, c = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."
    assert torch.equal(unet.class_embedding.linear_1.weight, ckpt[u + "camera_embed.0.weight"])
    assert torch.equal(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight,
                       ckpt[u + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"])  # fmt: skip
    assert torch.equal(unet.up_blocks[0].upsamplers[0].conv.weight, ckpt[u + "output_blocks.1.1.conv.weight"])
    assert torch.equal(
        unet.up_blocks[1].resnets[1].conv_shortcut.weight,
        ckpt[u + "output_blocks.3.0.skip_connection.weight"],
    )
    assert torch.equal(
        vae.decoder.up_blocks[0].upsamplers[0].conv.weight, ckpt[f + "decoder.up.3.upsample.conv.weight"]
    )
    assert torch.equal(
        vae.encoder.mid_block.attentions[0].to_q.weight, ckpt[f + "encoder.mid.attn_1.q.weight"][:, :, 0, 0]
    )
    in_proj = ckpt[c + "transformer.resblocks.1.attn.in_proj_weight"]
    attn = (
        text.text_model.encoder.layers[1].self_attn
        if hasattr(text, "text_model")
        else text.encoder.layers[1].self_attn
    )
    assert torch.equal(attn.k_proj.weight, in_proj[32:64]) and torch.equal(attn.v_proj.weight, in_proj[64:])
    assert torch.equal(
        text.text_model.embeddings.token_embedding.weight, ckpt[c + "token_embedding.weight"]
    )  # and the tower's last block (penultimate-layer conditioning) is skipped, not an error


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("drop", "model.diffusion_model.camera_embed.2.bias"),
        ("drop", "first_stage_model.decoder.up.0.block.1.conv2.weight"),
        ("drop", "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"),
        ("extra", "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn3.to_q.weight"),
        ("extra", "cond_stage_model.model.transformer.resblocks.4.ln_1.weight"),
        ("extra", "model_ema.decay"),
        ("shape", "first_stage_model.encoder.conv_in.weight"),
    ],
)
def test_bad_checkpoint_error_names_the_key(tiny_models: dict, change: str, key: str) -> None:
    ckpt = tiny_checkpoint()
    if change == "drop":
        del ckpt[key]
    elif change == "extra":
        ckpt[key] = torch.zeros(1)
    else:
        ckpt[key] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
        _load_tiny(tiny_models, ckpt)


def test_diffusers_port_unet_keys_load_strictly(tiny_models: dict) -> None:
    # ashawkey/mvdream-sd2.1-diffusers unet/: MultiViewUNetModel names without the LDM prefix
    prefix = "model.diffusion_model."
    port = {k[len(prefix) :]: v for k, v in tiny_checkpoint().items() if k.startswith(prefix)}
    load_mvdream_unet(port, tiny_models["unet"])
    assert torch.equal(tiny_models["unet"].conv_out.weight, port["out.2.weight"])
    port["label_emb.0.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"label_emb\.0\.weight"):
        load_mvdream_unet(port, tiny_models["unet"])


def test_full_size_checkpoint_maps_one_to_one_on_meta() -> None:
    # sd-v2-base.yaml: model_channels 320, mult (1,2,4,4), 2 res blocks, attention at ds 1,2,4,
    # context 1024; VAE ch 128 mult (1,2,4,4); OpenCLIP ViT-H/14 text: width 1024, 24 layers.
    shapes = checkpoint_shapes(
        ldm_unet_shapes(320, (1, 2, 4, 4), 2, {1, 2, 4}, 1024),
        ldm_vae_shapes(128, (1, 2, 4, 4), 2),
        openclip_text_shapes(1024, 24, 4096, 49408, 1024),
    )
    ckpt = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    with torch.device("meta"):
        unet = build_unet(mvdream_unet_config())
        vae = AutoencoderKL(**SD21_VAE_CONFIG)
        text = ClipTextModel(ClipTextConfig.from_dict(SD21_TEXT_CONFIG))
    load_original_mvdream(ckpt, unet, vae, text)  # raises unless one-to-one
    n_unet = sum(p.numel() for p in unet.parameters())
    n_camera = sum(p.numel() for p in unet.class_embedding.parameters())
    assert n_camera == 16 * 1280 + 1280 + 1280 * 1280 + 1280
    assert n_unet - n_camera == 865_910_724  # SD 2.1-base UNet


def test_tiny_unet_config_is_sd21_shaped() -> None:
    # the tiny model exercises the same block types and linear projection as the full model
    assert (
        TINY_UNET_CONFIG["use_linear_projection"]
        and TINY_VAE_CONFIG["down_block_types"][0] == "DownEncoderBlock2D"
    )
    assert build_unet(mvdream_unet_config(TINY_UNET_CONFIG)).config.class_embed_type == "projection"


# --- loading from files: the real loaders on tiny files -----------------------------------------


def _write_clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer folder in SD 2.1's layout (vocab.json, merges.txt, tokenizer_config.json):
    the 256 byte-level symbols and the two specials, no merges, so it fits the tiny text encoder."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {s: i for i, s in enumerate(symbols)} | {"<|startoftext|>": 256, "<|endoftext|>": 257}
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "model_max_length": 77,
        "pad_token": "!",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"unk_token": "<|endoftext|>"}))


def _sds_runs(guidance: SDSGuidance) -> None:
    images = torch.rand(4, 3, 32, 32, requires_grad=True)
    c2w = torch.eye(4).repeat(4, 1, 1)
    c2w[:, 2, 3] = 3.0
    loss = guidance.sds_loss(images, c2w, guidance.encode_prompt("a chair", ""), 5, 10, 7.5)
    loss.backward()
    assert torch.isfinite(loss) and images.grad.abs().sum() > 0


def test_diffusers_port_folder_loads_through_build_guidance(tmp_path: Path) -> None:
    # ashawkey/mvdream-sd2.1-diffusers layout; unet/config.json holds MultiViewUNetModel's params
    prefix = "model.diffusion_model."
    port = {k[len(prefix) :]: v.contiguous() for k, v in tiny_checkpoint().items() if k.startswith(prefix)}
    (tmp_path / "unet").mkdir()
    save_file(port, tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    ldm = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [1]}
    ldm |= {"num_head_channels": 16, "context_dim": 32, "camera_dim": 16, "in_channels": 4, "out_channels": 4}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(ldm))
    parts = tiny_components(seed=2)
    parts["vae"].save_pretrained(tmp_path / "vae")
    text_encoder = transformers_text_encoder(tmp_path / "text_encoder", TINY_TEXT_CONFIG)
    _write_clip_tokenizer(tmp_path / "tokenizer")

    preset = SimpleNamespace(guidance="mvdream", mvdream_id=str(tmp_path), ref_size=32, seed=0, dtype="fp32")
    guidance = build_guidance(preset, "cpu")
    assert torch.equal(guidance.unet.class_embedding.linear_2.weight, port["camera_embed.2.weight"])
    assert torch.equal(guidance.vae.encoder.conv_in.weight, parts["vae"].encoder.conv_in.weight)
    assert guidance.tokenizer(["ab"]).input_ids[0][:2].tolist() == [256, ord("a") - ord("!")]  # CLIP's BPE
    assert torch.equal(
        guidance.text_encoder.text_model.final_layer_norm.weight, text_encoder.final_layer_norm.weight
    )
    _sds_runs(guidance)


def test_original_checkpoint_file_loads_with_sd_tokenizer(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint()
    torch.save(ckpt, tmp_path / "sd-v2.1-base-4view.pt")
    _write_clip_tokenizer(tmp_path / "sd" / "tokenizer")
    parts = load_original_components(
        tmp_path / "sd-v2.1-base-4view.pt",
        tmp_path / "sd",
        unet_config=mvdream_unet_config(TINY_UNET_CONFIG),
        vae_config=TINY_VAE_CONFIG,
        text_config=TINY_TEXT_CONFIG,
    )
    key = "first_stage_model.encoder.mid.attn_1.proj_out.weight"
    assert torch.equal(parts["vae"].encoder.mid_block.attentions[0].to_out[0].weight, ckpt[key][:, :, 0, 0])
    _sds_runs(SDSGuidance(**parts, frames=4, ref_size=32, device="cpu", camera_fn=mvdream_camera))


def test_sd_folder_loads_as_single_view_guidance(tmp_path: Path) -> None:
    parts = tiny_components(seed=3, multiview=False)
    for name in ("unet", "vae"):
        parts[name].save_pretrained(tmp_path / name)
    transformers_text_encoder(tmp_path / "text_encoder", TINY_TEXT_CONFIG)
    _write_clip_tokenizer(tmp_path / "tokenizer")
    guidance = build_guidance(SimpleNamespace(guidance="sd", sd_id=str(tmp_path), ref_size=32), "cpu")
    assert guidance.frames == 1 and guidance.camera_fn is None and guidance.unet.class_embedding is None
    assert not any(isinstance(p, MultiViewAttnProcessor) for p in guidance.unet.attn_processors.values())
    assert torch.equal(guidance.unet.conv_in.weight, parts["unet"].conv_in.weight)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)  # any batch: one view per sample
    loss = guidance.sds_loss(
        images, torch.eye(4).repeat(2, 1, 1), guidance.encode_prompt("a cup", ""), 1, 2, 7.5
    )
    loss.backward()
    assert torch.isfinite(loss) and images.grad.abs().sum() > 0
