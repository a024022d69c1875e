"""CLIP's byte-level BPE tokenizer, read from a transformers `tokenizer/` folder, without transformers.

Why here: see engine/guidance/clip_text.py (transformers stays out of an endpoint). It gives the ids
transformers' CLIPTokenizer gives (5.x, the `tokenizers`-backed one; checked on the prompts in
tests/data by tests/test_clip_tokenizer.py):
- special tokens (BOS, EOS, pad, unknown) found in the raw text: each its own id;
- the text between them: Unicode NFC, every whitespace run -> one space, lower case;
- words: CLIP's pattern (English contractions, letter runs, single digits, runs of other
  symbols), each word's UTF-8 bytes as GPT-2's printable byte symbols, `</w>` on its last;
- BPE: the lowest-ranked adjacent pair merged first (leftmost on ties) until none is in merges.txt;
- ids: BOS + up to max_length - 2 word pieces + EOS, then padding with the folder's pad token
  (SD 2.x's tokenizer pads with "!", OpenAI CLIP's with "<|endoftext|>").
The folder holds vocab.json + merges.txt, or tokenizer.json (the fast format) carrying both;
tokenizer_config.json and special_tokens_map.json name the pad and unknown tokens.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex
import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's word pattern without its two specials: encode() splits those out of the text first
WORD = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
WHITESPACE = regex.compile(r"\s+")
END_OF_WORD = "</w>"
DEFAULT_MAX_LENGTH = 77
WORD_CACHE_SIZE = 10_000  # words' BPE results kept (as transformers' BPE does): prompts are untrusted text


@functools.cache
def byte_table() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in its own order (CLIP's vocabulary begins with
    these 256 symbols in this order): the printable Latin-1 bytes stand for themselves, then the
    other bytes map to chr(256), chr(257), ... in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in kept}
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


@dataclass
class TokenIds:
    input_ids: torch.Tensor


class TokenizerError(ValueError):
    """A tokenizer folder that cannot be read as CLIP's BPE; the message names the file."""


class BatchTokenizer:
    """Call shape of transformers' tokenizers as SDS uses it: `tok([text], padding="max_length",
    max_length=77, truncation=True, return_tensors="pt").input_ids` -> (B, max_length) long,
    over a subclass's `encode` (BOS, pieces, EOS)."""

    pad_token_id: int
    model_max_length: int

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        raise NotImplementedError

    def __call__(
        self,
        text: str | list[str],
        padding: str | bool = "max_length",
        max_length: int | None = None,
        truncation: bool = True,
        return_tensors: str = "pt",
    ) -> TokenIds:
        if not truncation or return_tensors != "pt":
            raise ValueError("only truncation=True and return_tensors='pt' are supported")
        texts = [text] if isinstance(text, str) else list(text)
        max_length = max_length or self.model_max_length
        rows = [self.encode(t, max_length) for t in texts]
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return TokenIds(input_ids=ids)


class ClipTokenizer(BatchTokenizer):
    """CLIP's BPE over a vocabulary and its merges (from_pretrained reads a tokenizer folder)."""

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        pad_token: str = EOS,
        unk_token: str = EOS,
        model_max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        for token in (BOS, EOS, pad_token, unk_token):
            if token not in vocab:
                raise TokenizerError(f"CLIP tokenizer: {token!r} is not in the vocabulary")
        self.bos_token_id, self.eos_token_id = vocab[BOS], vocab[EOS]
        self.pad_token_id, self.unk_token_id = vocab[pad_token], vocab[unk_token]
        self.model_max_length = model_max_length
        self._pieces: dict[str, list[int]] = {}
        # transformers matches its special tokens in the raw text first, each one its own id: with
        # SD 2.x's pad "!", every "!" of a prompt is that token, never BPE'd with its neighbours
        specials = sorted({BOS, EOS, pad_token, unk_token}, key=len, reverse=True)
        self._special_ids = {token: vocab[token] for token in specials}
        self._specials = regex.compile("(" + "|".join(regex.escape(t) for t in specials) + ")")

    @classmethod
    def from_pretrained(cls, folder: str | Path, subfolder: str = "") -> ClipTokenizer:
        where = Path(folder) / subfolder
        config = (
            _read_json(where / "tokenizer_config.json") if (where / "tokenizer_config.json").is_file() else {}
        )
        # transformers' rule: a config without `added_tokens_decoder` (the older format, SD 2.x's)
        # takes its special tokens from special_tokens_map.json, which is where SD 2.x's pad "!" is
        if "added_tokens_decoder" not in config and (where / "special_tokens_map.json").is_file():
            config.update(_read_json(where / "special_tokens_map.json"))
        if (where / "vocab.json").is_file() and (where / "merges.txt").is_file():
            vocab = _read_json(where / "vocab.json")
            merges = _parse_merges(
                (where / "merges.txt").read_text(encoding="utf-8").splitlines(), where / "merges.txt"
            )
        elif (where / "tokenizer.json").is_file():
            model = _read_json(where / "tokenizer.json").get("model") or {}
            if not isinstance(model.get("vocab"), dict):
                raise TokenizerError(f"{where / 'tokenizer.json'}: no BPE vocabulary under model.vocab")
            vocab = model["vocab"]
            merges = _parse_merges(model.get("merges") or [], where / "tokenizer.json")
        else:
            raise TokenizerError(f"{where}: no vocab.json + merges.txt and no tokenizer.json")
        max_length = config.get("model_max_length", DEFAULT_MAX_LENGTH)
        if not isinstance(max_length, int) or max_length > 10_000:  # transformers' "no limit" is 1e30
            max_length = DEFAULT_MAX_LENGTH
        return cls(
            vocab,
            merges,
            pad_token=_token_text(config.get("pad_token", EOS)),
            unk_token=_token_text(config.get("unk_token", EOS)),
            model_max_length=max_length,
        )

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """BOS, the text's pieces (cut to fit `max_length`), EOS."""
        limit = (max_length or self.model_max_length) - 2
        ids: list[int] = []
        for i, segment in enumerate(self._specials.split(text)):
            if i % 2:  # the split's captured separators: the special tokens
                ids.append(self._special_ids[segment])
                continue
            segment = WHITESPACE.sub(" ", unicodedata.normalize("NFC", segment)).lower()
            for word in WORD.findall(segment):
                ids += self._word_ids(word)
            if len(ids) >= limit:
                break
        return [self.bos_token_id, *ids[:limit], self.eos_token_id]

    def _word_ids(self, word: str) -> list[int]:
        cached = self._pieces.get(word)
        if cached is None:
            table = byte_table()
            chars = [table[b] for b in word.encode("utf-8")]
            chars[-1] += END_OF_WORD
            pieces = self._merge(chars)  # a piece a small vocabulary lacks is unk, as in transformers
            cached = [self.vocab.get(p, self.unk_token_id) for p in pieces]
            if len(self._pieces) >= WORD_CACHE_SIZE:
                self._pieces.clear()
            self._pieces[word] = cached
        return cached

    def _merge(self, parts: list[str]) -> list[str]:
        while len(parts) > 1:
            ranked = [
                (self.ranks.get(pair, -1), i) for i, pair in enumerate(zip(parts, parts[1:], strict=False))
            ]
            known = [(rank, i) for rank, i in ranked if rank >= 0]
            if not known:
                break
            at = min(known)[1]
            best = parts[at], parts[at + 1]
            merged: list[str] = []
            i = 0
            while i < len(parts):  # every occurrence, left to right, none overlapping
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: {exc}") from exc
    if not isinstance(value, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return value


def _parse_merges(lines: list[Any], source: Path) -> list[tuple[str, str]]:
    """merges.txt lines ("a b", a "#version" header) or tokenizer.json's merges ("a b" or [a, b])."""
    merges: list[tuple[str, str]] = []
    for line in lines:
        if isinstance(line, str):
            if line.startswith("#version") or not line.strip():
                continue
            pair = line.split(" ")
        else:
            pair = list(line)
        if len(pair) != 2:
            raise TokenizerError(f"{source}: merge {line!r} is not a pair")
        merges.append((pair[0], pair[1]))
    return merges


def _token_text(token: Any) -> str:
    """tokenizer_config.json writes a token as text or as {"content": text, ...}."""
    return str(token["content"]) if isinstance(token, dict) else str(token)
