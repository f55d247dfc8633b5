"""Prompt words the tokenizer cannot represent: found, reported in one line, warned about or refused."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import unsample
from unsample.api import check_prompt_words
from unsample.backends.tokenizer import build_word_tokenizer
from unsample.backends.vocabulary import (
    MAX_WORDS_IN_MESSAGE,
    UnknownWordsWarning,
    known_vocabulary,
    unknown_words,
    unknown_words_message,
)
from unsample.cli import app
from unsample.embedded import embedded_model_path
from unsample_lab.shapes.vocabulary import VOCABULARY

_installed = pytest.mark.skipif(
    not (embedded_model_path() / "model_index.json").is_file(), reason="the embedded model is not installed"
)


def needs_embedded(test: Any) -> Any:
    """Runs the embedded model (the `model` tier); skipped when it is not installed."""
    return pytest.mark.model(_installed(test))


@pytest.fixture(scope="module")
def words_tokenizer() -> Any:
    return build_word_tokenizer(["a", "red", "circle"])


@pytest.fixture
def embedded(embedded_model) -> unsample.Model:
    """The embedded model, loaded once per run (tests/conftest.py)."""
    return embedded_model


def _tiny_clip_tokenizer(drop: tuple[str, ...] = ()) -> Any:
    """A real CLIP byte-level BPE tokenizer over the byte alphabet, minus the tokens in ``drop``."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(t for t in tokens if t not in drop)}
    return CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")])


# --- a word-level tokenizer built in the test -------------------------------------------------


def test_unknown_words_in_order_once_each(words_tokenizer: Any) -> None:
    assert unknown_words(words_tokenizer, "a photo of a red cat") == ["photo", "of", "cat"]
    assert unknown_words(words_tokenizer, "cat cat a photo cat") == ["cat", "photo"]


def test_the_unknown_words_are_the_ones_that_become_unk(words_tokenizer: Any) -> None:
    prompt = "a photo of a red cat"
    ids = words_tokenizer(prompt, add_special_tokens=False).input_ids
    unk = words_tokenizer.unk_token_id
    assert [w for w, i in zip(prompt.split(), ids) if i == unk] == unknown_words(words_tokenizer, prompt)


def test_case_is_folded_as_the_tokenizer_folds_it(words_tokenizer: Any) -> None:
    assert unknown_words(words_tokenizer, "A RED Circle") == []
    assert unknown_words(words_tokenizer, "A Photo of a RED Cat and a cat") == ["photo", "of", "cat", "and"]


def test_punctuation_is_split_off_like_the_tokenizer_does(words_tokenizer: Any) -> None:
    assert unknown_words(words_tokenizer, "a red circle, a red circle.") == [",", "."]
    assert unknown_words(words_tokenizer, "a red cat!") == ["cat", "!"]


def test_known_words_and_empty_prompts_give_nothing(words_tokenizer: Any) -> None:
    assert unknown_words(words_tokenizer, "a red circle") == []
    assert unknown_words(words_tokenizer, "") == []
    assert unknown_words(words_tokenizer, "   ") == []


def test_word_level_vocabulary_is_sorted_without_special_tokens(words_tokenizer: Any) -> None:
    assert known_vocabulary(words_tokenizer) == ["a", "circle", "red"]


def test_no_unk_token_means_no_unknown_words(words_tokenizer: Any) -> None:
    class NoUnk:
        unk_token_id = None
        backend_tokenizer = words_tokenizer.backend_tokenizer

    assert unknown_words(NoUnk(), "a photo of a cat") == []


def test_slow_tokenizer_falls_back_to_white_space_words() -> None:
    class Slow:
        unk_token_id = 0
        known = {"a": 1, "red": 2}

        def tokenize(self, word: str) -> list[str]:
            return [word.lower()]

        def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
            return [self.known.get(t, 0) for t in tokens]

    assert unknown_words(Slow(), "a Red  cat a cat") == ["cat"]
    assert known_vocabulary(Slow()) is None


# --- CLIP's byte-level BPE --------------------------------------------------------------------


def test_clip_bpe_has_an_open_vocabulary_and_spells_any_word() -> None:
    tok = _tiny_clip_tokenizer()
    assert known_vocabulary(tok) is None
    assert unknown_words(tok, "A photo of a Cat, naïve café 猫!") == []


def test_clip_bpe_reports_a_word_whose_byte_is_missing() -> None:
    # CLIP's unk is <|endoftext|>: the check must not count the appended end token.
    tok = _tiny_clip_tokenizer(drop=("z</w>",))
    assert tok.unk_token_id == tok.eos_token_id
    assert unknown_words(tok, "a Quiz about a cat") == ["quiz"]
    assert unknown_words(tok, "a zebra") == []  # "z" inside a word is still known


def test_tiny_pipeline_tokenizer_is_word_level(tiny_model: unsample.Model) -> None:
    # The tests' tiny SD pipeline uses the word-level tokenizer, not CLIP BPE.
    from unsample_lab.testing.tiny_pipeline import TINY_WORDS

    assert tiny_model.vocabulary() == sorted(set(TINY_WORDS))
    assert tiny_model.unknown_words("a photo of the zebra") == ["zebra"]


# --- the message ------------------------------------------------------------------------------


def test_message_is_one_line_and_names_the_words() -> None:
    msg = unknown_words_message(["photo", "cat"], "a photo of a cat", ["a", "and", "background", "circle"])
    assert "\n" not in msg
    assert msg == (
        "prompt 'a photo of a cat' has words the model does not know: photo, cat (they would be dropped); "
        "this model knows: a, and, background, circle (see 'unsample vocabulary')"
    )


def test_message_without_a_closed_vocabulary_omits_the_known_words() -> None:
    msg = unknown_words_message(["quiz"], "a quiz", None)
    assert msg == "prompt 'a quiz' has words the model does not know: quiz (it would be dropped)"


def test_message_stays_one_line_for_a_multi_line_prompt_and_a_long_vocabulary() -> None:
    vocab = [f"w{i:03d}" for i in range(MAX_WORDS_IN_MESSAGE + 7)]
    msg = unknown_words_message(["cat"], "a red\ncat", vocab)
    assert "\n" not in msg and "'a red\\ncat'" in msg
    assert f"w{MAX_WORDS_IN_MESSAGE - 1:03d}, ... (7 more)" in msg and f"w{MAX_WORDS_IN_MESSAGE:03d}" not in msg


# --- the embedded model -----------------------------------------------------------------------


@needs_embedded
def test_embedded_unknown_words(embedded: unsample.Model) -> None:
    assert "of" not in VOCABULARY and "photo" not in VOCABULARY and "cat" not in VOCABULARY
    assert embedded.unknown_words("a photo of a red cat") == ["photo", "of", "cat"]
    assert embedded.unknown_words("A Large RED Circle on a Striped Gray Background") == []
    assert embedded.unknown_words("a red circle, on a gray background.") == [",", "."]


@needs_embedded
def test_embedded_vocabulary_is_the_caption_vocabulary(embedded: unsample.Model) -> None:
    assert embedded.vocabulary() == sorted(VOCABULARY)


@needs_embedded
def test_check_prompt_words_warns_when_allowed(embedded: unsample.Model) -> None:
    with pytest.warns(UnknownWordsWarning) as record:
        words = check_prompt_words(embedded, "a photo of a red cat")
    assert words == ["photo", "of", "cat"]
    assert len(record) == 1 and record[0].filename == __file__  # stacklevel points at the caller
    msg = str(record[0].message)
    assert "\n" not in msg and "photo, of, cat" in msg and "circle" in msg


@needs_embedded
def test_check_prompt_words_raises_when_not_allowed(embedded: unsample.Model) -> None:
    with pytest.raises(ValueError, match=r"does not know: photo, of, cat .*this model knows: a, and, background"):
        check_prompt_words(embedded, "a photo of a red cat", allow=False)


@needs_embedded
def test_check_prompt_words_is_silent_for_known_words(embedded: unsample.Model) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prompt_words(embedded, "a small blue star on a plain black background", allow=False) == []
        assert check_prompt_words(embedded, "a small blue star on a plain black background") == []


# --- the CLI ----------------------------------------------------------------------------------


@needs_embedded
def test_cli_vocabulary_lists_the_embedded_words() -> None:
    r = CliRunner().invoke(app, ["vocabulary", "--device", "cpu"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"embedded: {len(VOCABULARY)} known words"
    assert all(len(line) <= 100 for line in lines)
    assert " ".join(lines[1:]).split() == sorted(VOCABULARY)
    assert "circle" in r.output.split()


def test_cli_vocabulary_on_a_model_folder(tiny_pipeline_dir: Path) -> None:
    from unsample_lab.testing.tiny_pipeline import TINY_WORDS

    r = CliRunner().invoke(app, ["vocabulary", "--model", str(tiny_pipeline_dir), "--device", "cpu"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].endswith(f": {len(set(TINY_WORDS))} known words")
    assert "circle" in r.output.split()


def test_cli_vocabulary_says_a_bpe_vocabulary_is_open(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "pipe-clip"
    shutil.copytree(tiny_pipeline_dir, folder)
    shutil.rmtree(folder / "tokenizer")
    _tiny_clip_tokenizer().save_pretrained(str(folder / "tokenizer"))
    model = unsample.load(str(folder), device="cpu")
    assert model.vocabulary() is None and model.unknown_words("a photo of a cat") == []
    r = CliRunner().invoke(app, ["vocabulary", "--model", str(folder), "--device", "cpu"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "open vocabulary" in r.output


def test_a_prompt_longer_than_the_window_is_said(tmp_path) -> None:
    import warnings

    import pytest as _pytest

    import unsample
    from unsample.api import check_prompt_words
    from unsample_lab.testing.tiny_pipeline import build_tiny_pipeline

    model = unsample.load(str(build_tiny_pipeline(tmp_path / "tiny")), device="cpu")
    count, window = model.prompt_window("a red cat")
    assert count == 5 and window == 12  # three words plus start and end; the tiny tokenizer's window
    long = " ".join(["cat"] * 20)
    with _pytest.raises(ValueError, match="22 tokens but the text encoder reads 12"):
        check_prompt_words(model, long, allow=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_prompt_words(model, long)
    assert any("would be cut" in str(w.message) for w in caught)


@pytest.mark.parametrize("fixture,window", [("tiny_sd3_pipeline_dir", None), ("tiny_flux_pipeline_dir", None),
                                            ("tiny_sd3_no_t5_pipeline_dir", 12)])
def test_a_t5_pipeline_reads_prompts_past_clips_window(fixture: str, window: int | None,
                                                       request: pytest.FixtureRequest) -> None:
    """SD3 / Flux with T5: the prompt reaches the transformer up to max_sequence_length T5 tokens,
    so a prompt longer than CLIP's window is not refused; without T5, CLIP's window holds."""
    import warnings

    import unsample
    from unsample.backends.vocabulary import prompt_problems

    m = unsample.load(str(request.getfixturevalue(fixture)), device="cpu")
    long = " ".join(["a red cat"] * 10)  # 30 words: past the tiny CLIP's 12 tokens
    overflow, _, _ = prompt_problems(m, long)
    if window is None:
        assert overflow is None
        m.max_sequence_length = 8  # a T5 window the prompt overflows
        overflow, _, _ = prompt_problems(m, long)
        assert overflow is not None and "the text encoder reads 8" in overflow
    else:
        assert overflow is not None and f"the text encoder reads {window}" in overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unsample.api.check_prompt_words(m, "a red cat") == []
