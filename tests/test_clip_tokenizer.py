"""engine/guidance/clip_tokenizer.py gives the ids transformers' CLIPTokenizer gives, on CLIP's real
vocabulary: open_clip ships CLIP's BPE merges (bpe_simple_vocab_16e6.txt.gz), and the vocabulary
is built from them as OpenAI's CLIP builds it (the same vocab.json the SD 2.1 repository holds)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from open_clip.tokenizer import default_bpe
from transformers import CLIPTokenizer

from engine.guidance.clip_tokenizer import ClipTokenizer, TokenizerError

PROMPTS = Path(__file__).parent / "data" / "prompts.txt"
EDGE_CASES = [
    "",
    "   ",
    "Hello  World!!",  # "!" is SD 2.x's pad token: transformers keeps each one whole
    "wow! a chair!",
    "it's a café’s naïve résumé",
    "don't won't they'll I'd we're you've I'm",
    "🍔 burger with 3 patties, 12.5cm",
    "a\tb\nc  d",
    "e\u0301 combining accent",  # NFC
    "Ａｂｃ full width",
    "日本語のテキスト",
    "<|endoftext|> inside<|startoftext|>text",
    "zzzzzzzz aaaa mmmmmmmmmmmmm",
    "x" * 300,
    " ".join(["word"] * 100),  # past 77 tokens: cut, EOS kept
    "!!!" * 40,
]


def _clip_merges() -> list[str]:
    lines = gzip.decompress(Path(default_bpe()).read_bytes()).decode("utf-8").split("\n")
    return lines[1 : 49152 - 256 - 2 + 1]  # OpenAI CLIP's SimpleTokenizer takes these


def _byte_symbols() -> list[str]:
    # GPT-2's table in its own order, written out here independently of the module under test
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in kept]
    return [chr(b) for b in kept] + [chr(256 + i) for i in range(len(rest))]


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CLIP's tokenizer in SD 2.x's layout (pad "!" in special_tokens_map.json) and with the
    default pad (<|endoftext|>)."""
    merges = _clip_merges()
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    folders = {}
    for name, special_map in (("sd2", {"pad_token": "!"}), ("openai", None)):
        folder = tmp_path_factory.mktemp(name)
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        config = {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        if special_map:
            (folder / "special_tokens_map.json").write_text(json.dumps(special_map))
        folders[name] = folder
    return folders


def _ids(tokenizer: object, text: str) -> list[int]:
    batch = tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")  # type: ignore[operator]
    return batch.input_ids[0].tolist()


@pytest.mark.parametrize("layout", ["sd2", "openai"])
def test_same_ids_as_transformers_on_every_prompt(clip_folders: dict[str, Path], layout: str) -> None:
    reference = CLIPTokenizer.from_pretrained(clip_folders[layout])
    ours = ClipTokenizer.from_pretrained(clip_folders[layout])
    assert ours.pad_token_id == reference.pad_token_id == (0 if layout == "sd2" else 49407)
    texts = [line.strip() for line in PROMPTS.read_text().splitlines() if line.strip()] + EDGE_CASES
    assert len(texts) > 900
    different = [t for t in texts if _ids(ours, t) != _ids(reference, t)]
    assert different == []


def test_known_clip_ids(clip_folders: dict[str, Path]) -> None:
    # CLIP's own tokenization of a caption (the ids every CLIP port agrees on)
    ids = _ids(ClipTokenizer.from_pretrained(clip_folders["sd2"]), "A photo of a cat")
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and set(ids[7:]) == {0}


def test_the_word_cache_stays_bounded(clip_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.guidance import clip_tokenizer

    monkeypatch.setattr(clip_tokenizer, "WORD_CACHE_SIZE", 8)
    tokenizer = ClipTokenizer.from_pretrained(clip_folders["sd2"])
    expected = _ids(tokenizer, "a photo of a cat")
    for n in range(50):  # untrusted prompts: new words without end
        _ids(tokenizer, f"word{n} zz{n}qq")
    assert len(tokenizer._pieces) <= 8
    assert _ids(tokenizer, "a photo of a cat") == expected


def test_the_fast_format_alone_loads(clip_folders: dict[str, Path], tmp_path: Path) -> None:
    # a folder holding only tokenizer.json (as transformers 5 saves it): vocab and merges inside
    CLIPTokenizer.from_pretrained(clip_folders["openai"]).save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    ours = ClipTokenizer.from_pretrained(tmp_path)
    expected = ClipTokenizer.from_pretrained(clip_folders["openai"])
    for text in EDGE_CASES:
        assert _ids(ours, text) == _ids(expected, text)


def test_unreadable_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no vocab.json"):
        ClipTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(TokenizerError, match=r"merges.txt: merge 'a b c' is not a pair"):
        ClipTokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "!"}))
    with pytest.raises(TokenizerError, match="'!' is not in the vocabulary"):
        ClipTokenizer.from_pretrained(tmp_path)
