"""Captions: which text a clip trains with (pure, torch-free).

- the same-stem caption file (``clip.mp4`` → ``clip.txt``), else the dataset's ``default_caption``;
- ``[trigger]`` replaced by the job's trigger word (or by DOP's class word for the preservation pass);
- caption dropout: an empty caption with probability p, decided by a caller-supplied generator so the
  decision is reproducible (the dataset seeds one per sample from seed, epoch and position).
"""

from __future__ import annotations

import re
from pathlib import Path

from wanlora.engine.data.frames import RandomLike
from wanlora.engine.data.scan import read_caption

TRIGGER = "[trigger]"
_TRIGGER_RE = re.compile(re.escape(TRIGGER), re.IGNORECASE)


def caption_for(media: str | Path, caption_ext: str = "txt", default_caption: str = "") -> str:
    """The clip's caption file text, else ``default_caption`` (an empty caption file counts as a caption)."""
    text = read_caption(media, caption_ext)
    return default_caption.strip() if text is None else text


def substitute_trigger(caption: str, word: str) -> str:
    """Replace every ``[trigger]`` (any case) with ``word``.

    With an empty ``word`` the token is removed and the punctuation/spacing it leaves is tidied
    ("[trigger], a woman" → "a woman"), so a job without a trigger never trains on the literal "[trigger]".
    """
    if not _TRIGGER_RE.search(caption):
        return caption
    if word:
        return _TRIGGER_RE.sub(lambda _m: word, caption)
    out = _TRIGGER_RE.sub("", caption)
    out = re.sub(r"\s+([,.;:])", r"\1", out)  # "a , b" -> "a, b"
    out = re.sub(r"([,;:])\s*(?=[,;:])", "", out)  # doubled separators
    out = re.sub(r"\s{2,}", " ", out)
    return out.strip().strip(",;:").strip()


def caption_dropout(p: float, rng: RandomLike) -> bool:
    """True = train this sample with the empty caption.  Always draws once, so streams stay aligned."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"caption dropout must be within 0..1, got {p}")
    return rng.random() < p


def final_caption(raw: str, trigger_word: str, dropped: bool) -> str:
    """What the text encoder sees: "" when dropped, else ``raw`` with the trigger substituted."""
    return "" if dropped else substitute_trigger(raw, trigger_word)
