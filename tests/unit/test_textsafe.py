"""The one helper that makes text safe for the terminal."""

from __future__ import annotations

import pytest

from klaudio.cli.textsafe import safe


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: retitles the window
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # CSI: recolours
        ("\x9b2J", "\\x9b2J"),  # C1 CSI: clears the screen
        ("a\x00b\x08c\x7fd", "a\\x00b\\x08c\\x7fd"),
        ("cr\rlf", "cr\\x0dlf"),
        ("\x80\x9f", "\\x80\\x9f"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),  # bidi override
        ("\u2066\u2069", "\\u2066\\u2069"),  # bidi isolates
        ("bad \udcff byte", "bad \\udcff byte"),  # a lone surrogate from undecodable argv
    ],
)
def test_control_characters_are_shown_escaped(raw: str, shown: str) -> None:
    assert safe(raw) == shown
    assert safe(raw, one_line=True) == shown


def test_tab_and_newline_are_kept_unless_one_line() -> None:
    assert safe("a\tb\nc") == "a\tb\nc"
    assert safe("a\tb\nc", one_line=True) == "a\tb\\nc"


def test_plain_and_non_ascii_text_is_unchanged() -> None:
    text = "héllo wörld → ✓ 日本語 \u00a0 \\x1b"
    assert safe(text) == text


def test_every_control_character_is_escaped_and_nothing_else() -> None:
    controls = [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F)]
    controls += [*range(0x2066, 0x206A)]
    for code in range(0x3000):
        char = chr(code)
        escaped = code in controls and char not in "\t\n"
        assert (safe(char) != char) == escaped, hex(code)
        assert (safe(char, one_line=True) != char) == (escaped or char == "\n"), hex(code)


def test_safe_is_idempotent() -> None:
    raw = "\x1b]0;x\x07\n\x9b\u202e\r"
    once = safe(raw, one_line=True)
    assert safe(once, one_line=True) == once
    assert safe(once) == once
