"""Every recipe on every VRAM tier, written as a user writes it, through ``wanlora trial`` (issue #25).

    python3 bench/tier_matrix.py OUT [--cells ...] [--lanes N] [--deadline-s S] [--stop-at-s S] [--resume]
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

Timed cells (``time``, ``guide``) and the eager baseline run first, alone on the GPU, in the order given: their
s/step is what the estimate is checked against.  The ``fit`` cells then run side by side (``--lanes``, default
4): a cell starts while every running cell's cap plus a CUDA context each stays within the card, so each
process's planner sees what it would alone (it plans from min(its cap, the device's free memory)), and their
set-up and compile overlap.  Their s/step is shared-GPU time; their rows name the cells they ran beside.
No cell starts once ``--deadline-s`` has passed, so a call to the GPU machine returns inside its limit; each
cell's JSON and log are written as it finishes.  ``--resume`` skips the cells ``OUT/cells.jsonl`` already has,
so one run can span several calls on the same machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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


def run_eager(out: Path, timeout: float) -> None:
    """Plain diffusers + peft (bench/step.py's ``eager``) at the square shapes, each in a fresh process."""
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "step.py"), "--shapes", EAGER_SHAPES, "--variants",
                        "eager", "--steps", "2", "--warmup", "1", "--out", str(out / "step_eager.jsonl")],
                       stdout=open(out / "step_eager.log", "w"), stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(json.dumps({"cell": "eager", "killed": "time limit"}), flush=True)


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


def cell_cmd(cell: str, job: Path) -> list[str]:
    tier, _recipe, _aspect, mode = parse_cell(cell)
    steps = {"fit": 1, "time": 2, "guide": 1}[mode]  # timed steps after the one warm-up (steps vary < 1 %)
    cmd = ["wanlora", "trial", str(job), "--json", "--steps", str(steps), "--clips", "2"]
    cmd += ["--preview-steps", "4"]  # the preview's memory in 4 steps, its time scaled to the job's steps
    if not (mode == "guide" and tier == 141):
        cmd += ["--vram-gib", str(tier)]
    return cmd


def _record(out: Path, row: dict) -> None:
    with open(out / "cells.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


class _Running:
    """A cell's ``wanlora trial`` process, started now, its JSON and log going to ``OUT/cell_*.{json,log}``."""

    def __init__(self, cell: str, out: Path, folders: dict[str, Path]) -> None:
        self.cell, self.out, self.t0 = cell, out, time.time()
        tag = cell.replace(":", "_")
        self.cmd = cell_cmd(cell, write_job(cell, out, folders))
        self.fo, self.fe = open(out / f"cell_{tag}.json", "w"), open(out / f"cell_{tag}.log", "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.fo, stderr=self.fe)
        self.alongside: set[str] = set()  # cells that shared the GPU with this one at some point

    def finish(self, rc: int | str) -> dict:
        self.fo.close()
        self.fe.close()
        row = {"cell": self.cell, "rc": rc, "wall_s": round(time.time() - self.t0, 1), "cmd": " ".join(self.cmd[1:])}
        if self.alongside:
            row["shared_gpu_with"] = sorted(self.alongside)
        _record(self.out, row)
        return row


def run_cell(cell: str, out: Path, folders: dict[str, Path], timeout: float = 1e9) -> dict:
    """One cell alone on the GPU (timed cells: their s/step is what the estimate is checked against)."""
    r = _Running(cell, out, folders)
    try:
        rc: int | str = r.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        r.proc.kill()
        r.proc.wait()
        rc = "killed: time limit"
    return r.finish(rc)


# A process's own CUDA context, cuBLAS/cuDNN workspaces and loaded kernels, outside any --vram-gib cap.
CONTEXT_GIB = 1.5


def lane_gib(cell: str, card_gib: float) -> float:
    """What a fit cell may hold on the shared card: its tier's size (the whole card for a tier this large)."""
    return min(float(parse_cell(cell)[0]), card_gib)


def fits_beside(cell: str, running: list[str], card_gib: float) -> bool:
    """Whether ``cell`` may start while ``running`` hold the card: every cap, plus a context each, within it.

    Each process's planner reads min(its cap, what the device has free); while the caps add up to the card,
    the device's free memory never falls below a process's own cap, so each plans as it would alone."""
    held = sum(lane_gib(c, card_gib) + CONTEXT_GIB for c in running)
    return not running or held + lane_gib(cell, card_gib) + CONTEXT_GIB <= card_gib


def run_fit_cells(cells: list[str], out: Path, folders: dict[str, Path], card_gib: float, start_by: float,
                  stop_at: float, lanes: int) -> dict[str, dict]:
    """Fit cells side by side on the one GPU (at most ``lanes`` at once, caps within the card): a fit needs
    no clean timing, so their set-up, compile and steps overlap.  Their rows say which cells shared the GPU;
    bench/tier_table.py shows their s/step as shared and checks the estimate only on cells that ran alone."""
    # largest caps first, the small ones fill the room beside them (first-fit decreasing; else in the order given)
    pending, running, rows = sorted(cells, key=lambda c: -lane_gib(c, card_gib)), [], {}
    while pending or running:
        for r in list(running):
            rc = r.proc.poll()
            if rc is None and time.time() > stop_at:
                r.proc.kill()
                rc = "killed: time limit"
                r.proc.wait()
            if rc is not None:
                rows[r.cell] = r.finish(rc)
                running.remove(r)
        for c in list(pending):
            if len(running) >= lanes or time.time() > min(start_by, stop_at - 30):
                break
            if fits_beside(c, [r.cell for r in running], card_gib):
                pending.remove(c)
                new = _Running(c, out, folders)
                for r in running:
                    r.alongside.add(c)
                    new.alongside.add(r.cell)
                running.append(new)
        if time.time() > min(start_by, stop_at - 30) and pending and not running:
            for c in pending:
                print(json.dumps({"cell": c, "skipped": "deadline"}), flush=True)
            break
        time.sleep(2)
    return rows


def card_gib() -> float:
    """The GPU's memory (nvidia-smi's total), in GiB."""
    r = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, check=True)
    return int(r.stdout.split()[0]) / 1024


def plan_cells(cells: list[str], out: Path, folders: dict[str, Path], done: dict[str, dict]) -> tuple[list[str], list[str], dict[str, str]]:
    """(cells to run alone in order, fit cells to run side by side, fit cell → the cell whose run shows it).

    Covering assumes the covering cell succeeds; a covered cell whose coverer fails is run after all."""
    alone, fits, covered, keys = [], [], {}, {}
    for c in cells:
        if c == "eager":
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
    ap.add_argument("--lanes", type=int, default=4, help="fit cells at most side by side on the GPU (1: one at a time)")
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
    subprocess.call(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                    stdout=open(out / "gpu.txt", "w"), stderr=subprocess.STDOUT)
    done: dict[str, dict] = {}  # cell -> its row from an earlier call (--resume)
    if a.resume and (out / "cells.jsonl").exists():
        done = {(r := json.loads(line))["cell"]: r for line in (out / "cells.jsonl").read_text().splitlines() if line.strip()}
    alone, fits, covered = plan_cells(cells, out, folders, done)
    stop_at = t0 + a.stop_at_s
    rows: dict[str, dict] = dict(done)
    for c in alone:  # timed cells, the guide and eager: alone on the GPU, in the order given
        left = stop_at - time.time()
        if time.time() - t0 > a.deadline_s or left < 30:
            print(json.dumps({"cell": c, "skipped": "deadline"}), flush=True)
        elif c == "eager":
            run_eager(out, left)
        else:
            rows[c] = run_cell(c, out, folders, left)
    card, start_by = card_gib(), t0 + a.deadline_s
    rows.update(run_fit_cells(fits, out, folders, card, start_by, stop_at, a.lanes))
    ran = [c for c, by in covered.items() if rows.get(by, {}).get("rc") == 0]
    for c in ran:
        _record(out, {"cell": c, "covered_by": covered[c]})
    orphans = [c for c, by in covered.items() if c not in ran and by in rows]  # their covering cell failed
    run_fit_cells(orphans, out, folders, card, start_by, stop_at, a.lanes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
