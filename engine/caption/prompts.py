"""What the captioner is asked for each recipe, and what wanlora does to its answer (pure, torch-free).

The guide (3.4) wants different captions per recipe: a motion LoRA's name the camera move and the action
("orbit 360 around the subject"), a style LoRA's describe the look and not the scene ("grainy 16mm film
look, high contrast, warm tint"), a character LoRA's carry the trigger and a class ("frung, young woman,
casual clothing").  The model is asked for that shape; :func:`finish` then makes it one clean line and, for
a character, enforces the ``[trigger], class`` prefix itself, so the rule holds whatever the model wrote.
"""

from __future__ import annotations

import re
from typing import Literal

from wanlora.engine.data.captions import TRIGGER, has_trigger

Recipe = Literal["motion", "style", "character"]
RECIPES: tuple[str, ...] = ("motion", "style", "character")

SYSTEM = "You are a helpful assistant."
MAX_WORDS = 60  # asked for under 30; UMT5 reads 512 tokens, a caption is a sentence or two

_MEDIA = {"video": "this video clip", "image": "this image"}

# One instruction per recipe.  Each asks for one short line of comma-separated phrases, no preamble, the
# guide's example as the model of the answer.
_ASK: dict[str, str] = {
    "motion": (
        "Write a caption for {media} to train a motion LoRA. Name the camera move first (for example "
        "\"orbit 360 around the subject\", \"slow dolly in toward the character\", \"pan left\", "
        "\"static camera\"), then the main action and the subject in a few words. "
        "Answer with one line of short comma-separated phrases, under 30 words, no preamble."
    ),
    "style": (
        "Write a caption for {media} to train a style LoRA. Describe only the look: medium, film stock or "
        "rendering, grain, lighting, colour palette, contrast, texture (for example \"grainy 16mm film look, "
        "high contrast, warm tint\"). Do not describe the people, objects or story in the scene. "
        "Answer with one line of short comma-separated phrases, under 25 words, no preamble."
    ),
    "character": (
        "Write a caption for {media} to train a character LoRA. Start with \"{subject}\", then describe "
        "what changes between clips: pose, action, framing, clothing, setting (for example \"{subject}, "
        "casual clothing, walking toward the camera, city street\"). Do not describe the face or the "
        "person's fixed features. Answer with one line of short comma-separated phrases, under 30 words, "
        "no preamble."
    ),
}

# Preambles models add despite being told not to ("The video shows ...", "Caption: ...").
_PREAMBLE = re.compile(
    r"^\s*(?:(?:here(?:'s| is) (?:a |the )?caption[^:]*:)|(?:caption\s*:)|"
    r"(?:(?:this|the) (?:video|clip|image|footage) (?:shows|depicts|features|captures)\s*))\s*",
    re.IGNORECASE,
)


class PromptError(ValueError):
    """A recipe/trigger/class combination that cannot make captions (the message says what to pass)."""


def check_options(recipe: str, trigger: str = "", class_word: str = "") -> None:
    """Raise :class:`PromptError` for an unknown recipe or a character recipe without a class word."""
    if recipe not in RECIPES:
        raise PromptError(f"--recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    if recipe == "character" and not class_word.strip():
        raise PromptError("--recipe character needs --class WORD (what the character is: \"young woman\", "
                          "\"man\", \"cat\"); captions start with the trigger and the class, as the guide says")


def subject(trigger: str, class_word: str) -> str:
    """The character caption's fixed start: the trigger (``[trigger]`` when none is given) and the class."""
    word = trigger.strip() or TRIGGER
    cls = class_word.strip()
    return f"{word}, {cls}" if cls else word


def instruction(recipe: str, media: Literal["video", "image"] = "video", trigger: str = "",
                class_word: str = "") -> str:
    """The user message for one clip (or image) in ``recipe``'s style."""
    check_options(recipe, trigger, class_word)
    return _ASK[recipe].format(media=_MEDIA[media], subject=subject(trigger, class_word))


def clean(raw: str) -> str:
    """One tidy line: first paragraph, no quotes/markdown/preamble, single spaces, no trailing full stop."""
    text = raw.replace("\r", "\n").strip()
    text = text.split("\n\n", 1)[0].replace("\n", " ")
    text = re.sub(r"[*_`#]+", "", text)
    text = _PREAMBLE.sub("", text)
    text = text.strip().strip("\"'“”‘’").strip()
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    words = text.split(" ")
    if len(words) > MAX_WORDS:  # a model stuck repeating itself: keep a caption-sized start
        text = " ".join(words[:MAX_WORDS])
    return text.rstrip(" .;:,")


def _drop_leading(text: str, words: list[str]) -> str:
    """Remove leading mentions of the trigger/class the model may have repeated ("frung, woman, ...")."""
    changed = True
    while changed and text:
        changed = False
        for w in words:
            m = re.match(rf"^\s*(?:a |an |the )?{re.escape(w)}(?!\w)\s*[,;:.-]?\s*", text, re.IGNORECASE)
            if w and m:
                text = text[m.end():]
                changed = True
    return text.strip()


def finish(raw: str, recipe: str, trigger: str = "", class_word: str = "") -> str:
    """The caption file's text from the model's answer.

    Character captions always start with ``trigger, class`` (``[trigger], class`` without a trigger word:
    the dataset code substitutes it at load); the rest of the answer follows, with any repeat of the
    trigger, ``[trigger]`` or the class at its start removed.  Other recipes get :func:`clean` only.
    """
    text = clean(raw)
    if recipe != "character":
        return text
    head = subject(trigger, class_word)
    rest = _drop_leading(text, [TRIGGER, trigger.strip(), class_word.strip()])
    if trigger.strip() and has_trigger(rest, trigger.strip()):
        rest = re.sub(rf"(?<!\w){re.escape(trigger.strip())}(?!\w)\s*,?\s*", "", rest).strip(" ,")
    return f"{head}, {rest}" if rest else head
