"""Token alignment between a source and a target prompt, for prompt-to-prompt attention control.

Both prompts go through the model's own tokenizer exactly as the backend encodes them (padded to
``model_max_length``), so position j of a map is key token j of the UNet's cross-attention. The
alignment is a vector ``source_index`` over target positions: ``source_index[j] = i`` means the
target's token j takes the source's attention map of token i; ``-1`` means j is new and keeps
its own map.

- replace (word swap): the prompts must have the same token count, and position j maps to
  position j. A swapped word's source map lands on the word that replaces it.
- refine (words added, or removed): a diff of the two padded id sequences
  (``difflib.SequenceMatcher``). Equal runs map to each other (that includes the end-of-text
  and padding run, shifted by the number of added tokens); a substitution of equal length maps
  position by position, as a swap inside a refine; every other target token is new.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from unsample.errors import InputError


def prompt_ids(tokenizer: Any, prompt: str) -> tuple[list[int], int]:
    """The padded ids the text encoder sees for ``prompt``, and how many of them are not padding."""
    length = int(tokenizer.model_max_length)
    padded = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
    unpadded = tokenizer(prompt, padding=False, max_length=length, truncation=True).input_ids
    return [int(i) for i in padded], len(unpadded)


def _tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]


def replace_alignment(tokenizer: Any, source: str, target: str) -> torch.Tensor:
    """Word-swap alignment: identity over positions; the prompts must have equal token counts."""
    src_ids, n_src = prompt_ids(tokenizer, source)
    tgt_ids, n_tgt = prompt_ids(tokenizer, target)
    if n_src != n_tgt:
        raise InputError(
            f"mode='replace' swaps words token for token, but the source prompt {source!r} has {n_src} tokens "
            f"{_tokens(tokenizer, src_ids[:n_src])} and the target {target!r} has {n_tgt} "
            f"{_tokens(tokenizer, tgt_ids[:n_tgt])}; use mode='refine' when words are added or removed"
        )
    return torch.arange(len(tgt_ids))


def refine_alignment(tokenizer: Any, source: str, target: str) -> torch.Tensor:
    """Words-added alignment: tokens common to both prompts take the source map, new ones keep theirs."""
    src_ids, _ = prompt_ids(tokenizer, source)
    tgt_ids, _ = prompt_ids(tokenizer, target)
    index = torch.full((len(tgt_ids),), -1, dtype=torch.long)
    matcher = difflib.SequenceMatcher(None, src_ids, tgt_ids, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            index[j1:j2] = torch.arange(i1, i2)
    return index


def word_positions(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Positions of ``word``'s tokens in ``prompt`` (every occurrence; empty if absent)."""
    ids, n = prompt_ids(tokenizer, prompt)
    word_ids = [int(i) for i in tokenizer(word, add_special_tokens=False).input_ids]
    if not word_ids:
        raise InputError(f"the word {word!r} has no tokens; give a word of the prompt")
    found: list[int] = []
    k = len(word_ids)
    for start in range(n - k + 1):
        if ids[start : start + k] == word_ids:
            found.extend(range(start, start + k))
    return sorted(set(found))


def prompt_words(tokenizer: Any, prompt: str) -> list[str]:
    """The prompt's tokens without the special ones, for error messages."""
    ids, n = prompt_ids(tokenizer, prompt)
    special = set(getattr(tokenizer, "all_special_ids", []))
    return [t for i, t in zip(ids[:n], _tokens(tokenizer, ids[:n])) if i not in special]


def changed_words(source: str, target: str) -> tuple[list[str], list[str]]:
    """The words of ``source`` removed and the words of ``target`` added (a word-level diff)."""
    a, b = source.split(), target.split()
    removed, added = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if op != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added
