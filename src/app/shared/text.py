"""Text helpers shared by the features' queries."""

from __future__ import annotations


def like_pattern(text: str) -> str:
    """`%text%` for `ILIKE ... ESCAPE '\\'`, with the wildcards of `text` matched literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
