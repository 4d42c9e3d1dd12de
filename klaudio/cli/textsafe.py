"""Text for the terminal: control characters shown escaped, so no text can drive the terminal."""

from __future__ import annotations


def _escapes() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in range(0x20) if chr(code) not in "\t\n"}
    table[0x7F] = "\\x7f"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})  # C1, CSI (U+009B) too
    # Bidi embeddings, overrides and isolates reorder what the terminal shows ("Trojan Source",
    # CVE-2021-42574): a line could read differently from what it holds.
    bidi = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    table.update({code: f"\\u{code:04x}" for code in bidi})
    # Lone surrogates (undecodable bytes, as Python keeps them) cannot be written to a terminal.
    table.update({code: f"\\u{code:04x}" for code in range(0xD800, 0xE000)})
    return table


_ESCAPES = _escapes()
_ONE_LINE = {**_ESCAPES, ord("\n"): "\\n"}


def safe(text: str, one_line: bool = False) -> str:
    r"""Text with every control character shown escaped: ESC as \x1b, BEL as \x07.

    Escaped are C0 controls but tab and newline, DEL, C1 controls (U+0080-U+009F), bidi
    controls and lone surrogates; with one_line, newline too (as \n), so a line stays one line.
    The result holds no control character, so safe(safe(text)) == safe(text).
    """
    return text.translate(_ONE_LINE if one_line else _ESCAPES)
