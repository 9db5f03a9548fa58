"""Names people see of each other (presence viewers, the demo's editors): what one may hold.

Any script is welcome (``李雷``, ``محمد``); what is refused would let one name pass for
another or break a page's layout: control characters, line breaks, bidi overrides, and
invisible format characters (``"Anna\\u200b"`` looks like "Anna"). The zero-width
(non-)joiners that Persian, Indic scripts and emoji need are kept where they join something.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_LENGTH = 100
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf"})
_JOINERS = frozenset("\u200c\u200d")


def name_problem(text: str, what: str, limit: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``text`` cannot be a name shown to other people (None: it can)."""
    if not text.strip():
        return f"{what} must not be empty"
    if len(text) > limit:
        return f"{what} must be at most {limit} characters"
    for position, char in enumerate(text):
        if char in _JOINERS and _joins(text, position):
            continue
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            kind = "invisible" if category == "Cf" else "control"
            return f"{what} must not contain {kind} characters (found U+{ord(char):04X})"
    return None


def _joins(text: str, position: int) -> bool:
    """A joiner between two visible characters (not at an end, not next to a space)."""
    if position == 0 or position == len(text) - 1:
        return False
    before, after = text[position - 1], text[position + 1]
    return not (before.isspace() or after.isspace()) and all(
        unicodedata.category(char)[0] in "LMNS" for char in (before, after))
