"""Aspect-ratio buckets: which (width, height) a clip is trained at, and how to get there (pure).

For a resolution ``res`` the buckets are every (w, h) with both sides multiples of 16 (VAE /8 × patch 2),
area ≈ res² and aspect ratio within 1:MAX_ASPECT..MAX_ASPECT:1.  A clip goes to the bucket whose aspect
ratio is nearest its own (in log space, so 2:1 and 1:2 are equally far from 1:1); it is then resized so
the bucket is covered and centre-cropped — never stretched, at most a sliver cut.  Clips sharing a bucket
share a tensor shape, which is what lets them be batched together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

MULTIPLE = 16
MAX_ASPECT = 2.5  # wider clips (21:9 = 2.33 fits) are cropped to 2.5:1
AREA_TOLERANCE = 0.1  # bucket area within ±10 % of res²


@lru_cache(maxsize=64)
def bucket_sizes(res: int, multiple: int = MULTIPLE, max_aspect: float = MAX_ASPECT) -> tuple[tuple[int, int], ...]:
    """All (width, height) buckets for ``res``, sorted by aspect ratio (narrowest first)."""
    if res < multiple or res % multiple:
        raise ValueError(f"resolution {res} must be a positive multiple of {multiple}")
    target = res * res
    out: set[tuple[int, int]] = set()
    w_min = max(multiple, math.floor(res / math.sqrt(max_aspect) / multiple) * multiple)
    w_max = math.ceil(res * math.sqrt(max_aspect) / multiple) * multiple
    for w in range(w_min, w_max + 1, multiple):
        h = max(multiple, round(target / w / multiple) * multiple)
        aspect = w / h
        if not (1 / max_aspect - 1e-9 <= aspect <= max_aspect + 1e-9):
            continue
        if abs(w * h - target) <= AREA_TOLERANCE * target:
            out.add((w, h))
    return tuple(sorted(out, key=lambda wh: (wh[0] / wh[1], wh[0])))


def bucket_for(width: int, height: int, res: int) -> tuple[int, int]:
    """The (width, height) bucket of ``res`` with the aspect ratio nearest ``width:height``.

    Ties (equally near) go to the bucket whose area is nearest res², then the wider one.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad source size {width}x{height}")
    a = math.log(width / height)
    target = res * res
    return min(
        bucket_sizes(res),
        key=lambda wh: (round(abs(math.log(wh[0] / wh[1]) - a), 9), abs(wh[0] * wh[1] - target), -wh[0]),
    )


@dataclass(frozen=True)
class CropPlan:
    """Resize the source to (resize_w, resize_h), then take (width, height) at (left, top)."""

    resize_w: int
    resize_h: int
    left: int
    top: int
    width: int
    height: int


def crop_plan(src_w: int, src_h: int, dst_w: int, dst_h: int) -> CropPlan:
    """Scale to cover (dst_w, dst_h) keeping the aspect ratio, then centre-crop the overflow."""
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"bad sizes {src_w}x{src_h} -> {dst_w}x{dst_h}")
    scale = max(dst_w / src_w, dst_h / src_h)
    rw = max(dst_w, round(src_w * scale))
    rh = max(dst_h, round(src_h * scale))
    return CropPlan(rw, rh, (rw - dst_w) // 2, (rh - dst_h) // 2, dst_w, dst_h)
