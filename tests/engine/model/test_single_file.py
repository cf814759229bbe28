"""Users' own weights: the tiny model written as ComfyUI / original Wan / fp8-scaled single files loads through
``model.*_file`` and trains to the same losses as the diffusers folder; wrong files are refused with what they are."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from wanlora.engine.config import jobdir
from wanlora.engine.model import keymaps
from wanlora.engine.model import single_file as sf
from wanlora.engine.model import weight_files as wf
from wanlora.engine.model.folder import load_expert, load_text_encoder, load_vae
from wanlora.engine.train.loop import run

from tests.engine.conftest import make_job_dir

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[3]


def _configs_only(src: Path, dst: Path, drop: tuple[str, ...] = ("transformer", "transformer_2")) -> Path:
    """A copy of the tiny folder without the weights of ``drop``: those parts can only come from the files."""
    shutil.copytree(src, dst)
    for sub in drop:
        for f in (dst / sub).glob("*.safetensors"):
            f.unlink()
    return dst


def _losses(job_dir: Path) -> list[float]:
    return [e["loss"] for e in jobdir.read_events(job_dir) if e["type"] == "step"]


def _train(tmp: Path, clips: Path, model: Path, **model_keys: str) -> list[float]:
    jd = make_job_dir(tmp, clips, model, steps=4, multistage__switch_every=2, save__every=100,
                      **{f"model__{k}": v for k, v in model_keys.items()})
    assert run(jd, device=CPU) == jobdir.EXIT_OK, (jd / "events.jsonl").read_text()[-2000:]
    return _losses(jd)


def _reference(tiny: Path, dst: Path, experts: dict[str, dict[str, torch.Tensor]]) -> Path:
    """The tiny folder with the experts' weights replaced (computed by the test, not by our loader)."""
    from diffusers import WanTransformer3DModel

    shutil.copytree(tiny, dst)
    for sub, state in experts.items():
        m = WanTransformer3DModel.from_pretrained(tiny, subfolder=sub)
        m.load_state_dict(state, strict=True)
        m.save_pretrained(dst / sub)
    return dst


def _expert_state(tiny: Path, expert: str) -> dict[str, torch.Tensor]:
    return load_expert(tiny, expert, torch.float32, CPU).state_dict()


# ---------------------------------------------------------------- key maps and headers
@pytest.mark.parametrize("size", ["real", "tiny"])
def test_key_maps_agree_with_diffusers_converters_and_the_config_shapes(size: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    from wanlora.engine.model.tiny import TRANSFORMER_CONFIG, VAE_CONFIG

    tcfg = wf.config_for(wf.HIGH) if size == "real" else dict(TRANSFORMER_CONFIG)
    vcfg = wf.config_for(wf.VAE) if size == "real" else dict(VAE_CONFIG)
    with init_empty_weights():
        t = WanTransformer3DModel.from_config({k: v for k, v in tcfg.items() if not k.startswith("_")})
        v = AutoencoderKLWan.from_config({k: x for k, x in vcfg.items() if not k.startswith("_")})
    shapes = {k: tuple(p.shape) for k, p in t.state_dict().items()}
    ours = {keymaps.diffusers_to_wan_transformer(k): k for k in shapes}
    assert len(ours) == len(shapes)
    assert keymaps.wan_to_diffusers_transformer(ours) == ours  # diffusers' converter inverts our writer's names
    assert wf.expected_transformer_shapes(t.config) == {o: shapes[d] for o, d in ours.items()}
    vkeys = list(v.state_dict())
    vours = {keymaps.diffusers_to_wan_vae(k, v.config): k for k in vkeys}
    assert len(vours) == len(vkeys) and all(k.startswith(("encoder.", "decoder.", "conv1.", "conv2.")) for k in vours)
    assert keymaps.diffusers_covers_vae(v.config) == (size == "real")
    if size == "real":  # where diffusers' VAE converter applies, it gives exactly our map
        conv = {o: n for n, o in convert_wan_vae_to_diffusers({k: k for k in vours}).items()}
        assert conv == vours


def test_header_reader_is_torch_free_and_matches_safetensors(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.zeros(3, 4, dtype=torch.bfloat16), "b": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"k": "v"})
    code = ("import sys; from wanlora.engine.model.weight_files import read_header\n"
            f"h = read_header({str(tmp_path / 'x.safetensors')!r})\n"
            "print(sorted((k, t.dtype, t.shape) for k, t in h.tensors.items()), h.metadata, h.nbytes)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[('a.weight', 'BF16', (3, 4)), ('b', 'F8_E4M3', (2,))] {'k': 'v'} 26"


# ---------------------------------------------------------------- each layout trains like the folder
def test_comfyui_files_for_every_part_train_to_the_folders_losses(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    files = tmp_path / "ComfyUI" / "models"
    hi = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH), files / "diffusion_models/hi.safetensors",
                             layout="comfyui", precision="fp32")
    lo = sf.save_expert_file(_expert_state(tiny_model, wf.LOW), files / "diffusion_models/lo.safetensors",
                             layout="comfyui", precision="fp32")
    vae = load_vae(tiny_model, torch.float32, CPU)
    vf = sf.save_vae_file(vae.state_dict(), vae.config, files / "vae/wan_2.1_vae.safetensors", precision="fp32")
    _, te = load_text_encoder(tiny_model, torch.float32, CPU)
    tf = sf.save_text_encoder_file(te.state_dict(), files / "text_encoders/umt5.safetensors", precision="fp32")
    assert next(iter(load_file(str(hi)))).startswith("model.diffusion_model.")
    assert "decoder.upsamples.0.residual.0.gamma" in load_file(str(vf))  # original Wan VAE names
    cfg_only = _configs_only(tiny_model, tmp_path / "configs", ("transformer", "transformer_2", "vae", "text_encoder"))
    ref = _train(tmp_path / "ref", clips, tiny_model)
    got = _train(tmp_path / "files", clips, cfg_only, high_noise_file=str(hi), low_noise_file=str(lo),
                 vae_file=str(vf), text_encoder_file=str(tf))
    # same fp32 bits, differently aligned memory: float32 summation order (see the bf16 shards' test)
    assert len(got) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=0)


def test_original_wan_shards_in_bf16_train_like_the_rounded_folder(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    states = {e: _expert_state(tiny_model, e) for e in wf.EXPERTS}
    idx = {e: sf.save_expert_file(states[e], tmp_path / f"Wan2.2-I2V-A14B/{e}_model/diffusion_pytorch_model.safetensors",
                                  layout="wan", precision="bf16", max_shard_bytes=40_000) for e in wf.EXPERTS}
    assert all(p.name.endswith(".index.json") and len(wf.read_header(p).files) > 1 for p in idx.values())
    rounded = {sub: {k: v.to(torch.bfloat16).float() for k, v in states[e].items()}
               for e, sub in (("high_noise", "transformer"), ("low_noise", "transformer_2"))}
    for e, sub in (("high_noise", "transformer"), ("low_noise", "transformer_2")):  # loading only moves bits
        loaded = sf.load_expert_file(idx[e], wf.config_for(e, tiny_model), dtype=torch.float32, device=CPU, part=e)
        assert all(torch.equal(v, rounded[sub][k]) for k, v in loaded.state_dict().items())
    ref = _train(tmp_path / "ref", clips, _reference(tiny_model, tmp_path / "ref_model", rounded))
    got = _train(tmp_path / "files", clips, _configs_only(tiny_model, tmp_path / "configs"),
                 high_noise_file=str(idx[wf.HIGH].parent), low_noise_file=str(idx[wf.LOW]))
    # The weights are the same bits (checked above), but the loader allocates them 64-byte aligned and the
    # folder's mmap does not, so the SIMD kernels can split their float32 sums differently and the losses
    # differ in the last bits: 2.4e-7 relative measured on a Zen 5 (AVX-512), 1e-5 allowed. The weights' bits are
    # what this test is about; the losses show the trainer trains on them.
    assert len(got) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=0)


def _dequantised_by_hand(path: Path) -> dict[str, torch.Tensor]:
    """An fp8-scaled ComfyUI file read with plain safetensors, w = q·scale, renamed by diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    raw = load_file(str(path))
    plain = {}
    for k, v in raw.items():
        if k.endswith(".scale_weight") or k.endswith("scaled_fp8"):
            continue
        scale = raw.get(k.removesuffix(".weight") + ".scale_weight")
        plain[k] = v.float() * scale if scale is not None else v.float()
    return convert_wan_transformer_to_diffusers(plain)


def test_fp8_scaled_comfyui_files_train_like_their_dequantised_weights(tmp_path: Path, clips: Path,
                                                                       tiny_model: Path) -> None:
    paths = {e: sf.save_expert_file(_expert_state(tiny_model, e), tmp_path / f"wan2.2_i2v_{e}_14B_fp8_scaled.safetensors",
                                    layout="comfyui", precision="fp8_scaled") for e in wf.EXPERTS}
    head = wf.read_header(paths[wf.HIGH])
    assert head.tensors["model.diffusion_model.blocks.0.self_attn.q.weight"].dtype == "F8_E4M3"
    assert "model.diffusion_model.blocks.0.self_attn.q.scale_weight" in head.tensors
    assert wf.identify(paths[wf.HIGH]).precision == "fp8_scaled"
    ref_model = _reference(tiny_model, tmp_path / "ref_model",
                           {"transformer": _dequantised_by_hand(paths[wf.HIGH]),
                            "transformer_2": _dequantised_by_hand(paths[wf.LOW])})
    for e in wf.EXPERTS:  # q·scale, one rounding
        loaded = sf.load_expert_file(paths[e], wf.config_for(e, tiny_model), dtype=torch.float32, device=CPU, part=e)
        by_hand = _dequantised_by_hand(paths[e])
        assert all(torch.equal(v, by_hand[k]) for k, v in loaded.state_dict().items())
    ref = _train(tmp_path / "ref", clips, ref_model)
    got = _train(tmp_path / "files", clips, _configs_only(tiny_model, tmp_path / "configs"),
                 high_noise_file=str(paths[wf.HIGH]), low_noise_file=str(paths[wf.LOW]))
    # same bits, differently aligned memory: the losses agree to float32 summation order (see the bf16 test)
    assert len(got) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=0)


def test_fp8_scaled_weights_become_the_fp8_base_as_stored(tmp_path: Path) -> None:
    """An fp8 job keeps the file's e4m3 bytes and scale (no re-quantising); LoRA trains on top of them."""
    from diffusers import WanTransformer3DModel
    from wanlora.engine.model.fp8_linear import Fp8Linear
    from wanlora.engine.model.lora import add_lora
    from wanlora.engine.model.quant import quantize_and_place

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36, out_channels=16,
               text_dim=32, freq_dim=256, ffn_dim=64, num_layers=1, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=32)  # every block Linear fp8-eligible (×16)
    torch.manual_seed(0)
    base = WanTransformer3DModel(**cfg)
    path = sf.save_expert_file(base.state_dict(), tmp_path / "e.safetensors", layout="comfyui", precision="fp8_scaled")
    raw = load_file(str(path))
    m = sf.load_expert_file(path, base.config, dtype=torch.float32, device=CPU, fp8_base=True)
    lin = m.blocks[0].attn1.to_q
    assert isinstance(lin, Fp8Linear) and isinstance(m.blocks[0].ffn.net[2], Fp8Linear)
    q = raw["model.diffusion_model.blocks.0.self_attn.q.weight"]
    assert torch.equal(lin.weight_q.view(torch.uint8), q.view(torch.uint8))
    assert lin.weight_scale.item() == raw["model.diffusion_model.blocks.0.self_attn.q.scale_weight"].item()
    assert not isinstance(m.proj_out, Fp8Linear)  # outside the blocks stays in the job's dtype, as quant.py places it
    params = add_lora(m, 4, 4, "attn+ffn", dtype=torch.float32)
    assert len(params) == 2 * 10 and quantize_and_place(m, "fp8", CPU) == 0  # nothing left to quantise
    for p in params:  # B starts at zero: give the LoRA something to say
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(1, 36, 1, 4, 4)
    out = m(x, torch.tensor([950.0]), torch.randn(1, 8, 32), return_dict=False)[0]
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert torch.equal(lin.base_layer.weight_q.view(torch.uint8), q.view(torch.uint8)) if hasattr(lin, "base_layer") \
        else True
    wrapped = m.blocks[0].attn1.to_q
    assert isinstance(wrapped.base_layer, Fp8Linear)  # peft wrapped our fp8 base


# ---------------------------------------------------------------- wrong files refused
def _lora_file(tmp: Path) -> Path:
    from wanlora.engine.model.lora_format import save_lora

    sd = {"blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 24), "blocks.0.attn1.to_q.lora_B.weight": torch.zeros(24, 4)}
    path = tmp / "wan22_motion_high_noise.safetensors"
    save_lora(path, sd, alpha=4.0, dtype="fp32", metadata={})
    return path


def test_wrong_files_are_refused_with_what_they_are(tmp_path: Path, tiny_model: Path) -> None:
    from diffusers import WanTransformer3DModel
    from wanlora.engine.model.tiny import TRANSFORMER_CONFIG

    state = _expert_state(tiny_model, wf.HIGH)
    t2v = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "in_channels": 16})
    cases = {
        "t2v": (sf.save_expert_file(t2v.state_dict(), tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors"),
                ["T2V", "16 input channels", "expected the high-noise expert", "36 input"]),
        "lora": (_lora_file(tmp_path), ["a LoRA", "rank 4", "not a base model", "expected the high-noise expert"]),
        "vae": (sf.save_vae_file(load_vae(tiny_model, torch.float32, CPU).state_dict(), wf.config_for(wf.VAE, tiny_model),
                                 tmp_path / "wan_2.1_vae.safetensors"), ["the Wan 2.1 VAE", "expected the high-noise expert"]),
        "wan21": (sf.write_safetensors({**sf.expert_file_tensors(state),
                                        "model.diffusion_model.img_emb.proj.1.weight": torch.zeros(24, 24)},
                                       tmp_path / "wan2.1_i2v_480p_14B_high_noise.safetensors"),
                  ["Wan 2.1 I2V (CLIP image branch)", "no CLIP/VACE branch"]),
    }
    for name, (path, words) in cases.items():
        rep = wf.check_part(wf.HIGH, path, tiny_model)
        assert rep.errors, name
        for w in words:
            assert w in rep.errors[0], (name, w, rep.errors[0])
    trunc = tmp_path / "half.safetensors"
    full = sf.save_expert_file(state, tmp_path / "full_high_noise.safetensors")
    trunc.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(wf.WeightFileError, match="truncated"):
        wf.check_part(wf.HIGH, trunc, tiny_model)
    (tmp_path / "notes.safetensors").write_text("hello")
    with pytest.raises(wf.WeightFileError, match="not a safetensors file"):
        wf.read_header(tmp_path / "notes.safetensors")
    wrong_te = wf.check_part(wf.TEXT_ENCODER, full, tiny_model)
    assert "expected the UMT5-XXL text encoder" in wrong_te.errors[0]
    # against the real A14B configs the tiny expert has the wrong size
    assert "expected 40 blocks of dim 5120" in wf.check_part(wf.HIGH, full).errors[0]


def test_swapped_experts_are_caught_by_metadata_or_name_else_flagged_unverifiable(tmp_path: Path, tiny_model: Path) -> None:
    hi = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH), tmp_path / "a.safetensors", expert=wf.HIGH)
    lo = sf.save_expert_file(_expert_state(tiny_model, wf.LOW), tmp_path / "b.safetensors", expert=wf.LOW)
    errors, warnings, _ = wf.check_files({wf.HIGH: lo, wf.LOW: hi}, tiny_model)
    assert len(errors) == 2 and "is the low-noise expert by its metadata, given as the high-noise expert" in errors[0]
    assert "swap model.high_noise_file and model.low_noise_file" in errors[0]
    assert wf.check_files({wf.HIGH: hi, wf.LOW: lo}, tiny_model)[:2] == ([], [])
    by_name = shutil.copy(sf.save_expert_file(_expert_state(tiny_model, wf.LOW), tmp_path / "x.safetensors"),
                          tmp_path / "wan2.2_i2v_low_noise_14B_fp16.safetensors")
    errors, _, _ = wf.check_files({wf.HIGH: Path(by_name)}, tiny_model)
    assert "by its file name" in errors[0]
    plain = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH), tmp_path / "expert_a.safetensors")
    errors, warnings, _ = wf.check_files({wf.HIGH: plain}, tiny_model)
    assert not errors and "cannot be verified" in warnings[0]
    errors, _, _ = wf.check_files({wf.HIGH: hi, wf.LOW: hi}, tiny_model)
    assert "are the same file" in errors[0]


def test_validate_and_the_trainer_refuse_a_lora_given_as_base(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.checks.validate import validate_job
    from wanlora.engine.config.io import job_from_dict
    from wanlora.engine.train.demo import demo_job_dict

    lora = _lora_file(tmp_path)
    d = demo_job_dict(clips, tiny_model, model__high_noise_file=str(lora))
    found = [f for f in validate_job(job_from_dict(d)) if f.key == "model.high_noise_file"]
    assert found and found[0].level == "error" and "is a LoRA" in found[0].message and "model find" in found[0].fix
    jd = make_job_dir(tmp_path, clips, tiny_model, steps=2, model__high_noise_file=str(lora))
    assert run(jd, device=CPU) == jobdir.EXIT_CONFIG
    err = [e for e in jobdir.read_events(jd) if e["type"] == "error"][-1]
    assert "is a LoRA" in err["message"] and "Traceback" not in err["message"]


# ---------------------------------------------------------------- model find / pull
def test_model_find_lists_a_comfyui_models_folder(tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.find import find_parts, job_lines

    models = tmp_path / "workspace" / "ComfyUI" / "models"
    hi = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH),
                             models / "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                             precision="fp8_scaled")
    lo = sf.save_expert_file(_expert_state(tiny_model, wf.LOW),
                             models / "diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors", precision="fp16")
    vae = load_vae(tiny_model, torch.float32, CPU)
    vf = sf.save_vae_file(vae.state_dict(), vae.config, models / "vae/wan_2.1_vae.safetensors")
    _, te = load_text_encoder(tiny_model, torch.float32, CPU)
    tf = sf.save_text_encoder_file(te.state_dict(), models / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                   precision="fp8_scaled")
    shutil.copy(_lora_file(tmp_path), models / "diffusion_models/a_lora_high_noise.safetensors")
    found = find_parts([tmp_path / "workspace"], tiny_model)
    by_part = {c.part: c for c in found.candidates if c.usable}
    assert {p: by_part[p].path for p in by_part} == {wf.HIGH: hi, wf.LOW: lo, wf.VAE: vf, wf.TEXT_ENCODER: tf}
    assert by_part[wf.HIGH].report.precision == "fp8_scaled" and by_part[wf.LOW].report.precision == "fp16"
    assert by_part[wf.TEXT_ENCODER].report.precision == "fp8_scaled"
    lines = job_lines(found)
    assert f'high_noise_file = "{hi}"' in lines and f'vae_file = "{vf}"' in lines and 'transformer = "fp8"   # the fp8-scaled experts are used as the fp8 base' in lines
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "model", "find", str(tmp_path / "workspace"),
                        "--like", str(tiny_model)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "the high-noise expert:" in r.stdout and "ComfyUI keys" in r.stdout and "fp8_scaled" in r.stdout
    assert f'low_noise_file = "{lo}"' in r.stdout and "a_lora" not in r.stdout
    # the job lines work as they are
    import tomllib

    text = "\n".join(lines)
    assert tomllib.loads(text)["model"]["text_encoder_file"] == str(tf)


def test_model_pull_plans_only_the_parts_a_job_needs(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.config.io import job_from_dict
    from wanlora.engine.model import pull
    from wanlora.engine.train.demo import demo_job_dict

    job = job_from_dict(demo_job_dict(clips, tiny_model, multistage__low_noise=False,
                                      model__vae_file="/data/wan_2.1_vae.safetensors"))
    parts = pull.needed_parts(job)
    assert parts == [wf.HIGH, wf.TEXT_ENCODER, wf.TOKENIZER]  # no low expert (untrained), no VAE (a file already)
    sizes = {pull.COMFY_22: {"split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": 14_300_000_000,
                             "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors": 28_600_000_000},
             pull.COMFY_21: {"split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": 6_700_000_000},
             pull.DIFFUSERS: {"model_index.json": 500, "tokenizer/spiece.model": 4_500_000,
                              "tokenizer/tokenizer.json": 16_800_000, "transformer/x.safetensors": 10**10}}
    asked: list[tuple[str, list[str]]] = []

    def fake_sizes(repo: str, paths: list[str]) -> dict[str, int]:
        asked.append((repo, paths))
        return {k: v for k, v in sizes[repo].items() if any(k == p or (p.endswith("/") and k.startswith(p)) for p in paths)}

    p = pull.plan(parts, "fp8_scaled", sizes=fake_sizes,
                  cached=lambda repo, f: f == "tokenizer/tokenizer.json", cache_dir=tmp_path / "hf" / "hub")
    names = [f.filename for f in p.files]
    assert names == ["split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                     "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                     "model_index.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json"]
    assert p.download_bytes == 14_300_000_000 + 6_700_000_000 + 500 + 4_500_000  # the cached file costs nothing
    text = pull.render_plan(p)
    assert text.startswith("5 files, 21.0 GB to download into") and "(in the cache)" in text
    p.free_bytes = 10**9
    assert not p.fits
    with pytest.raises(pull.PullError, match="not enough disk: 21.0 GB to download, 1.0 GB free"):
        pull.download(p)
    with pytest.raises(pull.PullError, match="has no split_files/vae/wan_2.1_vae.safetensors"):
        pull.plan([wf.VAE], sizes=fake_sizes, cached=lambda r, f: False)


def test_model_pull_with_an_unreachable_hub_says_so(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "model", "pull", "--parts", "high_noise,vae"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 1
    assert "cannot reach the model hub at http://127.0.0.1:9" in r.stderr and "nothing was downloaded" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "hf" / "hub").exists()
    env["HF_HUB_OFFLINE"] = "1"
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "model", "pull", "--parts", "vae"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 1 and "HF_HUB_OFFLINE is set" in r.stderr


def test_bundled_configs_are_the_wan22_i2v_a14b_ones() -> None:
    root = wf.bundled_config_dir()
    index = json.loads((root / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.9 and index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
    for sub in ("transformer", "transformer_2"):
        c = wf.config_for(sub.replace("transformer_2", "low_noise").replace("transformer", "high_noise"))
        assert (c["in_channels"], c["num_layers"], c["num_attention_heads"] * c["attention_head_dim"]) == (36, 40, 5120)
    assert wf.config_for(wf.VAE)["z_dim"] == 16 and wf.config_for(wf.TEXT_ENCODER)["vocab_size"] == 256384
    assert json.loads((root / "scheduler" / "scheduler_config.json").read_text())["use_flow_sigmas"] is True


def test_original_release_pth_vae_and_t5_load_as_the_folders(tmp_path: Path, tiny_model: Path) -> None:
    """Wan2.1_VAE.pth and models_t5_umt5-xxl-enc-bf16.pth (Wan's own names) read torch-free and load exactly;
    the T5 feed-forward computed by hand in Wan's form equals transformers' on the loaded weights."""
    import torch.nn.functional as F

    vae = load_vae(tiny_model, torch.float32, CPU)
    vp = tmp_path / "Wan2.1_VAE.pth"
    torch.save({keymaps.diffusers_to_wan_vae(k, vae.config): v for k, v in vae.state_dict().items()}, vp)
    assert wf.check_part(wf.VAE, vp, tiny_model).errors == []
    v2 = sf.load_vae_file(vp, wf.config_for(wf.VAE, tiny_model), dtype=torch.float32, device=CPU)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), v2.state_dict().values(), strict=True))
    _, te = load_text_encoder(tiny_model, torch.float32, CPU)
    sd = te.state_dict()
    wan_names = {"layer.0.layer_norm.weight": "norm1.weight", "layer.0.SelfAttention.q.weight": "attn.q.weight",
                 "layer.0.SelfAttention.k.weight": "attn.k.weight", "layer.0.SelfAttention.v.weight": "attn.v.weight",
                 "layer.0.SelfAttention.o.weight": "attn.o.weight",
                 "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
                 "layer.1.layer_norm.weight": "norm2.weight", "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
                 "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight"}
    orig = {"token_embedding.weight": sd["shared.weight"], "norm.weight": sd["encoder.final_layer_norm.weight"]}
    for k, v in sd.items():
        if k.startswith("encoder.block."):
            i, rest = k.split(".", 3)[2], k.split(".", 3)[3]
            orig[f"blocks.{i}.{wan_names[rest]}"] = v
    tp = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(orig, tp)
    code = ("import sys; from wanlora.engine.model.weight_files import identify\n"
            f"r = identify({str(tp)!r}); print(r.kind, r.layout, r.facts['umt5'])\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["text_encoder", "wan", "True"], r.stderr
    t2 = sf.load_text_encoder_file(tp, wf.config_for(wf.TEXT_ENCODER, tiny_model), dtype=torch.float32, device=CPU)
    assert all(torch.equal(sd[k], t2.state_dict()[k]) for k in sd)
    x = torch.randn(3, 32)
    wan_ffn = F.linear(F.linear(x, orig["blocks.0.ffn.fc1.weight"])
                       * F.gelu(F.linear(x, orig["blocks.0.ffn.gate.0.weight"]), approximate="tanh"),
                       orig["blocks.0.ffn.fc2.weight"])
    with torch.no_grad():
        assert torch.allclose(t2.encoder.block[0].layer[1].DenseReluDense(x), wan_ffn, atol=1e-6)


def test_random_full_layout_expert_streams_to_disk_and_loads(tmp_path: Path) -> None:
    """The GPU trial's file (a random expert in ComfyUI's fp8-scaled layout) is a valid safetensors file written
    one tensor at a time; safetensors itself reads it, and our loader keeps its fp8 bytes."""
    from wanlora.engine.model.tiny import TRANSFORMER_CONFIG

    cfg = {**TRANSFORMER_CONFIG, "attention_head_dim": 16, "ffn_dim": 64}
    p = sf.write_random_expert(tmp_path / "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", cfg, expert=wf.HIGH)
    raw = load_file(str(p))  # safetensors' own reader agrees with our header and offsets
    assert raw["model.diffusion_model.blocks.1.ffn.2.weight"].dtype == torch.float8_e4m3fn
    assert wf.check_files({wf.HIGH: p}, None)[0][0].endswith("expected 40 blocks of dim 5120 (Wan 2.2 I2V A14B)")
    rep = wf.check_part(wf.HIGH, p)
    assert rep.precision == "fp8_scaled" and rep.expert_hint == wf.HIGH
    m = sf.load_expert_file(p, cfg, dtype=torch.bfloat16, device=CPU, fp8_base=True)
    q = raw["model.diffusion_model.blocks.1.ffn.2.weight"]
    assert torch.equal(m.blocks[1].ffn.net[2].weight_q.view(torch.uint8), q.view(torch.uint8))
    assert m.blocks[1].norm1.__class__.__name__ == "FP32LayerNorm" and m.proj_out.weight.dtype == torch.bfloat16


def test_show_says_where_parts_and_the_boundary_come_from(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.part_sources import fp8_files_direct

    hi = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH), tmp_path / "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                             precision="fp8_scaled")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "x"\n[model]\nhigh_noise_file = "{hi}"\n[[datasets]]\nfolder = "{clips}"\n')
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "show", str(job)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"the high-noise expert: model.high_noise_file = {hi} (ComfyUI keys" in r.stdout
    assert "the low-noise expert: Wan-AI/Wan2.2-I2V-A14B-Diffusers/transformer_2" in r.stdout
    assert "model.boundary_ratio = auto → 0.9" in r.stdout and "t ≥ 900 trains the high-noise expert" in r.stdout
    job.write_text(job.read_text().replace('name = "x"\n', 'name = "x"\n').replace("[model]\n", "[model]\nboundary_ratio = 0.875\n"))
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "show", str(job)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert "model.boundary_ratio = 0.875 (set by the job" in r.stdout
    # an fp8 job whose trained experts are all fp8-scaled files loads them straight onto the GPU
    assert fp8_files_direct({wf.HIGH: hi}, [wf.HIGH], "fp8", low_vram=False)
    assert not fp8_files_direct({wf.HIGH: hi}, [wf.HIGH, wf.LOW], "fp8", low_vram=False)
    assert not fp8_files_direct({wf.HIGH: hi}, [wf.HIGH], "nf4", low_vram=False)
    assert not fp8_files_direct({wf.HIGH: hi}, [wf.HIGH], "fp8", low_vram=True)


def test_model_find_lists_a_diffusers_folder_as_a_whole(tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.find import find_parts, suggestions

    hub = tmp_path / "hf" / "hub" / "models--Wan-AI--Wan2.2-I2V-A14B-Diffusers" / "snapshots" / "abc"
    shutil.copytree(tiny_model, hub)
    found = find_parts([tmp_path / "hf"])
    assert found.diffusers_folders == [hub] and found.candidates == []  # its transformer/ files are not listed apart
    assert suggestions(found) == {"model.name_or_path": str(hub)}


def test_fp8_scaled_text_encoder_is_kept_fp8_and_encodes_like_its_dequantised_weights(tmp_path: Path,
                                                                                     tiny_model: Path) -> None:
    from transformers import UMT5Config, UMT5EncoderModel
    from wanlora.engine.model.fp8_linear import Fp8Linear
    from wanlora.engine.model.text import encode_prompts
    from wanlora.engine.model.tiny import build_tokenizer

    cfg = {**wf.config_for(wf.TEXT_ENCODER, tiny_model), "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4}
    torch.manual_seed(0)
    te = UMT5EncoderModel(UMT5Config.from_dict({k: v for k, v in cfg.items() if not k.startswith("_")})).eval()
    p = sf.save_text_encoder_file(te.state_dict(), tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                  precision="fp8_scaled")
    fp8 = sf.load_text_encoder_file(p, cfg, dtype=torch.float32, device=CPU, fp8_base=True)
    plain = sf.load_text_encoder_file(p, cfg, dtype=torch.float32, device=CPU)
    lin = fp8.encoder.block[0].layer[0].SelfAttention.q
    raw = load_file(str(p))
    assert isinstance(lin, Fp8Linear) and not lin.fp8_compute
    assert torch.equal(lin.weight_q.view(torch.uint8), raw["encoder.block.0.layer.0.SelfAttention.q.weight"].view(torch.uint8))
    assert not isinstance(plain.encoder.block[0].layer[0].SelfAttention.q, Fp8Linear)
    tok = build_tokenizer()
    with torch.no_grad():
        a = encode_prompts(tok, fp8, ["a red square moving right"], device=CPU, dtype=torch.float32)
        b = encode_prompts(tok, plain, ["a red square moving right"], device=CPU, dtype=torch.float32)
    assert torch.allclose(a, b, atol=1e-6) and a.abs().sum() > 0


def test_preview_of_an_untrained_expert_comes_from_its_file(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    """Training only the high expert, a preview needs the low one too: it is read from model.low_noise_file."""
    import numpy as np
    from PIL import Image

    img = tmp_path / "ctrl.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype("uint8")).save(img)
    hi = sf.save_expert_file(_expert_state(tiny_model, wf.HIGH), tmp_path / "h.safetensors", expert=wf.HIGH, precision="fp32")
    lo = sf.save_expert_file(_expert_state(tiny_model, wf.LOW), tmp_path / "l.safetensors", expert=wf.LOW, precision="fp32")
    jd = make_job_dir(tmp_path, clips, _configs_only(tiny_model, tmp_path / "configs"), steps=1, save__every=100,
                      multistage__low_noise=False, model__high_noise_file=str(hi), model__low_noise_file=str(lo),
                      sample__enabled=True, sample__every=1, sample__width=64, sample__height=48,
                      sample__num_frames=9, sample__steps=2, sample__prompts=[{"prompt": "a red square", "ctrl_img": str(img)}])
    assert run(jd, device=CPU) == jobdir.EXIT_OK, (jd / "events.jsonl").read_text()[-1500:]
    assert [e["step"] for e in jobdir.read_events(jd) if e["type"] == "sample"] == [1]


def test_a_text_encoder_file_without_a_tokenizer_says_how_to_get_one(tmp_path: Path, tiny_model: Path) -> None:
    from wanlora.engine.model.load import ModelLoadError, load_parts

    _, te = load_text_encoder(tiny_model, torch.float32, CPU)
    tf = sf.save_text_encoder_file(te.state_dict(), tmp_path / "umt5_xxl_fp16.safetensors", precision="fp32")
    folder = _configs_only(tiny_model, tmp_path / "configs")
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(ModelLoadError, match=r"missing tokenizer/.*wanlora model pull --parts tokenizer"):
        load_parts(str(folder), [], dtype=torch.float32, device=CPU, files={wf.TEXT_ENCODER: tf})


def test_a_file_sourced_vae_gets_its_own_cache_identity(tmp_path: Path, tiny_model: Path) -> None:
    """Latents cached with the folder's VAE are not reused for a VAE file (and a changed file is a new identity)."""
    import os
    from types import SimpleNamespace

    from wanlora.engine.cache.keys import model_identity
    from wanlora.engine.model.part_sources import file_variant

    vae = load_vae(tiny_model, torch.float32, CPU)
    vf = sf.save_vae_file(vae.state_dict(), vae.config, tmp_path / "wan_2.1_vae.safetensors", precision="fp32")
    folder = SimpleNamespace(root=tiny_model, files={})
    from_file = SimpleNamespace(root=tiny_model, files={wf.VAE: vf})
    ids = [model_identity(p.root, ["vae"], dtype="float32", variant=file_variant(p, wf.VAE)) for p in (folder, from_file)]
    assert file_variant(folder, wf.VAE) == "" and ids[0] != ids[1]
    os.utime(vf, ns=(1, 1))
    assert model_identity(tiny_model, ["vae"], dtype="float32", variant=file_variant(from_file, wf.VAE)) != ids[1]


def test_the_trials_random_source_reads_expert_files_through_the_single_file_loader(tmp_path: Path,
                                                                                   tiny_model: Path) -> None:
    """`wanlora trial` on a job with model.high_noise_file times the real file path (the rest stays random)."""
    from wanlora.engine.model.fullsize import RandomFullSize
    from wanlora.engine.model.load import ModelLoadError
    from wanlora.engine.model.tiny import TRANSFORMER_CONFIG

    source = RandomFullSize(tmp_path / "model", tokenizer_from=tiny_model)
    (source.root / "transformer" / "config.json").write_text(json.dumps(dict(TRANSFORMER_CONFIG), default=list))
    state = _expert_state(tiny_model, wf.HIGH)
    hi = sf.save_expert_file(state, tmp_path / "wan2.2_i2v_high_noise_14B_fp32.safetensors", precision="fp32")
    parts = source("unused", [wf.HIGH], dtype=torch.float32, device=CPU, text_encoder=False, files={wf.HIGH: hi})
    got = parts.experts[wf.HIGH].state_dict()
    assert parts.files == {wf.HIGH: hi} and all(torch.equal(state[k], got[k]) for k in state)
    with pytest.raises(ModelLoadError, match="is a LoRA"):
        source("unused", [wf.HIGH], dtype=torch.float32, device=CPU, text_encoder=False,
               files={wf.HIGH: _lora_file(tmp_path)})
