"""Prompt validation: the one rule every entry point (CLI, endpoint, console) applies.

The subnet's prompts are short English descriptions; the rule only rejects input no
generation should run on, and is deliberately not stricter than the miner's traffic.
"""

from __future__ import annotations

MAX_PROMPT_CHARS = 1024


def validate_prompt(text: object) -> str:
    """Return the prompt with surrounding whitespace removed, or raise ValueError saying why.

    Rejected: a non-string, an empty or whitespace-only prompt, a prompt longer than
    MAX_PROMPT_CHARS characters (after stripping), and NUL characters (they truncate
    C-side tokenizers silently).
    """
    if not isinstance(text, str):
        raise ValueError(f"prompt must be text, got {type(text).__name__}")
    prompt = text.strip()
    if not prompt:
        raise ValueError("prompt is empty" if not text else "prompt is only whitespace")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if "\x00" in prompt:
        raise ValueError("prompt contains a NUL character")
    return prompt
