"""Every recipe on every VRAM tier, written as a user writes it, through ``wanlora trial`` (issue #25).

    python3 bench/tier_matrix.py OUT [--cells ...] [--lanes N] [--gpus 0,1] [--deadline-s S] [--stop-at-s S] [--resume]
    python3 bench/tier_table.py OUT          # the table (fits, peak reserved %, s/step, hours, estimate error)

Each cell's job is what the README and the wizard write: ``preset`` + ``vram_tier`` + a clip folder (style and
character add the trigger word their recipe requires; character also turns on the guide's 768² previews with
one prompt).  Nothing else is set: caching, quantisation, placement, attention and the checkpoint plan are the
defaults that recipe and tier resolve to.  Each cell runs ``wanlora trial JOB --json --vram-gib TIER`` in its
own process (``--vram-gib`` makes ``vram_tier`` act on that card), so the GPU acts as the tier's card.

A cell is ``TIER:RECIPE:ASPECT[:MODE]``: ASPECT ``sq`` (1024² clips) or ``wide`` (1280×720); MODE ``fit``
(the fewest steps that show every bucket of both experts, the switch and the preview fit: 1 timed step),
``time`` (2 timed steps), ``guide`` (the guide's run as the README writes it: motion, ``vram_tier =
"auto"``, 512/768/1024, 41 frames, 3000 steps, 20 clips; TIER is the card it acts as: 141 = the real H200,
no cap).  The cell ``eager`` is plain diffusers + peft (bench/step.py) at the square 41-frame shapes.

Lean: before anything runs, every cell's job is resolved on the CPU (the same resolver the trainer uses) and
reduced to what decides its memory — quantisation, placement, caching, rank, batch, DOP, frames, the aspect of
its clips and its buckets, and whether it renders a preview.  A ``fit`` cell whose plan is that of a cell run
earlier, with its buckets a subset and a preview only where that cell has one, is not run again: its row says
which cell showed its fit (style is character without previews on every tier; a tier's square motion cell is
inside the guide's run).  Every cell renders its preview with 4 denoising steps (``--preview-steps``: the
same memory, the time scaled to the job's steps; a full 25-step 768² preview took ~170 s of the 24 GB
character cell's 272 s).

Timed cells (``time``, ``guide``) and the eager baseline start first, in the order given, each alone on a GPU:
their s/step is what the estimate is checked against.  The ``fit`` cells then run side by side (``--lanes``,
default 4 per GPU): a cell starts while every running cell's cap plus a CUDA context each stays within the
card, so each process's planner sees what it would alone (it plans from min(its cap, the device's free
memory)), and their set-up and compile overlap.  Their s/step is shared-GPU time; their rows name the cells
they ran beside.  On a machine with several GPUs every card takes cells at once (``CUDA_VISIBLE_DEVICES``;
``--gpus`` picks some): four H200s run the matrix in about a quarter of the time one does.
No cell starts once ``--deadline-s`` has passed, so a call to the GPU machine returns inside its limit; each
cell's JSON and log are written as it finishes.  ``--resume`` skips the cells ``OUT/cells.jsonl`` already has,
so one run can span several calls on the same machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = ("motion", "style", "character")
TIERS = (12, 24, 48, 80, 141)
TRIGGER = "wnlr"
CAPTIONS = {"motion": "orbit 360 around the subject", "style": "[trigger], grainy 16mm film look, warm tint",
            "character": "[trigger], young woman, casual clothing"}
DEFAULT_CELLS = (
    # what users care most about, timed in full (the guide on the real card first, the 24 GB baseline card next)
    "141:motion:sq:guide", "24:motion:sq:time", "eager", "24:character:wide:time", "80:motion:sq:guide",
    # every other cell's fit
    # character before style: style is character without previews, so character's run shows style's fit
    *(f"{t}:{r}:{a}:fit" for t in TIERS for r in ("motion", "character", "style") for a in ("sq", "wide")
      if (t, r, a) not in ((24, "motion", "sq"), (24, "character", "wide"))),
)
EAGER_SHAPES = "41x512x512,41x768x768,41x1024x1024"


def write_clips(out: Path) -> dict[str, Path]:
    """Per aspect and recipe a folder of 20 square (1024²) or 12 wide (1280×720) clips, 48 frames at 16 fps,
    captioned in the recipe's style.  Two distinct synthetic H.264 clips are rendered per aspect and copied
    under the other names: the trial caches and trains on ``--clips 2`` and projects caching to every clip,
    so only the count and the codec matter, and rendering 96 large clips would eat the GPU lease."""
    import shutil

    from PIL import Image

    from bench.trial_jobs import _render_clips

    folders = {}
    for aspect, size, n in (("sq", (1024, 1024), 20), ("wide", (1280, 720), 12)):
        seed = out / "clips" / f"_seed_{aspect}"
        if not (seed / "clip_001.mp4").exists():
            _render_clips(seed, n=2, num_frames=48, size=size, caption="")
        for recipe in RECIPES:
            f = out / "clips" / f"{aspect}_{recipe}"
            f.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                clip = f / f"clip_{i:03d}.mp4"
                if not clip.exists():
                    shutil.copyfile(seed / f"clip_{i % 2:03d}.mp4", clip)
                (f / f"clip_{i:03d}.txt").write_text(CAPTIONS[recipe] + "\n", encoding="utf-8")
            folders[f"{aspect}_{recipe}"] = f
    Image.new("RGB", (768, 768), (40, 90, 160)).save(out / "clips" / "ctrl.png")
    return folders


def cell_job(tier: int, recipe: str, aspect: str, mode: str, folder: Path, ctrl: Path) -> str:
    """The job file a user writes for this cell: preset + tier + folder (+ what the recipe requires)."""
    name = f"{recipe}_{tier}_{aspect}" + ("_guide" if mode == "guide" else "")
    lines = ["[job]", f'name = "{name}"', f'preset = "{recipe}"',
             'vram_tier = "auto"' if mode == "guide" else f"vram_tier = {tier}"]
    if recipe in ("style", "character"):
        lines.append(f'trigger_word = "{TRIGGER}"')
    lines += ["", "[model]", 'name_or_path = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"', ""]
    if mode == "guide":
        lines += ["[training]", "steps = 3000", ""]
    if recipe == "character":  # the guide's character setting: 768² previews (the schema's default size)
        lines += ["[sample]", "enabled = true", "", "[[sample.prompts]]",
                  'prompt = "[trigger], young woman, casual clothing, walking toward the camera"', f'ctrl_img = "{ctrl}"', ""]
    lines += ["[[datasets]]", f'folder = "{folder}"']
    if mode == "guide":
        lines.append("resolutions = [512, 768, 1024]")
    return "\n".join(lines) + "\n"


def parse_cell(cell: str) -> tuple[int, str, str, str]:
    parts = cell.split(":")
    tier, recipe, aspect = int(parts[0]), parts[1], parts[2]
    mode = parts[3] if len(parts) > 3 else "fit"
    if tier not in TIERS or recipe not in RECIPES or aspect not in ("sq", "wide") or mode not in ("fit", "time", "guide"):
        raise SystemExit(f"bad cell {cell!r}: TIER:RECIPE:ASPECT[:MODE], e.g. 24:motion:sq:time")
    return tier, recipe, aspect, mode


def write_job(cell: str, out: Path, folders: dict[str, Path]) -> Path:
    """The cell's job file under ``OUT/jobs/`` (bench/tier_table.py reads it back for the estimate)."""
    tier, recipe, aspect, mode = parse_cell(cell)
    job = out / "jobs" / f"{cell.replace(':', '_')}.toml"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text(cell_job(tier, recipe, aspect, mode, folders[f"{aspect}_{recipe}"], out / "clips" / "ctrl.png"))
    return job


# Keys that do not change what a step or a preview holds in memory (learning rate, schedule, captions, names).
NOT_MEMORY = ("job.name", "job.preset", "job.trigger_word", "job.vram_tier", "training.learning_rate",
              "training.steps", "training.timestep", "training.dop.preservation_class", "training.dop.multiplier",
              "training.weight_decay", "training.lr", "datasets[", "sample.", "advanced.differential_guidance_scale", "save.", "multistage.switch_every",
              "logging.", "model.name_or_path")


def memory_key(cell: str, job_path: Path) -> tuple[tuple, frozenset, bool]:
    """(what decides the cell's memory apart from buckets and previews — the card's size included —, its
    buckets, whether it previews)."""
    from wanlora.engine.config.presets import flatten, resolve_file

    tier, _recipe, aspect, _mode = parse_cell(cell)
    job = resolve_file(job_path, detected_vram_gb=tier).job
    flat = flatten(job.model_dump(mode="json"))
    same = tuple(sorted((k, repr(v)) for k, v in flat.items() if not k.startswith(NOT_MEMORY)))
    ds = job.datasets[0]
    shape = (("card_gib", tier), ("frames", ds.num_frames), ("aspect", aspect))
    preview = bool(job.sample.enabled and job.sample.prompts)
    return same + shape, frozenset(ds.resolutions), preview


def covering(cell: str, key: tuple[tuple, frozenset, bool], ran: dict[str, tuple[tuple, frozenset, bool]]) -> str | None:
    """The earlier cell whose run shows this ``fit`` cell's fit, if any."""
    if parse_cell(cell)[3] != "fit":
        return None
    for other, k in ran.items():
        if k[0] == key[0] and key[1] <= k[1] and (k[2] or not key[2]):
            return other
    return None


def cell_cmd(cell: str, out: Path, folders: dict[str, Path]) -> list[str]:
    """The command a cell runs: ``wanlora trial`` on its job, or bench/step.py's eager baseline."""
    if cell == "eager":
        return [sys.executable, str(ROOT / "bench" / "step.py"), "--shapes", EAGER_SHAPES, "--variants", "eager",
                "--steps", "2", "--warmup", "1", "--out", str(out / "step_eager.jsonl")]
    tier, _recipe, _aspect, mode = parse_cell(cell)
    steps = {"fit": 1, "time": 2, "guide": 1}[mode]  # timed steps after the one warm-up (steps vary < 1 %)
    cmd = ["wanlora", "trial", str(write_job(cell, out, folders)), "--json", "--steps", str(steps), "--clips", "2"]
    cmd += ["--preview-steps", "4"]  # the preview's memory in 4 steps, its time scaled to the job's steps
    if not (mode == "guide" and tier == 141):
        cmd += ["--vram-gib", str(tier)]
    return cmd


def _record(out: Path, row: dict) -> None:
    with open(out / "cells.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


# NVLink multicast stays off in every child (a program using it can take a shared host's GPUs out of service).
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass
class Gpu:
    """One card of the machine and the cells running on it now."""

    index: int
    gib: float
    running: list[_Running] = field(default_factory=list)


class _Running:
    """A cell's process on one GPU (``CUDA_VISIBLE_DEVICES``), its JSON and log going to ``OUT/cell_*``."""

    def __init__(self, cell: str, out: Path, folders: dict[str, Path], gpu: Gpu, alone: bool) -> None:
        self.cell, self.out, self.gpu, self.alone, self.t0 = cell, out, gpu, alone, time.time()
        tag = cell.replace(":", "_")
        self.cmd = cell_cmd(cell, out, folders)
        if cell == "eager":
            self.fo = self.fe = open(out / "step_eager.log", "w")
        else:
            self.fo, self.fe = open(out / f"cell_{tag}.json", "w"), open(out / f"cell_{tag}.log", "w")
        # nvidia-smi's index is the PCI order; CUDA's own default order may differ on mixed machines
        env = {**os.environ, **NVLS_OFF, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu.index)}
        self.proc = subprocess.Popen(self.cmd, stdout=self.fo, stderr=self.fe, env=env)
        self.alongside: set[str] = set()  # cells that shared its GPU at some point
        for r in gpu.running:
            r.alongside.add(cell)
            self.alongside.add(r.cell)
        gpu.running.append(self)

    def finish(self, rc: int | str) -> dict:
        self.fo.close()
        self.fe.close()
        self.gpu.running.remove(self)
        row = {"cell": self.cell, "rc": rc, "wall_s": round(time.time() - self.t0, 1), "gpu": self.gpu.index,
               "cmd": " ".join(self.cmd[1:])}
        if self.alongside:
            row["shared_gpu_with"] = sorted(self.alongside)
        _record(self.out, row)
        return row


# A process's own CUDA context, cuBLAS/cuDNN workspaces and loaded kernels, outside any --vram-gib cap.
CONTEXT_GIB = 1.5


def lane_gib(cell: str, card_gib: float) -> float:
    """What a fit cell may hold on a shared card: its tier's size (the whole card for a tier this large)."""
    return min(float(parse_cell(cell)[0]), card_gib)


def fits_beside(cell: str, running: list[str], card_gib: float) -> bool:
    """Whether ``cell`` may start while ``running`` hold the card: every cap, plus a context each, within it.

    Each process's planner reads min(its cap, what the device has free); while the caps add up to the card,
    the device's free memory never falls below a process's own cap, so each plans as it would alone."""
    held = sum(lane_gib(c, card_gib) + CONTEXT_GIB for c in running)
    return not running or held + lane_gib(cell, card_gib) + CONTEXT_GIB <= card_gib


@functools.cache
def host_gib(cell: str) -> float:
    """The system RAM a cell's process may hold: its tier's ``min_ram_gb`` (pinned expert parking, layer
    offloading), else 16 GiB (the process itself: decoded clips, the model's host-side pieces)."""
    from wanlora.engine.config.presets import load_tiers

    if cell == "eager":
        return 16.0
    return float(load_tiers().get(parse_cell(cell)[0], {}).get("min_ram_gb", 16))


def host_ram_gib() -> float:
    """This machine's memory (``MemTotal``), in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _place(cell: str, gpus: list[Gpu], alone: bool, lanes: int, ram_gib: float = float("inf")) -> Gpu | None:
    """The GPU ``cell`` may start on now: an idle one for a cell that runs alone; for a fit cell, the first whose
    running cells are fit cells with room beside them (``lanes`` at most).  Either way the running cells' host
    RAM and this one's stay within 90 % of the machine's (24 GB cells pin both experts in host memory)."""
    held = sum(host_gib(r.cell) for g in gpus for r in g.running)
    if held and held + host_gib(cell) > 0.9 * ram_gib:
        return None
    for g in gpus:
        if alone and not g.running:
            return g
        if (not alone and len(g.running) < lanes and not any(r.alone for r in g.running)
                and fits_beside(cell, [r.cell for r in g.running], g.gib)):
            return g
    return None


def run_cells(alone: list[str], fits: list[str], out: Path, folders: dict[str, Path], gpus: list[Gpu],
              start_by: float, stop_at: float, lanes: int, ram_gib: float = float("inf")) -> dict[str, dict]:
    """Every cell on the machine's GPUs; returns their rows (also appended to ``OUT/cells.jsonl``).

    Cells that run ``alone`` (timed cells and eager: their s/step is what the estimate is checked against)
    start first, in order, each on a GPU of its own.  Fit cells then start side by side (a fit needs no clean
    timing), at most ``lanes`` per GPU with their caps within the card, largest first so the small ones fill
    the room beside them.  No cell starts after ``start_by``; one still running at ``stop_at`` is killed."""
    card = max((g.gib for g in gpus), default=0.0)
    queue = [(c, True) for c in alone] + [(c, False) for c in sorted(fits, key=lambda c: -lane_gib(c, card))]
    rows: dict[str, dict] = {}
    while queue or any(g.running for g in gpus):
        for r in [r for g in gpus for r in g.running]:
            rc = r.proc.poll()
            if rc is None and time.time() > stop_at:
                r.proc.kill()
                r.proc.wait()
                rc = "killed: time limit"
            if rc is not None:
                rows[r.cell] = r.finish(rc)
        if time.time() > min(start_by, stop_at - 30):
            for c, _ in queue:
                print(json.dumps({"cell": c, "skipped": "deadline"}), flush=True)
            queue = []
        for c, is_alone in list(queue):
            g = _place(c, gpus, is_alone, lanes, ram_gib)
            if g is None and is_alone:
                break  # timed cells keep their order, and fit cells wait until each of them has its GPU
            if g is None:
                continue
            queue.remove((c, is_alone))
            _Running(c, out, folders, g, is_alone)
        time.sleep(1)
    return rows


def machine_gpus(only: str | None = None) -> list[Gpu]:
    """The GPUs nvidia-smi lists (``only``: a comma-separated subset of their indices), with their memory."""
    r = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, check=True)
    gpus = [Gpu(int(i), int(m) / 1024) for i, m in (line.split(",") for line in r.stdout.strip().splitlines())]
    keep = {int(x) for x in only.split(",")} if only else None
    return [g for g in gpus if keep is None or g.index in keep]


def plan_cells(cells: list[str], out: Path, folders: dict[str, Path], done: dict[str, dict]) -> tuple[list[str], list[str], dict[str, str]]:
    """(cells to run alone in order, fit cells to run side by side, fit cell → the cell whose run shows it).

    Covering assumes the covering cell succeeds; a covered cell whose coverer fails is run after all."""
    alone, fits, covered, keys = [], [], {}, {}
    for c in cells:
        if c == "eager":
            if c not in done:
                alone.append(c)
            continue
        key = memory_key(c, write_job(c, out, folders))
        by = covering(c, key, keys)
        if by and c not in done:
            covered[c] = by
            continue
        keys[c] = key
        if c not in done:
            (fits if parse_cell(c)[3] == "fit" else alone).append(c)
    return alone, fits, covered


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--cells", default=",".join(DEFAULT_CELLS), help="comma-separated TIER:RECIPE:ASPECT[:MODE]")
    ap.add_argument("--deadline-s", type=float, default=1e9, help="start no cell after this many seconds")
    ap.add_argument("--stop-at-s", type=float, default=1e9, help="kill a cell still running this many seconds in")
    ap.add_argument("--lanes", type=int, default=4, help="fit cells at most side by side on one GPU (1: one at a time)")
    ap.add_argument("--gpus", default=None, help="comma-separated GPU indices to use (default: every GPU)")
    ap.add_argument("--jobs-only", action="store_true", help="write the clips and job files, run nothing")
    ap.add_argument("--resume", action="store_true", help="skip the cells OUT/cells.jsonl already has")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    folders = write_clips(out)
    cells = [c for c in a.cells.split(",") if c]
    if a.jobs_only:
        for c in (c for c in cells if c != "eager"):
            write_job(c, out, folders)
        return 0
    subprocess.call(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                    stdout=open(out / "gpu.txt", "w"), stderr=subprocess.STDOUT)
    done: dict[str, dict] = {}  # cell -> its row from an earlier call (--resume)
    if a.resume and (out / "cells.jsonl").exists():
        done = {(r := json.loads(line))["cell"]: r for line in (out / "cells.jsonl").read_text().splitlines() if line.strip()}
    alone, fits, covered = plan_cells(cells, out, folders, done)
    gpus, start_by, stop_at = machine_gpus(a.gpus), t0 + a.deadline_s, t0 + a.stop_at_s
    ram = host_ram_gib()
    rows = {**done, **run_cells(alone, fits, out, folders, gpus, start_by, stop_at, a.lanes, ram)}
    ran = [c for c, by in covered.items() if rows.get(by, {}).get("rc") == 0]
    for c in ran:
        _record(out, {"cell": c, "covered_by": covered[c]})
    orphans = [c for c, by in covered.items() if c not in ran and by in rows]  # their covering cell failed
    run_cells([], orphans, out, folders, gpus, start_by, stop_at, a.lanes, ram)
    return 0


if __name__ == "__main__":
    sys.exit(main())
