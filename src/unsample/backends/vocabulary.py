"""Words of a prompt that the model's tokenizer cannot represent, and the words it can.

A tokenizer maps a word it cannot spell to its unknown token. The embedded model's word-level
tokenizer (`unsample.backends.tokenizer`) knows only the shapes world's caption words, so
"photo" or "cat" become ``<|unk|>`` and carry no meaning for the text encoder: the word is in
effect dropped. SD's CLIP tokenizers are byte-level BPE and almost never produce their unknown
token, but can (a vocabulary missing a byte), so the check here is generic: it splits the prompt
the way the tokenizer does (normalizer, then pre-tokenizer) and asks the tokenizer's own model
which pieces contain the unknown id.

Everything here takes a `transformers` tokenizer (fast, with a ``backend_tokenizer``, or a slow
one with ``tokenize`` / ``convert_tokens_to_ids``); nothing is imported or loaded at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers.models import WordLevel

MAX_WORDS_IN_MESSAGE = 40
"""How many known words `unknown_words_message` lists before it abbreviates."""


class UnknownWordsWarning(UserWarning):
    """A prompt has words the model's tokenizer maps to its unknown token."""


def _backend(tokenizer: Any) -> Any | None:
    """The `tokenizers.Tokenizer` behind a fast tokenizer, or None for a slow one."""
    return getattr(tokenizer, "backend_tokenizer", None)


def _whitespace_words(text: str) -> list[tuple[str, tuple[int, int]]]:
    """``text`` split on white space, each word with its (start, end) character span."""
    words: list[tuple[str, tuple[int, int]]] = []
    pos = 0
    for word in text.split():
        start = text.index(word, pos)
        pos = start + len(word)
        words.append((word, (start, pos)))
    return words


def _words_with_ids(tokenizer: Any, prompt: str) -> list[tuple[str, list[int]]]:
    """The prompt's words as the tokenizer splits them, each with the token ids it becomes.

    A fast tokenizer: the backend's normalizer, then its pre-tokenizer, then its model on each
    piece (exactly the pipeline ``tokenizer(prompt)`` runs, without special tokens, padding or
    truncation). The word shown is the normalized text of the piece (for byte-level BPE the
    piece itself is byte-mapped, so the span is read from the normalized string). A slow
    tokenizer: white-space words through ``tokenize`` and ``convert_tokens_to_ids``.
    """
    backend = _backend(tokenizer)
    if backend is None:
        return [
            (word, list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))))
            for word, _ in _whitespace_words(prompt)
        ]
    normalized = backend.normalizer.normalize_str(prompt) if backend.normalizer is not None else prompt
    if backend.pre_tokenizer is not None:
        pieces = backend.pre_tokenizer.pre_tokenize_str(normalized)
    else:
        pieces = _whitespace_words(normalized)
    return [
        (normalized[start:end] or piece, [token.id for token in backend.model.tokenize(piece)])
        for piece, (start, end) in pieces
    ]


def unknown_words(tokenizer: Any, prompt: str) -> list[str]:
    """The words of ``prompt`` that contain the tokenizer's unknown token, in order, once each.

    Words are split and normalized the way the tokenizer does it (so for the embedded model's
    lower-casing, punctuation-splitting tokenizer "Cat," gives the word "cat"). Returns [] when
    the tokenizer has no unknown token.
    """
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None:
        return []
    found: dict[str, None] = {}
    for word, ids in _words_with_ids(tokenizer, prompt):
        if unk_id in ids:
            found.setdefault(word, None)
    return list(found)


def known_vocabulary(tokenizer: Any) -> list[str] | None:
    """The sorted words of a closed word-level vocabulary, without special tokens.

    None when the vocabulary is open (BPE, WordPiece, Unigram: any word is spelled from pieces)
    or the tokenizer is a slow one whose model cannot be inspected.
    """
    backend = _backend(tokenizer)
    if backend is None:
        return None

    if not isinstance(backend.model, WordLevel):
        return None
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {str(tok) for tok in added.values() if getattr(tok, "special", False)}
    return sorted(word for word in backend.get_vocab(with_added_tokens=True) if word not in special)


def _one_line(word: str) -> str:
    return word if word.isprintable() else repr(word)


def unknown_words_message(words: Iterable[str], prompt: str, vocabulary: list[str] | None) -> str:
    """One line naming the unknown ``words`` of ``prompt`` and, for a closed vocabulary, the known ones.

    At most `MAX_WORDS_IN_MESSAGE` known words are listed; the rest are counted.
    """
    words = [_one_line(w) for w in words]
    message = (
        f"prompt {prompt!r} has words the model does not know: {', '.join(words)} "
        f"({'it' if len(words) == 1 else 'they'} would be dropped)"
    )
    if vocabulary is None:
        return message
    shown = [_one_line(w) for w in vocabulary[:MAX_WORDS_IN_MESSAGE]]
    rest = len(vocabulary) - len(shown)
    more = f", ... ({rest} more)" if rest > 0 else ""
    return f"{message}; this model knows: {', '.join(shown)}{more} (see 'unsample vocabulary')"


def prompt_problems(model: Any, prompt: str) -> tuple[str | None, list[str], str | None]:
    """What the text encoder would do to ``prompt`` behind the user's back, as one-line messages:
    (overflow message or None, the unknown words, their message or None)."""
    count, window = model.prompt_window(prompt)
    overflow = None
    if count > window > 0:
        overflow = (f"prompt {prompt!r} is {count} tokens but the text encoder reads {window} (start and end "
                    "included): the rest would be cut; shorten it")
    words = model.unknown_words(prompt)
    unknown = unknown_words_message(words, prompt, model.vocabulary()) if words else None
    return overflow, words, unknown
