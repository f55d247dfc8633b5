"""A word-level tokenizer in the `transformers` format, built from a closed word list.

The embedded model and the tests' tiny pipelines need a tokenizer that lives on disk next
to the weights and loads with ``from_pretrained`` like SD's CLIP tokenizer, without a
download. A caption grammar has a closed vocabulary, so one token per word is both exact and
small. Token ids follow CLIP's conventions where they matter to the text encoder: prompts
are wrapped in ``<|startoftext|> ... <|endoftext|>`` and padded with ``<|endoftext|>``, so
CLIP's pooled output (taken at the first end-of-text token) is well defined.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from unsample.errors import InputError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
UNK = "<|unk|>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, UNK)


def build_word_tokenizer(words: Iterable[str], *, max_length: int = 16):  # -> PreTrainedTokenizerFast
    """Return a lower-casing, whitespace/punctuation-splitting word-level tokenizer.

    Ids: 0 = ``<|startoftext|>``, 1 = ``<|endoftext|>`` (also padding), 2 = ``<|unk|>``,
    then the words in the order given (duplicates dropped). ``max_length`` counts the
    start and end tokens.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        word = word.lower()
        if not word or any(ch.isspace() for ch in word):
            raise InputError(f"tokenizer word {word!r} is empty or has white space; give single words")
        vocab.setdefault(word, len(vocab))
    if max_length < 3:
        raise InputError(f"max_length={max_length} leaves no room for words; use 3 or more")

    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,
        model_max_length=max_length,
    )
