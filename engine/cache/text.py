"""Text-embedding cache and the trainer's prompt → embedding function.

Embeddings are made by :func:`engine.model.text.encode_prompts` — the pipeline's own recipe (real tokens,
then exact zero rows up to 512) — and only the real rows are stored (a 12-token caption is 12 rows, not
512); :func:`pad_rows` puts the zeros back, so a cached embedding is the live one.  Entries are keyed by
(text encoder identity, prompt text, max length) and live beside the dataset like the latent cache.

With the cache every prompt the run can ask for is encoded before training — each caption with the
trigger, the empty prompt (caption dropout keeps working), the DOP preservation-class prompts, the
preview prompts and negatives — and the text encoder is freed.  ``unload_text_encoder`` (the guide's
24 GB trick) encodes only the trigger word, the empty prompt and the preview prompts and negatives: every
caption trains as the trigger, while previews (:meth:`Embedder.verbatim`) keep their own prompts.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from wanlora.engine.cache.keys import entry_key
from wanlora.engine.model.text import MAX_SEQUENCE_LENGTH, clean_prompt, encode_prompts

Progress = Callable[[int, int, int], None]  # (done, total, computed so far)


class TextCache:
    """Stored prompt embeddings (real rows only) of one folder for one text encoder."""

    def __init__(self, folder: Path, encoder_id: str, max_length: int = MAX_SEQUENCE_LENGTH) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / "text"
        self.encoder_id, self.max_length = encoder_id, int(max_length)

    def key(self, prompt: str) -> str:
        return entry_key(kind="text", encoder=self.encoder_id, prompt=prompt, max_length=self.max_length)

    def file_for(self, prompt: str) -> Path:
        return self.dir / f"{self.key(prompt)}.safetensors"

    def get(self, prompt: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        f = self.file_for(prompt)
        if not f.is_file():
            return None
        try:
            return load_file(str(f))["rows"]
        except Exception:  # damaged entry: recompute
            return None

    def put(self, prompt: str, rows: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        f = self.file_for(prompt)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            save_file({"rows": rows.detach().to("cpu").contiguous()}, str(tmp),
                      metadata={"prompt": prompt, "encoder": self.encoder_id, "max_length": str(self.max_length)})
            os.replace(tmp, f)
        finally:
            if tmp.exists():
                tmp.unlink()
        return f


def real_lengths(tokenizer, prompts: list[str], max_length: int = MAX_SEQUENCE_LENGTH) -> list[int]:
    """Tokens (incl. EOS) each prompt really has after the pipeline's cleaning and truncation."""
    tok = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=max_length,
                    truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    return [int(n) for n in tok.attention_mask.sum(dim=1)]


def encode_rows(tokenizer, text_encoder, prompts: list[str], max_length: int = MAX_SEQUENCE_LENGTH
                ) -> list[torch.Tensor]:
    """Each prompt's real rows ``[n_i, D]`` (CPU, the encoder's dtype) — what the cache stores."""
    dtype = next(text_encoder.parameters()).dtype
    full = encode_prompts(tokenizer, text_encoder, prompts, device=torch.device("cpu"), dtype=dtype,
                          max_length=max_length)
    return [full[i, :n].clone() for i, n in enumerate(real_lengths(tokenizer, prompts, max_length))]


def pad_rows(rows: list[torch.Tensor], max_length: int, *, device: torch.device | None, dtype: torch.dtype
             ) -> torch.Tensor:
    """``[B, max_length, D]``: each prompt's rows then exact zeros (the pipeline's layout)."""
    d = rows[0].shape[-1]
    out = torch.zeros(len(rows), max_length, d, dtype=dtype, device=device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r.to(device=device, dtype=dtype)
    return out


class Embedder:
    """``embedder(prompts) -> [B, 512, D]`` for the transformer: from memory when cached, else live."""

    def __init__(self, tokenizer, text_encoder, *, device: torch.device, dtype: torch.dtype,
                 max_length: int = MAX_SEQUENCE_LENGTH) -> None:
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.device, self.dtype, self.max_length = device, dtype, int(max_length)
        self.memory: dict[str, torch.Tensor] = {}
        self.fixed: str | None = None  # unload_text_encoder: every non-empty caption becomes this prompt
        self.live_calls = 0  # batches that went through the text encoder (tests check the cache is used)

    @property
    def resident(self) -> bool:
        return self.text_encoder is not None

    def _map(self, p: str) -> str:
        return self.fixed if self.fixed is not None and p.strip() else p

    def load(self, wanted: dict[TextCache, set[str]], progress: Progress | None = None) -> tuple[int, int]:
        """Get every wanted prompt into memory: from its cache, else encode (and store) it.

        Returns (total, computed).  Needs the encoder only for prompts that are not stored yet.
        """
        items = [(c, p) for c, ps in wanted.items() for p in sorted(ps)]
        total, computed, done = len(items), 0, 0
        todo: dict[TextCache, list[str]] = {}
        for c, p in items:
            rows = self.memory.get(p)
            if rows is None:
                rows = c.get(p)
            if rows is None:
                todo.setdefault(c, []).append(p)
            else:
                self.memory[p] = rows
                done += 1
        if progress:
            progress(done, total, 0)
        for c, prompts in todo.items():
            if not self.resident:
                raise RuntimeError(f"{len(prompts)} prompt(s) are not cached and the text encoder was freed")
            for i in range(0, len(prompts), 8):
                chunk = prompts[i: i + 8]
                for p, rows in zip(chunk, encode_rows(self.tokenizer, self.text_encoder, chunk, self.max_length),
                                   strict=True):
                    c.put(p, rows)
                    self.memory[p] = rows
                    computed += 1
                    done += 1
                if progress:
                    progress(done, total, computed)
        return total, computed

    def drop_encoder(self) -> None:
        """Free the text encoder (and its memory); from now on only stored prompts can be embedded."""
        self.text_encoder = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __call__(self, prompts: Iterable[str]) -> torch.Tensor:
        """Training captions: with ``unload_text_encoder`` every non-empty one is embedded as the trigger."""
        return self._embed([self._map(p) for p in prompts])

    def verbatim(self, prompts: Iterable[str]) -> torch.Tensor:
        """Each prompt as written (previews and their negatives): they were encoded before the encoder was
        freed, so even under ``unload_text_encoder`` a preview follows its own prompt and CFG has a real
        unconditional side."""
        return self._embed(list(prompts))

    def _embed(self, mapped: list[str]) -> torch.Tensor:
        if all(p in self.memory for p in mapped):
            return pad_rows([self.memory[p] for p in mapped], self.max_length, device=self.device, dtype=self.dtype)
        if not self.resident:
            missing = next(p for p in mapped if p not in self.memory)
            raise KeyError(f"prompt {missing!r} is not in the text-embedding cache and the text encoder was freed")
        self.live_calls += 1
        return encode_prompts(self.tokenizer, self.text_encoder, mapped, device=self.device, dtype=self.dtype,
                              max_length=self.max_length)
