"""``wanlora presets [NAME]``: the recipes (motion, style, character) and the VRAM tiers, with the guide's advice."""

from __future__ import annotations

import argparse
import sys

HELP = "list the recipes and VRAM tiers, or print one (motion, style, character, tiers, 24, ...)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "presets") -> None:
    parser.add_argument("name", nargs="?", default=None, metavar="NAME",
                        help="motion | style | character | tiers | a tier size (12, 24, 32, 48, 80, 141)")
    parser.add_argument("--starter", action="store_true",
                        help="with a recipe NAME: print a minimal job file that starts from it")


def _settings(table: dict, skip: tuple[str, ...]) -> str:
    import tomli_w

    body = {k: v for k, v in table.items() if k not in skip}
    return tomli_w.dumps(body)


def _list() -> str:
    from wanlora.engine.config.presets import list_recipes, load_tiers, recipe_meta

    lines = ["Recipes (job.preset):"]
    for name in list_recipes():
        meta = recipe_meta(name)
        lines.append(f"  {name:<10} {meta.get('description', '')}")
    lines.append("  custom     no recipe: schema defaults + the VRAM tier + your file")
    lines += ["", "VRAM tiers (job.vram_tier, GiB; auto = detect):"]
    for size, t in load_tiers().items():
        q = t.get("quantization", {})
        d = t.get("dataset", {})
        m = t.get("model", {})
        flags = ", ".join(k for k in ("low_vram", "layer_offloading") if m.get(k)) or "all resident"
        lines.append(f"  {size:>4}  {t.get('title', '')}")
        lines.append(f"        {flags}; transformer {q.get('transformer')}, TE {q.get('text_encoder')}; "
                     f"resolutions {d.get('resolutions')}, {d.get('num_frames')} frames")
    lines += ["", "Details: wanlora presets NAME; a starting job: wanlora presets motion --starter > job.toml"]
    return "\n".join(lines)


def _recipe(name: str) -> str:
    from wanlora.engine.config.presets import load_recipe

    rec = load_recipe(name)
    meta = rec.get("meta", {})
    lines = [f"{meta.get('title', name)} ({name}): {meta.get('description', '')}", ""]
    for label, key in (("clips", "clip_advice"), ("captions", "caption_advice"), ("trigger", "trigger_advice"),
                       ("flips", "flip_advice"), ("rank", "rank_advice"), ("timesteps", "timestep_advice"),
                       ("data", "data_advice"), ("extra", "extra_advice")):
        if meta.get(key):
            lines.append(f"  {label + ':':<11}{meta[key]}")
    lines += ["", f"# settings applied by presets/{name}.toml ([dataset] = every [[datasets]] entry)",
              _settings(rec, ("meta",))]
    return "\n".join(lines)


def _tier(size: int) -> str:
    from wanlora.engine.config.presets import load_tiers

    t = load_tiers()[size]
    return "\n".join([f"{size} GB tier: {t.get('title', '')}", f"  {t.get('advice', '')}", "",
                      f"# settings applied by presets/tiers.toml [tier.{size}]",
                      _settings(t, ("title", "advice", "step_time_factor", "min_ram_gb"))])


def starter(name: str) -> str:
    """A minimal job file for recipe ``name``: everything else comes from the recipe and the tier."""
    from wanlora.engine.config.presets import recipe_meta

    meta = recipe_meta(name)
    trig = 'trigger_word = "frung"          # replaces [trigger] in captions\n' if meta.get("trigger") == "required" else ""
    return (f'[job]\nname = "wan_i2v_{name}_v1"\npreset = "{name}"\nvram_tier = "auto"\n{trig}\n'
            f'[[datasets]]\nfolder = "/data/{name}_clips"        # {meta.get("clip_advice", "")}\n'
            f'default_caption = "{meta.get("caption_example", "")}"\n')


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config.presets import list_recipes, load_tiers

    name = (args.name or "").lower().removesuffix("gb").strip()
    if not name:
        print(_list())
        return 0
    if name in list_recipes():
        print(starter(name) if args.starter else _recipe(name), end="" if args.starter else "\n")
        return 0
    if args.starter:
        print("wanlora presets: --starter needs a recipe: motion, style or character", file=sys.stderr)
        return 2
    tiers = load_tiers()
    if name == "tiers":
        print("\n\n".join(_tier(s) for s in tiers))
        return 0
    if name.isdigit() and int(name) in tiers:
        print(_tier(int(name)))
        return 0
    print(f"wanlora presets: unknown preset {args.name!r}; use motion, style, character, tiers or one of "
          f"{', '.join(str(s) for s in tiers)}", file=sys.stderr)
    return 2
