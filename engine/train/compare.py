"""``wanlora compare JOB``: kept checkpoints side by side — eval losses, previews, a suggested pick.

The guide: the best samples often come from somewhere around 2000–4000 steps, not the last checkpoint;
judge kept checkpoints after training.  This module does that for one job folder:

1. **Rows** — the kept checkpoint pairs in the job's output folder (``<name>_<expert>_<step>.safetensors``
   and the final ``<name>_<expert>.safetensors``), or the ``steps`` asked for.  An expert without a file
   at a row's step (a job that trains one expert, or ``other="latest"``) runs with its base weights or its
   newest file, so every preview runs both experts across the boundary, as inference does.
2. **Eval losses** — from the ``eval`` events the trainer recorded at each save; a file without one (the
   eval set was added later, or ``recompute``) is measured now by :mod:`engine.train.evaluate` on the
   stored eval inputs — the same numbers the trainer would have written.
3. **Previews** — every ``[[sample.prompts]]`` row × checkpoint through the stock pipeline with fixed
   seeds (``sample.accelerator_lora`` → the step-distilled pair on top, its steps/CFG, labelled
   "accelerated").  Each cell is stored under ``compare/cells/<key>.mp4`` where the key covers the files,
   the prompt, image, seed and settings: a second run reuses every cell already rendered.
4. **Outputs** — ``compare/sheet.png`` (rows = checkpoints, columns = prompts, a few frames per cell),
   ``compare/grid.mp4`` (all cells playing), ``compare/index.json`` + ``index.md`` (each checkpoint with
   its eval losses, the cells, the suggested pick per expert with its confidence).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.config import jobdir
from wanlora.engine.config.experts import EXPERTS, HIGH, LOW
from wanlora.engine.config.schema import Job, expert_plan
from wanlora.engine.train import evaluate, pick

COMPARE_DIR = "compare"
Say = Callable[[str], None]


class CompareError(Exception):
    """Nothing to compare, or a step that is not kept; the message says what to do."""


@dataclass
class Checkpoint:
    step: int
    final: bool
    files: dict[str, Path]  # what was written at this step, per expert
    paired: dict[str, Path | None] = field(default_factory=dict)  # what each expert runs with (None = base)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # expert → {loss, bands, file, source}

    @property
    def label(self) -> str:
        return f"final (step {self.step})" if self.final else f"step {self.step}"


# ---------------------------------------------------------------- rows
def trained_of(job: Job) -> list[str]:
    """The experts the job trains (high first)."""
    return job.multistage.trained()


def _file_step(path: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            s = (f.metadata() or {}).get("step")
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a row
        return None
    return int(s) if s and s.isdigit() else None


def find_checkpoints(job: Job, out_dir: Path) -> list[Checkpoint]:
    """Every kept checkpoint in ``out_dir``, oldest first (the final pair last)."""
    name = job.job.name
    pat = re.compile(rf"^{re.escape(name)}_(high_noise|low_noise)(?:_(\d{{6,}}))?\.safetensors$")
    by_step: dict[tuple[int, bool], dict[str, Path]] = {}
    for p in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        m = pat.match(p.name)
        if not m:
            continue
        expert, step = m.group(1), m.group(2)
        final = step is None
        s = _file_step(p) if final else int(step)
        if s is None:
            continue
        by_step.setdefault((s, final), {})[expert] = p
    return [Checkpoint(step=s, final=final, files=files)
            for (s, final), files in sorted(by_step.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def select(ckpts: list[Checkpoint], steps: list[int] | None) -> list[Checkpoint]:
    """The rows for ``steps`` (None = all kept); a step that is not kept is an error naming the kept ones."""
    if not ckpts:
        raise CompareError("no checkpoint files yet; they appear every save.every steps")
    if not steps:
        return ckpts
    out = []
    for s in steps:
        match = [c for c in ckpts if c.step == s]
        if not match:
            kept = ", ".join(str(c.step) for c in ckpts)
            raise CompareError(f"no kept checkpoint at step {s}; kept: {kept} (older ones were pruned by save.max_keep)")
        out.append(match[-1])
    return out


def pair(rows: list[Checkpoint], every: list[Checkpoint], other: str = "base") -> None:
    """Fill ``paired``: an expert's own file at the row's step, else its newest file (``other="latest"``)
    or base weights (None)."""
    if other not in ("base", "latest"):
        raise CompareError(f"--other must be base or latest, not {other!r}")
    newest = {e: next((c.files[e] for c in reversed(every) if e in c.files), None) for e in EXPERTS}
    for r in rows:
        r.paired = {e: r.files.get(e) or (newest[e] if other == "latest" else None) for e in EXPERTS}


# ---------------------------------------------------------------- eval losses
def recorded_evals(job_dir: Path) -> dict[str, dict[str, Any]]:
    """File name → the trainer's eval result for it (the newest event wins: a re-saved file re-measured)."""
    out: dict[str, dict[str, Any]] = {}
    for ev in jobdir.read_events(job_dir):
        if ev.get("type") != "eval":
            continue
        for expert, res in (ev.get("experts") or {}).items():
            if isinstance(res, dict) and res.get("file"):
                out[Path(res["file"]).name] = {**res, "expert": expert, "step": ev.get("step"), "source": "training"}
    return out


def file_id(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"


def cell_key(ck: Checkpoint, spec: Any, *, root: Path, accel: dict[str, Path] | None, lora: dict[str, Any]) -> str:
    """What a preview cell depends on: the files each expert runs with, the prompt/image/seed/settings."""
    img = Path(spec.image)
    d = {"files": {e: (file_id(p) if p else "base") for e, p in ck.paired.items()},
         "spec": {k: str(v) for k, v in asdict(spec).items()},
         "image": file_id(img) if img.is_file() else str(img), "root": str(root), "lora": lora,
         "accel": {e: file_id(p) for e, p in accel.items()} if accel else None}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------- the models
class Models:
    """Base experts with the job's LoRA attached (trained experts only), loaded once for every row."""

    def __init__(self, job: Job, device: torch.device, *, previews: bool) -> None:
        from wanlora.engine.model.load import load_parts
        from wanlora.engine.model.lora import add_lora, lora_state_dict
        from wanlora.engine.model.part_sources import fp8_files_direct, job_files
        from wanlora.engine.model.quant import check_available, quantize_and_place

        self.job, self.device = job, device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.trained = trained_of(job)
        quant = job.quantization.transformer if device.type == "cuda" else "none"
        if quant != "none":
            check_available(quant, device)
        self.low_vram = bool(job.model.low_vram) and device.type == "cuda"
        experts = list(EXPERTS) if previews else self.trained
        files = job_files(job.model)  # single-file parts, as the trainer loads them
        stage_on_cpu = self.low_vram or (quant != "none" and not fp8_files_direct(files, experts, quant, self.low_vram))
        extra = {"files": files, "transformer_quant": quant} if files else {}
        t0 = time.perf_counter()
        self.parts = load_parts(job.model.name_or_path, experts, dtype=self.dtype, device=device,
                                boundary_override=job.model.boundary_ratio, text_encoder=previews,
                                vae_dtype=torch.float32, expert_device="cpu" if stage_on_cpu else None,
                                text_encoder_quant=job.quantization.text_encoder if device.type == "cuda" else "none",
                                **extra)
        self.models = self.parts.experts
        self.base_state: dict[str, dict[str, torch.Tensor]] = {}
        lora_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        for e in self.trained:
            plan = expert_plan(job, e)  # [multistage.<expert>] rank/alpha: the shapes its files were saved with
            add_lora(self.models[e], plan.rank, plan.alpha, job.target.modules, dtype=lora_dtype)
            self.models[e].requires_grad_(False)
            self.base_state[e] = {k: v.detach().clone() for k, v in lora_state_dict(self.models[e]).items()}
            if quant != "none":
                quantize_and_place(self.models[e], quant, device)
        for m in self.models.values():
            m.eval()
        self.load_s = round(time.perf_counter() - t0, 3)

    def place(self, expert: str) -> None:
        """low_vram: only ``expert`` on the GPU."""
        if not self.low_vram:
            return
        for e, m in self.models.items():
            target = self.device if e == expert else torch.device("cpu")
            if next(m.parameters()).device != target:
                m.to(target)
        torch.cuda.empty_cache()

    def set_row(self, ck: Checkpoint) -> None:
        """Each trained expert's adapter holds the row's file (or the no-op initial LoRA = base weights)."""
        from wanlora.engine.model.lora import load_lora_state_dict

        for e in self.trained:
            f = ck.paired.get(e)
            load_lora_state_dict(self.models[e], evaluate.file_state(f) if f else self.base_state[e])


# ---------------------------------------------------------------- the run
@dataclass
class CompareResult:
    out_dir: Path
    rows: list[Checkpoint]
    picks: dict[str, pick.Pick]
    sheet: Path | None
    grid: Path | None
    index: Path
    timing: dict[str, Any]
    rendered: int = 0
    reused: int = 0


def _eval_cache(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / "eval.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def compare_job(job_dir: Path, *, steps: list[int] | None = None, device: torch.device | None = None,
                previews: bool = True, eval_loss: bool = True, recompute: bool = False, other: str = "base",
                frames_per_cell: int = 3, out_dir: Path | None = None, num_frames: int | None = None,
                width: int | None = None, height: int | None = None, say: Say = print) -> CompareResult:
    """Compare the kept checkpoints of ``job_dir`` (see the module docstring); returns what was written."""
    from wanlora.engine.config.io import load_job
    from wanlora.engine.train.loop import output_dir

    t_start = time.perf_counter()
    job_dir = Path(job_dir)
    job = load_job(job_dir / jobdir.JOB_TOML)
    _override_sample(job, num_frames, width, height)
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    out = Path(out_dir) if out_dir else job_dir / COMPARE_DIR
    out.mkdir(parents=True, exist_ok=True)
    every = find_checkpoints(job, output_dir(job, job_dir))
    rows = select(every, steps)
    pair(rows, every, other)
    if previews and not job.sample.prompts:
        raise CompareError("the job has no [[sample.prompts]] (prompt + ctrl_img) to preview; add some to its "
                           "job.toml or run with --no-previews for the eval losses alone")
    timing: dict[str, Any] = {"device": str(device), "rows": len(rows), "eval": [], "previews": []}
    models: Models | None = None

    def get_models() -> Models:
        nonlocal models
        if models is None:
            say(f"loading {job.model.name_or_path} on {device.type} …")
            models = Models(job, device, previews=previews)
            timing["load_s"] = models.load_s
        return models

    # ---- eval losses: recorded by the trainer, else measured now
    recorded = recorded_evals(job_dir) if not recompute else {}
    cache = _eval_cache(out) if not recompute else {}
    if eval_loss and evaluate.wants_eval(job):
        _fill_evals(job, job_dir, rows, recorded, cache, out, get_models, device, timing, say)
    picks = pick.suggest({e: [pick.candidate(r.step, str(r.files[e]), r.evals[e]) for r in rows if e in r.evals]
                          for e in EXPERTS})

    # ---- previews
    cells: list[list[dict[str, Any] | None]] = [[None] * len(job.sample.prompts) for _ in rows]
    rendered = reused = 0
    accel = None
    if previews:
        accel, rendered, reused = _preview_cells(job, rows, cells, out, get_models, timing, say)
    sheet = grid = None
    if previews:
        sheet, grid = _write_sheets(job, rows, cells, picks, out, frames_per_cell, accel is not None, say)
    _finish_timing(timing, t_start, rendered, reused)
    index = _write_index(job, job_dir, rows, cells, picks, out, sheet, grid, accel, timing)
    return CompareResult(out, rows, picks, sheet, grid, index, timing, rendered, reused)


def _override_sample(job: Job, num_frames: int | None, width: int | None, height: int | None) -> None:
    """The command line's preview size replaces the job's [sample] one (only the values given)."""
    if num_frames or width or height:
        job.sample = job.sample.model_copy(update={k: v for k, v in
                                                   (("num_frames", num_frames), ("width", width), ("height", height)) if v})


def _fill_evals(job: Job, job_dir: Path, rows: list[Checkpoint], recorded: dict[str, Any], cache: dict[str, Any],
                out: Path, get_models: Callable[[], Models], device: torch.device, timing: dict[str, Any],
                say: Say) -> None:
    """Each row's eval losses: the trainer's record, else this folder's cache, else measured now (and cached)."""
    es = None
    trained = trained_of(job)
    for r in rows:
        for e, f in r.files.items():
            if e not in trained:
                continue
            fid = file_id(f)
            if f.name in recorded:
                r.evals[e] = recorded[f.name]
            elif fid in cache:
                r.evals[e] = cache[fid]
            else:
                m = get_models()
                if es is None:
                    es = _eval_set(job, job_dir, m, say)
                if es is None:
                    continue
                say(f"eval loss  {r.label}  {e} …")
                res = evaluate.evaluate_files(es, m.models, {e: f}, m.parts.boundary_ratio, device=device,
                                              dtype=m.dtype, place=m.place)
                r.evals[e] = cache[fid] = {**res["experts"][e], "step": r.step, "source": "compare"}
                timing["eval"].append({"step": r.step, "expert": e, "eval_s": res["eval_s"], "items": res["items"]})
                (out / "eval.json").write_text(json.dumps(cache, indent=1))


def _preview_cells(job: Job, rows: list[Checkpoint], cells: list[list[dict[str, Any] | None]], out: Path,
                   get_models: Callable[[], Models], timing: dict[str, Any],
                   say: Say) -> tuple[dict[str, Path] | None, int, int]:
    """Fill ``cells`` (row × prompt): reused where already rendered, else rendered now; (accel, rendered, reused)."""
    from wanlora.engine.train.previews import accelerator_for, preview_specs

    accel = accelerator_for(job.sample)
    specs = preview_specs(job.sample, job.job.trigger_word, accelerated=accel is not None)
    from wanlora.engine.config.schema import expert_plan

    lora = {"modules": job.target.modules,
            **{e: [expert_plan(job, e).rank, expert_plan(job, e).alpha] for e in trained_of(job)}}
    cell_dir = out / "cells"
    cell_dir.mkdir(exist_ok=True)
    reused, todo = _reuse_cells(job, rows, specs, cells, cell_dir, accel, lora, say)
    rendered = 0
    if todo:
        rendered = _render_cells(job, rows, specs, todo, cells, cell_dir, get_models(), accel, timing, say)
    return accel, rendered, reused


def _reuse_cells(job: Job, rows: list[Checkpoint], specs: list[Any], cells: list[list[dict[str, Any] | None]],
                 cell_dir: Path, accel: dict[str, Path] | None, lora: dict[str, Any],
                 say: Say) -> tuple[int, list[tuple[int, int, str]]]:
    """Cells already on disk (same key) are reused; the rest come back as (row, prompt, key) to render."""
    reused = 0
    root = None
    todo: list[tuple[int, int, str]] = []
    for ri, r in enumerate(rows):
        for ci, s in enumerate(specs):
            from wanlora.engine.model.folder import resolve_model_path

            root = root or resolve_model_path(job.model.name_or_path, [])
            key = cell_key(r, s, root=root, accel=accel, lora=lora)
            mp4 = cell_dir / f"{key}.mp4"
            if mp4.is_file() and (cell_dir / f"{key}.png").is_file():
                cells[ri][ci] = {"mp4": str(mp4), "png": str(cell_dir / f"{key}.png"), "reused": True}
                reused += 1
                say(f"[{ri * len(specs) + ci + 1}/{len(rows) * len(specs)}] {r.label} × prompt {ci}: reused")
            else:
                todo.append((ri, ci, key))
    return reused, todo


def _finish_timing(timing: dict[str, Any], t_start: float, rendered: int, reused: int) -> None:
    """The run's totals and means, written into ``timing`` for the index."""
    timing["total_s"] = round(time.perf_counter() - t_start, 3)
    timing["rendered"], timing["reused"] = rendered, reused
    if timing["previews"]:
        timing["preview_s_mean"] = round(sum(p["s"] for p in timing["previews"]) / len(timing["previews"]), 3)
    if timing["eval"]:
        timing["eval_s_mean"] = round(sum(x["eval_s"] for x in timing["eval"]) / len(timing["eval"]), 3)


def _eval_set(job: Job, job_dir: Path, m: Models, say: Say) -> evaluate.EvalSet | None:
    """The stored eval inputs, else encoded now (the VAE / text encoder loaded for it)."""
    from wanlora.engine.data.dataset import DataExhausted
    from wanlora.engine.model.folder import load_text_encoder, load_vae

    es = evaluate.load_inputs(evaluate.inputs_path(job_dir))

    def warn(msg: str, path: str | None = None) -> None:
        say(f"warning: {msg}")

    try:
        data, plan = evaluate.plan_items(job, warn)
        data.close()
    except (DataExhausted, OSError) as e:  # the clips moved: the stored inputs are still what training used
        if es is not None:
            return es
        say(f"warning: eval loss: {e}")
        return None
    if es is not None and es.describe == [p for _e, p in plan]:
        return es
    say("encoding the eval clips …")
    vae = m.parts.vae or load_vae(m.parts.root, torch.float32, m.device)
    tok, te = (m.parts.tokenizer, m.parts.text_encoder) if m.parts.text_encoder is not None else \
        load_text_encoder(m.parts.root, m.dtype, m.device)
    return evaluate.build_eval_set(job, vae=vae, tokenizer=tok, text_encoder=te, job_dir=job_dir, warn=warn)


def _render_cells(job: Job, rows: list[Checkpoint], specs: list[Any], todo: list[tuple[int, int, str]],
                  cells: list[list[dict[str, Any] | None]], cell_dir: Path, m: Models, accel: dict[str, Path] | None,
                  timing: dict[str, Any], say: Say) -> int:
    from wanlora.engine.train.previews import attach_accelerator, build_pipeline, make_scheduler, render

    embed = _embed_prompts(m, specs)  # then the text encoder is freed: more room for both experts
    if accel is not None:
        attach_accelerator(m.models, accel)
    if not m.low_vram:
        for mod in m.models.values():
            mod.to(m.device)
    pipe = build_pipeline(m.parts.root, high=m.models[HIGH], low=m.models[LOW], vae=m.parts.vae,
                          scheduler=make_scheduler(job.sample.sampler, m.parts.root),
                          boundary_ratio=m.parts.boundary_ratio)
    total = len(rows) * len(specs)
    done = 0
    current = None
    for ri, ci, key in todo:
        r, s = rows[ri], specs[ci]
        if current != ri:
            m.set_row(r)
            current = ri
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=cell_dir) as tmp, torch.no_grad():
            mp4 = render(pipe, [s], Path(tmp), r.step, embed=embed, low_vram=m.low_vram)[0]
            png = mp4.with_suffix(".png")
            shutil.move(str(png), cell_dir / f"{key}.png")
            shutil.move(str(mp4), cell_dir / f"{key}.mp4")  # the mp4 last: its presence marks a complete cell
        dt = round(time.perf_counter() - t0, 3)
        (cell_dir / f"{key}.json").write_text(json.dumps({"step": r.step, "final": r.final, "prompt": s.prompt,
                                                          "seed": s.seed, "steps": s.steps, "accelerated": s.accelerated,
                                                          "files": {e: str(p) if p else "base" for e, p in r.paired.items()},
                                                          "render_s": dt}, indent=1))
        cells[ri][ci] = {"mp4": str(cell_dir / f"{key}.mp4"), "png": str(cell_dir / f"{key}.png"), "reused": False}
        done += 1
        timing["previews"].append({"step": r.step, "prompt": ci, "s": dt, "steps": s.steps,
                                   "frames": s.num_frames, "width": s.width, "height": s.height})
        say(f"[{ri * len(specs) + ci + 1}/{total}] {r.label} × prompt {ci}: rendered in {dt:.1f} s"
            + (" (accelerated)" if s.accelerated else ""))
    return done


def _embed_prompts(m: Models, specs: list[Any]) -> Callable[[list[str]], torch.Tensor]:
    """Every prompt and negative embedded once, as the trainer's previews embed them; the encoder is freed."""
    import gc

    from wanlora.engine.model.text import encode_prompts

    table: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for text in dict.fromkeys(t for s in specs for t in (s.prompt, s.negative)):
            table[text] = encode_prompts(m.parts.tokenizer, m.parts.text_encoder, [text], device=m.device,
                                         dtype=m.dtype)
    m.parts.text_encoder = None
    gc.collect()
    if m.device.type == "cuda":
        torch.cuda.empty_cache()
    return lambda prompts: torch.cat([table[p] for p in prompts])


def _row_labels(r: Checkpoint, picks: dict[str, pick.Pick]) -> list[str]:
    lines = [r.label]
    for e in EXPERTS:
        short = "high" if e == HIGH else "low"
        ev = r.evals.get(e)
        star = " *pick" if e in picks and ev and picks[e].file == str(r.files.get(e)) else ""
        if ev:
            lines.append(f"{short} eval {ev['loss']:.4f}{star}")
        elif r.paired.get(e) is None:
            lines.append(f"{short}: base weights")
        elif e not in r.files:
            lines.append(f"{short}: {Path(r.paired[e]).name[-22:]}")
    return lines


def _write_sheets(job: Job, rows: list[Checkpoint], cells: list[list[dict[str, Any] | None]],
                  picks: dict[str, pick.Pick], out: Path, k: int, accelerated: bool, say: Say
                  ) -> tuple[Path | None, Path | None]:
    from wanlora.engine.data.decode import probe_video, read_video_frames
    from wanlora.engine.train import sheet
    from wanlora.engine.train.previews import write_mp4

    videos: list[list[Any]] = []
    stills: list[list[Any]] = []
    for row in cells:
        vr, sr = [], []
        for c in row:
            if c is None:
                vr.append(None)
                sr.append(None)
                continue
            n = probe_video(Path(c["mp4"]), check_last=False).frames
            v = read_video_frames(Path(c["mp4"]), list(range(n)))
            vr.append(v)
            sr.append(v[sheet.frame_indices(len(v), k)])
        videos.append(vr)
        stills.append(sr)
    labels = [_row_labels(r, picks) for r in rows]
    s = job.sample
    how = (f"accelerated: {s.accelerator_steps} steps, cfg {s.accelerator_guidance_scale:g} (accelerator_lora)"
           if accelerated else f"{s.steps} steps, cfg {s.guidance_scale:g}")
    title = f"{job.job.name} · {s.width}x{s.height}, {s.num_frames} frames · {how}"
    prompts = [p.prompt for p in s.prompts]
    sheet_path = sheet.contact_sheet(stills, labels, prompts, out / "sheet.png", title=title)
    say(f"wrote {sheet_path}")
    grid_path = None
    if any(v is not None for row in videos for v in row):
        grid_path = write_mp4(sheet.grid_frames(videos, labels), out / "grid.mp4", s.fps)
        say(f"wrote {grid_path}")
    return sheet_path, grid_path


def _write_index(job: Job, job_dir: Path, rows: list[Checkpoint], cells: list[list[dict[str, Any] | None]],
                 picks: dict[str, pick.Pick], out: Path, sheet_path: Path | None, grid: Path | None,
                 accel: dict[str, Path] | None, timing: dict[str, Any]) -> Path:
    data = {
        "job": job.job.name, "job_dir": str(job_dir), "sheet": str(sheet_path) if sheet_path else None,
        "grid": str(grid) if grid else None, "accelerated": accel is not None,
        "accelerator_lora": {e: str(p) for e, p in accel.items()} if accel else None,
        "prompts": [p.prompt for p in job.sample.prompts],
        "checkpoints": [{"step": r.step, "final": r.final, "label": r.label,
                         "files": {e: str(p) for e, p in r.files.items()},
                         "runs_with": {e: str(p) if p else "base" for e, p in r.paired.items()},
                         "eval": r.evals, "cells": cells[i]} for i, r in enumerate(rows)],
        "pick": {e: p.as_dict() for e, p in picks.items()},
        "timing": timing,
    }
    jobdir.write_json_atomic(out / "index.json", data)
    lines = [f"# {job.job.name}: checkpoint comparison", ""]
    if accel:
        lines += ["Previews are **accelerated** (step-distilled LoRA on top): judge composition and motion, "
                  "not fine detail.", ""]
    lines += ["| checkpoint | high-noise eval | low-noise eval | files |", "| --- | --- | --- | --- |"]
    for r in rows:
        ev = [f"{r.evals[e]['loss']:.5f}" if e in r.evals else "-" for e in EXPERTS]
        files = ", ".join(p.name for p in r.files.values())
        lines.append(f"| {r.label} | {ev[0]} | {ev[1]} | {files} |")
    lines.append("")
    if picks:
        lines.append("Suggested pick (lowest eval loss per expert; you decide):")
        for e, p in picks.items():
            margin = "" if p.margin is None else f", margin {p.margin * 100:.1f}%"
            lines.append(f"- {e}: step {p.step} — {Path(p.file).name} (eval {p.loss:.5f}; confidence {p.confidence}: "
                         f"{p.agreement * 100:.0f}% of timestep bands agree{margin})")
    else:
        lines.append("No eval losses: mark a dataset `is_eval = true` (or set `eval_fraction`) to get a suggested pick.")
    if sheet_path:
        lines += ["", f"Contact sheet: {sheet_path}", f"Grid video: {grid}"]
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return out / "index.json"
