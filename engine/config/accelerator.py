"""``sample.accelerator_lora``: which step-distilled LoRA file goes into which expert (torch-free).

A fast preview runs a user-supplied step-distilled LoRA pair (e.g. LightX2V's 4-step Wan 2.2 I2V LoRAs) on
top of the trained pair, at inference only.  The key accepts what people download:

- a folder holding one file whose name says ``high`` and one whose name says ``low`` (LightX2V ships
  ``high_noise_model.safetensors`` / ``low_noise_model.safetensors``);
- a list ``[high, low]`` of two files, in that order;
- one file, applied to both experts (the Wan 2.1 step-distill LoRA is used that way).

Validation and the sampler share :func:`accelerator_files`, so a bad path is refused before a GPU is touched.
"""

from __future__ import annotations

from pathlib import Path

from wanlora.engine.config.experts import HIGH, LOW


class AcceleratorError(ValueError):
    """``sample.accelerator_lora`` does not name a usable LoRA pair; the message says the fix."""


def is_set(value: str | list[str]) -> bool:
    return bool(value) and (not isinstance(value, list) or any(str(v).strip() for v in value))


def _file(p: str | Path) -> Path:
    path = Path(p).expanduser()
    if not path.is_file():
        raise AcceleratorError(f"{path} does not exist; point sample.accelerator_lora at the downloaded "
                               ".safetensors files (or their folder)")
    if path.suffix != ".safetensors":
        raise AcceleratorError(f"{path} is not a .safetensors LoRA file")
    return path


def accelerator_files(value: str | list[str]) -> dict[str, Path]:
    """``{high_noise: file, low_noise: file}`` for the key's value (see the module docstring)."""
    if isinstance(value, list):
        items = [str(v) for v in value if str(v).strip()]
        if len(items) == 1:
            value = items[0]
        elif len(items) == 2:
            return {HIGH: _file(items[0]), LOW: _file(items[1])}
        else:
            raise AcceleratorError(f"sample.accelerator_lora lists {len(items)} files; give [high, low] "
                                   "(two files), one file for both experts, or a folder")
    path = Path(str(value)).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        high = [f for f in files if "high" in f.name.lower()]
        low = [f for f in files if "low" in f.name.lower()]
        if len(high) == 1 and len(low) == 1:
            return {HIGH: high[0], LOW: low[0]}
        if len(files) == 1:
            return {HIGH: files[0], LOW: files[0]}
        raise AcceleratorError(f"{path} holds {len(files)} .safetensors files and no single 'high' + 'low' "
                               "pair; give the two files as [high, low] instead")
    f = _file(path)
    return {HIGH: f, LOW: f}
