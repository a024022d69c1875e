"""engine/guidance/clip_text.py against transformers' CLIPTextModel: the same hidden states from the
same files, in either of transformers' file layouts, and clear errors for files that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from engine.guidance.clip_text import ClipTextConfig, ClipTextModel
from engine.guidance.configs import SD21_TEXT_CONFIG
from tests.support.model_dirs import transformers_text_encoder

SMALL = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def _ids() -> torch.Tensor:
    ids = torch.randint(3, 300, (2, 77), generator=torch.Generator().manual_seed(5))
    ids[:, 0], ids[0, 9], ids[0, 10:] = 0, 2, 1  # BOS, EOS, then padding, as SDS encodes prompts
    return ids


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_same_hidden_states_as_transformers_from_its_own_folder(tmp_path: Path, act: str) -> None:
    reference = transformers_text_encoder(tmp_path, SMALL | {"hidden_act": act}, seed=3)
    ours = ClipTextModel.from_pretrained(tmp_path).eval()
    assert ours.config.hidden_act == act and ours.config.num_hidden_layers == 3
    with torch.no_grad():
        expected, got = reference(_ids())[0], ours(_ids())[0]
    assert got.shape == (2, 77, 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_the_hub_layout_with_its_prefix_and_index_buffer_loads(tmp_path: Path, weights: str) -> None:
    # SD 2.1's and MVDream's text_encoder files: transformers 4 names (`text_model.`), position_ids
    reference = transformers_text_encoder(tmp_path / "saved", SMALL, seed=4)
    state = {f"text_model.{k}": v.clone() for k, v in reference.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    if weights.endswith(".safetensors"):
        save_file(state, folder / weights)
    else:
        torch.save(state, folder / weights)
    ours = ClipTextModel.from_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(ours(_ids())[0], reference(_ids())[0], rtol=1e-5, atol=1e-5)


def test_a_file_that_does_not_fit_its_config_names_the_key(tmp_path: Path) -> None:
    transformers_text_encoder(tmp_path, SMALL)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 4}))
    with pytest.raises(ValueError, match=r"missing 'text_model\.encoder\.layers\.3\."):
        ClipTextModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 2}))
    with pytest.raises(ValueError, match=r"unexpected 'text_model\.encoder\.layers\.2\."):
        ClipTextModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin"):
        ClipTextModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        ClipTextConfig.from_dict(SMALL | {"hidden_act": "relu"})


def test_sd21_encoder_has_transformers_names_and_shapes() -> None:
    # what engine.guidance.convert maps OpenCLIP's tower onto, and what the hub's files hold
    with torch.device("meta"):
        ours = ClipTextModel(ClipTextConfig.from_dict(SD21_TEXT_CONFIG))
        reference = CLIPTextModel(CLIPTextConfig(**SD21_TEXT_CONFIG))
    expected = {
        k if k.startswith("text_model.") else f"text_model.{k}": tuple(v.shape)
        for k, v in reference.state_dict().items()
        if not k.endswith("position_ids")
    }
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert sum(p.numel() for p in ours.parameters()) == 340_387_840  # OpenCLIP ViT-H/14 text, 23 layers
