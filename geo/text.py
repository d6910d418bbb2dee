"""Names as people write them: compared without accents, case or punctuation."""

from __future__ import annotations

import re
import unicodedata
from typing import Any


def normalise_key(key: str) -> str:
    """``"Dân số"`` → ``"dan_so"``: no accents, lower case, words joined by ``_``."""
    text = unicodedata.normalize("NFKD", key.replace("đ", "d").replace("Đ", "D"))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def clean_text(value: Any) -> str:
    if value is None:
        return ""
    text = unicodedata.normalize("NFC", str(value))
    return " ".join(text.split())
