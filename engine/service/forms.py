"""Strict form decoding for the generation endpoint.

Starlette's own form parser silently falls back to latin-1 for bytes that are not valid
UTF-8; a prompt mangled that way would be generated for, scored low, and never noticed.
Here undecodable bytes are an error the caller answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# Image tasks (about 20 % of a validator's tasks, three-gen-subnet config.py text_tasks_ratio 0.8)
# carry the base64 image in `prompt`; the miner posts it unchanged. Only a bounded prefix is
# decoded, enough for the magic bytes: the answer is fast whatever the image's size.
IMAGE_MAGIC = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),  # + "WEBP" at byte 8, checked below
}
IMAGE_MIN_CHARS = 64  # no real image is shorter; short base64-looking words stay text prompts
_PREFIX_CHARS = 24  # 18 decoded bytes: every magic above fits
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,")
_B64_HEAD = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


class FormError(ValueError):
    """The body is not a readable form (status 400, or 415 for an unsupported type)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImagePrompt:
    format: str  # "png", "jpeg", "gif", "webp"
    approx_bytes: int  # decoded size, from the base64 length (not decoded in full)


def detect_image_prompt(prompt: str) -> ImagePrompt | None:
    """The prompt is a base64 image (plain or a data: URL) when its head decodes to an image's magic
    bytes; None for text. Costs one regex over the first 256 characters and one 24-character decode."""
    text = prompt.strip()
    if m := _DATA_URL.match(text):
        text = text[m.end() :]
    if len(text) < IMAGE_MIN_CHARS or not _B64_HEAD.match(text[:256]):
        return None
    head = text[:_PREFIX_CHARS]
    try:
        raw = (base64.urlsafe_b64decode if ("-" in head or "_" in head) else base64.b64decode)(head)
    except (binascii.Error, ValueError):
        return None
    for fmt, magics in IMAGE_MAGIC.items():
        if any(raw.startswith(m) for m in magics) and (fmt != "webp" or raw[8:12] == b"WEBP"):
            return ImagePrompt(fmt, len(text) * 3 // 4)
    return None


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """Decode a url-encoded or multipart body into {field: text}; first occurrence wins."""
    media, params = parse_options_header(content_type or "")
    media_type = media.decode("latin-1").lower()
    if media_type == URLENCODED:
        return _parse_urlencoded(body)
    if media_type == MULTIPART:
        boundary = params.get(b"boundary")
        if not boundary:
            raise FormError("multipart body without a boundary parameter")
        return _parse_multipart(body, boundary)
    raise FormError(
        f"unsupported Content-Type {media_type or '(none)'!r}; send the prompt as a form field "
        f"({URLENCODED} or {MULTIPART})",
        status=415,
    )


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormError(
            f"{what} is not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        ) from exc


def _parse_urlencoded(body: bytes) -> dict[str, str]:
    text = _decode(body, "form body")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise FormError(f"a percent-encoded form value is not valid UTF-8: {exc.reason}") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _parse_multipart(body: bytes, boundary: bytes) -> dict[str, str]:
    parts: list[tuple[bytes, bytearray]] = []  # (content-disposition, data)
    header_name = bytearray()
    header_value = bytearray()
    disposition = b""

    def on_part_begin() -> None:
        nonlocal disposition
        disposition = b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if bytes(header_name).lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        parts.append((disposition, bytearray()))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error types
        raise FormError(f"malformed multipart body: {exc}") from exc

    fields: dict[str, str] = {}
    for disp, data in parts:
        _, options = parse_options_header(disp)
        name = options.get(b"name")
        if name is None:
            continue
        field = _decode(name, "a multipart field name")
        fields.setdefault(field, _decode(bytes(data), f"form field {field!r}"))
    return fields
