"""Image prompts (the subnet's image-to-3D tasks, base64 in `prompt`): told from text by the magic
bytes of a bounded decoded prefix (engine/service/forms.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from engine.service.forms import IMAGE_MIN_CHARS, detect_image_prompt

PNG_B64 = (Path(__file__).parent / "mining" / "fixtures" / "image_prompt.b64").read_text().strip()


def b64(head: bytes, size: int = 600) -> str:
    return base64.b64encode(head + bytes(range(256)) * (size // 256 + 1)).decode()


@pytest.mark.parametrize(
    ("prompt", "fmt"),
    [
        (PNG_B64, "png"),
        (b64(b"\xff\xd8\xff\xe0\x00\x10JFIF"), "jpeg"),
        (b64(b"GIF89a"), "gif"),
        (b64(b"RIFF\x00\x01\x00\x00WEBPVP8 "), "webp"),
        ("data:image/png;base64," + PNG_B64, "png"),
        (base64.urlsafe_b64encode(base64.b64decode(PNG_B64)).decode(), "png"),
    ],
)
def test_images_are_recognised_by_their_magic_bytes(prompt: str, fmt: str) -> None:
    found = detect_image_prompt(prompt)
    assert found is not None and found.format == fmt
    assert found.approx_bytes == pytest.approx(len(prompt.split(",")[-1]) * 3 // 4)


@pytest.mark.parametrize(
    "prompt",
    [
        "a red wooden chair",
        "x" * 1000,  # base64 alphabet, decodes to junk: text
        b64(b"RIFF\x00\x01\x00\x00WAVEfmt "),  # RIFF but not WEBP
        b64(b"%PDF-1.7"),
        PNG_B64[: IMAGE_MIN_CHARS - 1],  # too short to be an image
        PNG_B64[:100] + " with words " + PNG_B64[100:],
    ],
)
def test_text_and_other_data_are_not_images(prompt: str) -> None:
    assert detect_image_prompt(prompt) is None


def test_decoding_is_bounded_whatever_the_size() -> None:
    # a 40 MB "image" whose tail is not even base64: only the head is looked at
    huge = PNG_B64[:256] + "!" * 40_000_000
    found = detect_image_prompt(huge)
    assert found is not None and found.format == "png"
