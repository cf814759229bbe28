"""Captions: which text a clip trains with (pure, torch-free).

- the same-stem caption file (``clip.mp4`` → ``clip.txt``), else the dataset's ``default_caption``;
- ``[trigger]`` replaced by the job's trigger word (or by DOP's class word for the preservation pass);
- with a trigger word set, every caption of a non-regularization dataset that lacks it gets it prepended
  ("a woman walking" → "frung a woman walking"), as ai-toolkit does (``toolkit/prompt_utils.py``
  ``inject_trigger_into_prompt`` with ``add_if_not_present``); ``job.inject_trigger = false`` turns that off;
- DOP's preservation prompt: the training caption with the trigger replaced by the class word (never the
  training caption itself, which would make DOP undo what the LoRA learns);
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


def trigger_rule(trigger_word: str, inject: bool = True) -> str:
    """What training does with ``[trigger]`` and the trigger word, in one sentence.

    ``wanlora show`` prints it and ``wanlora validate`` quotes it, so the two cannot disagree; the effect on
    ``[trigger]`` is read off :func:`substitute_trigger` itself, the function every caption and prompt goes
    through."""
    word = trigger_word.strip()
    if not substitute_trigger(TRIGGER, word):
        return ("job.trigger_word is empty, so [trigger] is removed from captions and prompts "
                "(the LoRA learns no trigger word)")
    rule = ("captions lacking it get it prepended (job.inject_trigger = true, as ai-toolkit does)" if inject
            else "captions without it train as written (job.inject_trigger = false)")
    return f"{word!r} replaces [trigger]; {rule}; regularization captions are left alone"


def has_trigger(caption: str, word: str) -> bool:
    """Whether ``word`` occurs in ``caption`` as a whole word (case-sensitive, as the tokenizer sees it)."""
    word = word.strip()
    return bool(word) and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption) is not None


def training_caption(raw: str, trigger_word: str, *, inject: bool = True, is_regularization: bool = False) -> str:
    """The caption a sample trains with (before dropout): ``[trigger]`` substituted, then — with ``inject``,
    a trigger word and a non-regularization dataset — the trigger prepended when the caption lacks it.

    Regularization captions are never given the trigger: they teach what the base model already does.
    """
    text = substitute_trigger(raw, trigger_word)
    word = trigger_word.strip()
    if inject and word and not is_regularization and not has_trigger(text, word):
        text = f"{word} {text}".strip()
    return text


def caption_dropout(p: float, rng: RandomLike) -> bool:
    """True = train this sample with the empty caption.  Always draws once, so streams stay aligned."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"caption dropout must be within 0..1, got {p}")
    return rng.random() < p


def final_caption(raw: str, trigger_word: str, dropped: bool, *, inject: bool = True,
                  is_regularization: bool = False) -> str:
    """What the text encoder sees: "" when dropped (the unconditional prompt), else :func:`training_caption`.

    ai-toolkit injects the trigger even into a dropped caption (so it trains on the bare trigger); here a
    dropped caption stays empty, which is what caption dropout is for (SPEC: "an empty caption with
    probability p").
    """
    return "" if dropped else training_caption(raw, trigger_word, inject=inject, is_regularization=is_regularization)


def preservation_prompt(caption: str, trigger_word: str, class_word: str, *, add_if_missing: bool = True) -> str:
    """The caption with ``[trigger]`` — and the trigger word itself, as a whole word — replaced by the class.

    ``caption`` is the training caption (raw text works too: ``[trigger]`` is replaced here).  When it holds
    no trigger at all and ``add_if_missing`` (non-regularization data), the class word is prepended, so the
    result differs from the caption whenever the class word differs from the trigger.
    """
    word = trigger_word.strip()
    had = "[trigger]" in caption.lower() or has_trigger(caption, word)
    out = substitute_trigger(caption, class_word)
    if word:
        out = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", lambda _m: class_word, out)
    if not had and add_if_missing and class_word.strip():
        out = f"{class_word.strip()} {out}".strip()
    return out


def sample_preservation_prompt(caption_raw: str, trigger_word: str, class_word: str, *, inject: bool = True,
                               is_regularization: bool = False) -> str:
    """The preservation prompt of one sample from its raw caption (dropout ignored: DOP keeps the class)."""
    caption = training_caption(caption_raw, trigger_word, inject=inject, is_regularization=is_regularization)
    return preservation_prompt(caption, trigger_word, class_word, add_if_missing=not is_regularization)
