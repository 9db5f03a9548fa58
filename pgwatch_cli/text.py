"""Text written by others, made safe to show: the first line of an error, and the characters
that must never reach a terminal or a page raw (they steer the display instead of showing).

One home for these, so that the terminal (console, tail), the web (presence names, the demo's
actor header) and every error message agree on what counts.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates make text render as something else ("Trojan Source").
BIDI_CONTROLS = frozenset(chr(code) for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# C1 controls and DEL: JSON leaves them raw, terminals act on some of them.
_C1_AND_DEL = (0x7F, *range(0x80, 0xA0))
# Invisible characters that make one name look like another ("Anna\u200b" shows as "Anna"):
# zero-width spaces and joiners, the bidi marks, word joiner and invisible operators, BOM.
INVISIBLE = (0x061C, *range(0x200B, 0x2010), *range(0x2060, 0x2065), 0xFEFF)

# str.translate tables: every control character as an escape (ESC → ``\x1b``) for plain text,
# and as a JSON ``\u`` escape for JSON (which already escapes C0 itself).
TEXT_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), *_C1_AND_DEL)},
    **{code: f"\\u{code:04x}" for code in (*map(ord, BIDI_CONTROLS), *INVISIBLE)},
}
JSON_ESCAPES = {code: f"\\u{code:04x}"
                for code in (*_C1_AND_DEL, *map(ord, BIDI_CONTROLS), *INVISIBLE)}


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds a control character, a line break, a lone surrogate or a bidi
    control: what a name shown to other people must not contain."""
    return any(
        unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in BIDI_CONTROLS
        for char in text
    )


def first_line(error: BaseException | str) -> str:
    """The first line of an error's text (libpq's first line names the cause), else the
    error's class name; for a string, its first line or ``""``."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return "" if isinstance(error, str) else type(error).__name__
