"""Write the clips and job files that BENCHMARKS.md runs through ``wanlora trial`` (synthetic clips, real codecs).

    python bench/trial_jobs.py OUT      # then: wanlora trial OUT/guide.toml, OUT/s41x512.toml, ...

- ``guide.toml``: the guide's run — motion recipe, 20 clips, 41 frames, 512/768/1024 buckets, both experts,
  switch_every 10, 3000 steps, latents and text cached — on the 141 GB tier (bf16, both resident).
- ``guide_80.toml`` / ``guide_24.toml``: the same run on the 80 GB (fp8) and 24 GB (nf4, low_vram, 512 only)
  tiers, for ``wanlora trial --vram-gib 80`` / ``--vram-gib 24``.
- ``s41x512.toml``, ``s41x480.toml``, ``s81x480.toml``: one expert at one bucket each (41x512x512,
  41x480x848, 81x480x848), the shapes bench/step.py measures; ``s41x480`` also renders one preview at the
  defaults (768x768, 41 frames, 25 steps, both experts).
- ``*_fp8.toml``: the same on the 141 GB tier with ``quantization.transformer = "fp8"`` (fp8 compute).
- ``guide81.toml`` / ``guide81_fp8.toml``: the guide's run at 81 frames (20 clips of 96 frames).
- ``s41x512_fp8_b2.toml``: ``s41x512_fp8`` at batch 2 (does batch 2 raise samples/s on the H200?).
- ``s41x1024_fp8.toml``: one expert at 41x1024x1024; ``*_lorabf16``: ``s41x512_fp8`` / ``s41x1024_fp8`` with the LoRA
  kept in bf16 (``advanced.lora_master_dtype``), against the default fp32 masters in the same run.
- ``s81x1024_fp8.toml``: one expert at 81x1024x1024 (86 016 tokens), the bucket that runs out of memory on the
  H200 (BENCHMARKS.md §0b): ``wanlora trial s81x1024_fp8.toml --steps 1 --clips 2 --vram-gib 124
  --memory-snapshot snaps/`` writes what filled the card at the error; ``s81x1024_fp8_2x.toml``: the same bucket
  with both experts resident, as the 81-frame guide trains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _job(name: str, folder: Path, *, tier: int | str = 141, resolutions: list[int], frames: int,
         both: bool = True, switch_every: int = 10, steps: int = 3000, preview: Path | None = None,
         fp8: bool = False, batch: int = 1, lora: str = "") -> str:
    lines = [
        "[job]", f'name = "{name}"', 'preset = "motion"', f"vram_tier = {tier}", "",
        "[model]", 'name_or_path = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"', "",
        "[multistage]", "high_noise = true", f"low_noise = {'true' if both else 'false'}",
        f"switch_every = {switch_every}", "",
        "[training]", f"steps = {steps}", "cache_text_embeddings = true", *([f"batch_size = {batch}"] if batch != 1 else []), "",
        "[save]", "every = 250", "",
    ]
    if fp8:  # fp8 weights + fp8 matmuls for the frozen base (LoRA-gradient cosine ≥ 0.998 per block, §0)
        lines += ["[quantization]", 'transformer = "fp8"', ""]
    if lora:  # the LoRA master dtype against the default fp32 (issue #26's cost)
        lines += ["[advanced]", f'lora_master_dtype = "{lora}"', ""]
    if preview is not None:
        lines += ["[sample]", "enabled = true", "every = 250", "",
                  "[[sample.prompts]]", 'prompt = "a red square moving right"', f'ctrl_img = "{preview}"', ""]
    lines += ["[[datasets]]", f'folder = "{folder}"', f"resolutions = {resolutions}", f"num_frames = {frames}",
              "cache_latents = true", ""]
    return "\n".join(lines)


def _write_clips(folder: Path, *, n: int, num_frames: int, size: tuple[int, int], caption: str) -> None:
    """``n`` clips: two rendered, the rest copies of them (the trials cache ``--clips 2`` and project caching to
    every clip, so only the count matters, and rendering dozens of large clips costs GPU-lease minutes)."""
    import shutil

    _render_clips(folder, n=min(n, 2), num_frames=num_frames, size=size, caption=caption)
    for i in range(2, n):
        shutil.copyfile(folder / f"clip_{i % 2:03d}.mp4", folder / f"clip_{i:03d}.mp4")
        shutil.copyfile(folder / f"clip_{i % 2:03d}.txt", folder / f"clip_{i:03d}.txt")


def _render_clips(folder: Path, *, n: int, num_frames: int, size: tuple[int, int], caption: str) -> None:
    """The synthetic clips, through PyAV (H.264) where it is installed, else OpenCV (MPEG-4 part 2): a GPU
    image may have one and not the other, and decord reads both."""
    from wanlora.engine.data import synthetic

    try:
        import av  # noqa: F401
    except ImportError:
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            params = synthetic.clip_params(i, size, 0)
            w = cv2.VideoWriter(str(folder / f"clip_{i:03d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 16.0, size)
            for k in range(num_frames):
                w.write(cv2.cvtColor(synthetic.render_frame(k, size, params), cv2.COLOR_RGB2BGR))
            w.release()
            (folder / f"clip_{i:03d}.txt").write_text(caption + "\n", encoding="utf-8")
        return
    synthetic.write_clips(folder, n=n, num_frames=num_frames, size=size, fps=16.0, caption=caption)


def main(out: Path) -> int:
    out = Path(out).resolve()
    square, wide, long = out / "clips_square", out / "clips_480p", out / "clips_square_81"
    if not any(square.glob("*.mp4")):
        _write_clips(square, n=20, num_frames=48, size=(768, 768), caption="a red square moving right")
    if not any(wide.glob("*.mp4")):
        _write_clips(wide, n=4, num_frames=96, size=(848, 480), caption="a red square moving right")
    if not any(long.glob("*.mp4")):
        _write_clips(long, n=20, num_frames=96, size=(768, 768), caption="a red square moving right")
    from PIL import Image

    first = out / "first_frame.png"
    Image.new("RGB", (768, 768), (40, 90, 160)).save(first)
    jobs = {
        "guide": _job("guide_141", square, resolutions=[512, 768, 1024], frames=41),
        "guide_80": _job("guide_80", square, tier=80, resolutions=[512, 768, 1024], frames=41),
        "guide_24": _job("guide_24", square, tier=24, resolutions=[512], frames=41),
        "s41x512": _job("s41x512", square, resolutions=[512], frames=41, both=False),
        "s41x480": _job("s41x480", wide, resolutions=[640], frames=41, both=False, preview=first),
        "s81x480": _job("s81x480", wide, resolutions=[640], frames=81, both=False),
        "s41x512_fp8": _job("s41x512_fp8", square, resolutions=[512], frames=41, both=False, fp8=True),
        "s41x480_fp8": _job("s41x480_fp8", wide, resolutions=[640], frames=41, both=False, fp8=True),
        "s81x480_fp8": _job("s81x480_fp8", wide, resolutions=[640], frames=81, both=False, fp8=True),
        "guide_fp8": _job("guide_141_fp8", square, resolutions=[512, 768, 1024], frames=41, fp8=True),
        "guide81": _job("guide81_141", long, resolutions=[512, 768, 1024], frames=81),
        "guide81_fp8": _job("guide81_141_fp8", long, resolutions=[512, 768, 1024], frames=81, fp8=True),
        "s41x512_fp8_b2": _job("s41x512_fp8_b2", square, resolutions=[512], frames=41, both=False, fp8=True, batch=2),
        "s81x1024_fp8": _job("s81x1024_fp8", long, resolutions=[1024], frames=81, both=False, fp8=True),
        "s41x1024_fp8": _job("s41x1024_fp8", square, resolutions=[1024], frames=41, both=False, fp8=True),
        "s41x512_fp8_lorabf16": _job("s41x512_fp8_lorabf16", square, resolutions=[512], frames=41, both=False,
                                     fp8=True, lora="bf16"),
        "s41x1024_fp8_lorabf16": _job("s41x1024_fp8_lorabf16", square, resolutions=[1024], frames=41, both=False,
                                      fp8=True, lora="bf16"),
        "s81x1024_fp8_2x": _job("s81x1024_fp8_2x", long, resolutions=[1024], frames=81, fp8=True),
    }
    for name, text in jobs.items():
        (out / f"{name}.toml").write_text(text)
        print(out / f"{name}.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "trial_jobs")))
