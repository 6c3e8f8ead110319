"""``LiveText``: streamed text printed as it comes, a word at a time, with secrets still masked."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccr._redact import Redactor
from ccr.cli._live import LiveText

SECRET = "sk-planted-live-0123456789"
PLAIN_SECRET = "hunter2-live-password"  # not key-shaped: only the known secret masks it


class Out(io.StringIO):
    """Counts flushes, to show every printed piece is flushed at once."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[str] = []

    def flush(self) -> None:
        self.flushes.append(self.getvalue())


def live(hold: int = 0) -> tuple[LiveText, Out]:
    out = Out()
    return LiveText(out, Redactor([SECRET, PLAIN_SECRET]), longest_secret=hold), out


def feed(pieces: list[str]) -> tuple[list[str], str]:
    """What was visible after each piece, and everything once closed."""
    text, out = live()
    seen = []
    for piece in pieces:
        text.feed(piece)
        seen.append(out.getvalue())
    text.close()
    return seen, out.getvalue()


def test_words_are_printed_and_flushed_as_they_complete():
    """Each complete word is written and flushed; only the last, maybe unfinished one waits."""
    seen, final = feed(["one", " two", " thr", "ee", " four"])
    assert seen == ["", "one ", "one two ", "one two ", "one two three "]
    assert final == "one two three four\n"


def test_a_secret_split_over_pieces_is_masked():
    """A known secret arriving in three pieces is masked as a whole."""
    _, final = feed(["key ", SECRET[:5], SECRET[5:12], SECRET[12:] + " done"])
    assert final == "key *** done\n"
    _, final = feed(["pw ", PLAIN_SECRET[:4], PLAIN_SECRET[4:], " ok"])
    assert final == "pw *** ok\n"


@pytest.mark.parametrize(
    "pieces",
    [
        ["use Bearer", " abc", "def123 now"],
        ["set api_key:", " value123", " now"],
        ["set password", " = ", "value123 now"],
        ["set token", ":", " value123 now"],
    ],
)
def test_a_pair_split_between_pieces_is_masked_whole(pieces):
    """ "Bearer X" and "key: value" pairs are held until their value arrives, then masked."""
    seen, final = feed(pieces)
    assert "value123" not in final and "abcdef123" not in final
    assert final.endswith("*** now\n")
    assert not any(s.rstrip().endswith(("Bearer", "api_key:", "password", "token")) for s in seen)


def test_ordinary_words_like_token_are_printed_once_the_next_word_is_complete():
    """A word that might start a pair waits only until the word after it is complete."""
    seen, final = feed(["each token", " costs", " money"])
    assert seen == ["each ", "each ", "each token costs "]
    assert final == "each token costs money\n"


def test_non_ascii_text_without_spaces_is_printed_at_once():
    """Text without spaces (CJK) is cut at each non-ASCII character, not held to the end."""
    seen, final = feed(["流式", "输出", "很快"])
    assert seen == ["流式", "流式输出", "流式输出很快"]
    assert final == "流式输出很快\n"


def test_a_long_run_without_boundaries_is_printed_a_hold_behind():
    """A 1,000-character blob is printed as it comes, held back by the longest secret at most."""
    text, out = live(hold=200)
    for _ in range(10):
        text.feed("A" * 100)
    assert 700 <= len(out.getvalue()) <= 800
    text.close()
    assert out.getvalue() == "A" * 1000 + "\n"


def test_close_ends_the_line_only_if_needed():
    """A newline is added after text that does not end with one; nothing for no text at all."""
    assert feed(["line\n"])[1] == "line\n"
    assert feed([])[1] == ""
    text, out = live()
    text.close()
    assert out.flushes == []
    assert text.written == 0


WORDS = st.sampled_from(
    [
        "alpha",
        "beta",
        SECRET,
        PLAIN_SECRET,
        "Bearer",
        "abc123tok",
        "api_key:",
        "password",
        "=",
        "value9",
        "token",
        "tokens",
        "流式",
        "sk-abcdefgh12",
        "x=1,",
    ]
)
SPACES = st.sampled_from([" ", "  ", "\n", "\t", " \n"])


@given(
    words=st.lists(st.tuples(WORDS, SPACES), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_split_prints_what_the_whole_text_redacted_prints(words, cuts):
    """However the text is split into pieces, the output is the redacted whole text."""
    whole = "".join(word + space for word, space in words)
    bounds = sorted({c for c in cuts if c < len(whole)})
    pieces = [whole[a:b] for a, b in zip([0, *bounds], [*bounds, len(whole)], strict=True)]
    _, final = feed(pieces)
    expected = Redactor([SECRET, PLAIN_SECRET]).clean(whole, limit=10**9) or ""
    assert final == expected + ("\n" if expected and not expected.endswith("\n") else "")
    assert SECRET not in final
    assert PLAIN_SECRET not in final
