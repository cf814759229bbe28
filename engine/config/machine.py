"""Can *this* machine run a job?  Checked before it is queued, so a job never fails seconds after it starts.

``wanlora validate`` and the daemon's intake (both through ``validate.check_file``) ask this; the wizard's
final check too.  Torch-free: CUDA is "NVML sees an NVIDIA GPU" (``engine.config.gpu``) and bitsandbytes
is "importable" (``importlib.util.find_spec``), both answered in milliseconds without loading anything.
``WANLORA_VALIDATE_ANYWHERE=1`` (or ``wanlora validate --anywhere``) skips these checks, for writing a
GPU job on a laptop.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from wanlora.engine.config.findings import Finding

ANYWHERE_ENV = "WANLORA_VALIDATE_ANYWHERE"


@dataclass(frozen=True)
class Machine:
    """What a job needs to know about the computer it will run on."""

    cuda: bool  # an NVIDIA GPU with a working driver (NVML)
    bitsandbytes: bool  # the bitsandbytes package is installed
    gpu_names: tuple[str, ...] = ()
    hub_token: bool | None = None  # a Hugging Face token is found here (None: looked up when a job pushes)


def has_module(name: str) -> bool:
    """True when ``import name`` would find the package (nothing is imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def this_machine() -> Machine:
    from wanlora.engine.config.gpu import detect_gpus

    gpus = detect_gpus()
    return Machine(cuda=bool(gpus), bitsandbytes=has_module("bitsandbytes"), gpu_names=tuple(g.name for g in gpus))


def hub_token_found() -> bool:
    """huggingface_hub's own lookup (HF_TOKEN, else the file `hf auth login` wrote), as the upload will do it."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return False
    return bool(get_token())


def skip_requested() -> bool:
    return os.environ.get(ANYWHERE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def machine_findings(job: Any, machine: Machine | None = None) -> list[Finding]:
    """Errors for settings this machine cannot run (fp8/nf4 without CUDA, nf4/adamw8bit without bitsandbytes);
    a warning for ``save.push_to_hub`` without a Hub token (the daemon's intake runs this in the daemon's own
    environment, which is where the upload will look for it)."""
    m = machine if machine is not None else this_machine()
    out: list[Finding] = []
    where = ("this machine has no NVIDIA GPU (NVML found none)" if not m.cuda else "")
    bnb_fix = "pip install bitsandbytes (CUDA machines only)"
    quant = job.quantization.transformer
    if quant in ("fp8", "nf4") and not m.cuda:
        out.append(Finding("error", "quantization.transformer",
                           f'quantization.transformer = "{quant}" needs a CUDA GPU, and {where}: the job would fail '
                           "seconds after it starts",
                           'set quantization.transformer = "none" to train here (CPU, slow), or run the job on a GPU '
                           "machine (`wanlora validate --anywhere` checks a job meant for another machine)"))
    elif quant == "nf4" and not m.bitsandbytes:
        out.append(Finding("error", "quantization.transformer",
                           'quantization.transformer = "nf4" needs bitsandbytes, which is not installed here',
                           f'{bnb_fix}, or set quantization.transformer = "fp8"'))
    te = job.quantization.text_encoder
    if te in ("fp8", "nf4") and not m.cuda:
        out.append(Finding("info", "quantization.text_encoder",
                           f'quantization.text_encoder = "{te}" applies on CUDA only; on this machine the text encoder '
                           "runs unquantised", ""))
    elif te == "nf4" and not m.bitsandbytes:
        out.append(Finding("error", "quantization.text_encoder",
                           'quantization.text_encoder = "nf4" needs bitsandbytes, which is not installed here',
                           f'{bnb_fix}, or set quantization.text_encoder = "fp8"'))
    if job.training.optimizer == "adamw8bit" and not (m.cuda and m.bitsandbytes):
        missing = " and ".join(x for x, ok in (("a CUDA GPU", m.cuda), ("bitsandbytes", m.bitsandbytes)) if not ok)
        out.append(Finding("error", "training.optimizer",
                           f'training.optimizer = "adamw8bit" needs {missing}, which this machine does not have',
                           'set training.optimizer = "adamw"' + ("" if m.cuda else " (or run the job on a GPU machine)")
                           + ("" if m.bitsandbytes or not m.cuda else f", or {bnb_fix}")))
    repo = job.save.push_to_hub
    if repo and not (m.hub_token if m.hub_token is not None else hub_token_found()):
        out.append(Finding("warning", "save.push_to_hub",
                           f"no Hugging Face token here (HF_TOKEN is not set and `hf auth login` was not run), so the "
                           f"upload to {repo} when the job completes would fail; the LoRAs stay on disk either way",
                           "run `hf auth login` with a write token as the user the daemon runs as (or start the "
                           "daemon with HF_TOKEN set); `wanlora push JOB` uploads a completed job later"))
    return out
