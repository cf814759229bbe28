"""``wanlora caption`` on a CUDA GPU (run on the device machine: ``pytest -m gpu tests/engine/caption``).

- the builtin inputs (used where torchvision is missing, e.g. CPU CI) equal what transformers' own Qwen2.5-VL
  processor makes of the same frames and metadata (input ids, grid, temporal spacing, pixels);
- the full-size Qwen2.5-VL-7B architecture (random bf16 weights, no download) captions real clips through
  the CLI's loop: seconds per clip and peak VRAM within bounds a 24 GB card could hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.caption.conftest import uncaptioned

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.fail("gpu-marked test without CUDA: run it on the device machine (pytest -m gpu)")


def test_builtin_inputs_equal_the_processors(tiny_vl: Path, tmp_path: Path) -> None:
    import torch
    from wanlora.engine.caption import vlm
    from wanlora.engine.caption.prompts import instruction
    from wanlora.engine.caption.sampling import load_frames
    from wanlora.engine.data.synthetic import write_clips

    if not vlm.torchvision_available():
        pytest.fail("this host has no torchvision: the processor path cannot be compared")
    clip = write_clips(tmp_path, n=1, num_frames=75, size=(200, 120), fps=30.0, captions=False)[0]
    frames = load_frames(clip)
    prompt = instruction("motion")
    proc = vlm.load_captioner(str(tiny_vl), device="cuda", backend="processor")
    own = vlm.load_captioner(str(tiny_vl), device="cuda", backend="builtin")
    a, b = proc.inputs(frames, prompt), own.inputs(frames, prompt)
    assert torch.equal(a["input_ids"].cpu(), b["input_ids"].cpu())
    assert torch.equal(a["video_grid_thw"].cpu(), b["video_grid_thw"].cpu())
    assert torch.allclose(torch.as_tensor(a["second_per_grid_ts"]).float().cpu(),
                          b["second_per_grid_ts"].float().cpu(), atol=1e-6)
    # frames come pre-sized to 28-px multiples, so the processor's resize is the identity; the tolerance covers
    # its float path (uint8 → float rescale then normalise in one fused op vs two numpy steps)
    assert torch.allclose(a["pixel_values_videos"].float().cpu(), b["pixel_values_videos"].float().cpu(), atol=1e-3)
    assert proc.caption(frames, prompt) == own.caption(frames, prompt)  # greedy: same inputs, same text


def test_full_size_7b_captions_clips_within_time_and_memory(tmp_path: Path) -> None:
    import torch
    from wanlora.engine.caption.run import CaptionOptions, caption_files
    from wanlora.engine.caption.tiny import full_captioner

    folder = uncaptioned(tmp_path / "clips", n=3, num_frames=81)
    torch.cuda.reset_peak_memory_stats()
    cap = full_captioner("cuda", max_new_tokens=80)
    summary = caption_files(cap, sorted(folder.glob("*.mp4")), CaptionOptions(recipe="character", trigger="frung",
                                                                              class_word="person"))
    peak = torch.cuda.max_memory_allocated() / 2**30
    written = summary.of("written")
    assert len(written) == 3 and all(p.with_suffix(".txt").read_text().startswith("frung, person")
                                     for p in folder.glob("*.mp4"))
    warm = [r.seconds for r in written[1:]]
    assert max(warm) < 30, warm  # 80 new tokens + ~100 video tokens on a 7B: a few seconds on an H100/H200
    assert peak < 22, peak  # bf16 7B weights ≈ 15.5 GiB + a short video's activations: fits a 24 GB card
