"""`lmstack pipeline`: run stages of a model's life in order, each stage's model feeding the next, one report.

    lmstack pipeline configs/pipeline_speedrun.yaml        # speedrun (pretrain) -> sft -> dpo on the CPU

A pipeline config lists stages; each names a command, its YAML config and optional overrides:

    out_dir: runs/pipeline_speedrun
    stages:
      - {name: speedrun, config: configs/speedrun_cpu.yaml}
      - {name: sft, config: configs/sft_speedrun.yaml}
      - {name: dpo, config: configs/align_dpo_speedrun.yaml, overrides: {max_steps: 60}}

Stage k runs in `<out_dir>/<k>_<name>/` (its own metrics, plots, checkpoint), with `--model` set to the model the
previous stage wrote (`checkpoint/` of pretrain / speedrun / dpo / orpo / grpo, `model/` of a full SFT, `merged/`
of a LoRA SFT with `merge: true`). After every stage `pipeline.json` records what finished, so `--resume` skips
finished stages and resumes the interrupted one from its checkpoint; Ctrl-C / SIGTERM inside a stage saves that
stage's checkpoint (the stage's own handling) and stops the pipeline with exit 130. At the end (and after each
stage) `<out_dir>/report.md` shows every stage's figures (before / after numbers, timings) and plots.
Leaves out: branching pipelines (one stage feeding several), running stages in parallel, stages whose product
is not a full model (an adapter, a reward model) feeding a later stage.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import build_config, read_config_file
from lmstack.common.log import info
from lmstack.common.signals import interruptible

# command -> (module, config class, the model it writes, relative to its out_dir)
STAGES: dict[str, tuple[str, str, str]] = {
    "speedrun": ("lmstack.train.speedrun", "SpeedrunConfig", "checkpoint"),
    "pretrain": ("lmstack.train.pretrain", "PretrainConfig", "checkpoint"),
    "sft": ("lmstack.finetune.sft", "SFTConfig", "model"),
    "reward": ("lmstack.align.reward", "RewardConfig", "checkpoint"),
    "dpo": ("lmstack.align.dpo", "DPOConfig", "checkpoint"),
    "orpo": ("lmstack.align.orpo", "ORPOConfig", "checkpoint"),
    "grpo": ("lmstack.align.grpo", "GRPOConfig", "checkpoint"),
}
PLOTS = ("loss.png", "curves.png")  # the plots a stage may write, shown in the report


@dataclass
class PipelineConfig:
    out_dir: str = "runs/pipeline"  # one directory per stage (<k>_<name>/), pipeline.json, report.md
    # the stages, in order: {name: a command of STAGES, config: its YAML file, overrides: {field: value}}
    stages: list[dict[str, Any]] = field(default_factory=list)
    resume: bool = False  # skip the stages that finished, resume the interrupted one from its checkpoint
    overwrite: bool = False  # start over: every stage runs with --overwrite

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("--stages: a pipeline needs at least one stage ({name, config[, overrides]})")
        for k, stage in enumerate(self.stages):
            unknown = set(stage) - {"name", "config", "overrides"}
            if unknown or "name" not in stage:
                raise ValueError(f"stages[{k}]: expected keys name, config, overrides; got {sorted(stage)}")
            if stage["name"] not in STAGES:
                raise ValueError(f"stages[{k}].name: {stage['name']!r} is not one of {', '.join(STAGES)}")
            if stage.get("config") and not Path(stage["config"]).is_file():
                raise FileNotFoundError(f"stages[{k}].config: no such file: {stage['config']}")
            if k > 0 and stage["name"] in ("speedrun", "pretrain"):
                raise ValueError(f"stages[{k}]: {stage['name']} trains from scratch; it can only be the first stage")
            if k < len(self.stages) - 1 and stage["name"] == "reward":
                raise ValueError(f"stages[{k}]: a reward model cannot feed a later stage; put reward last")


def stage_config(cfg: PipelineConfig, k: int, model: str | None, resume: bool) -> Any:
    """The k-th stage's config: its YAML, its overrides, then what the pipeline sets (out_dir, model, flags)."""
    stage = cfg.stages[k]
    module, cls_name, _ = STAGES[stage["name"]]
    cls = getattr(importlib.import_module(module), cls_name)
    values = read_config_file(stage["config"]) if stage.get("config") else {}
    values.update(stage.get("overrides") or {})
    values.update(out_dir=str(stage_dir(cfg, k)), resume=resume, overwrite=cfg.overwrite and not resume)
    if model is not None:
        values["model"] = model
    return build_config(cls, values, where=f"stages[{k}] ({stage['name']})")


def stage_dir(cfg: PipelineConfig, k: int) -> Path:
    return Path(cfg.out_dir) / f"{k + 1}_{cfg.stages[k]['name']}"


def run_stage(name: str, stage_cfg: Any) -> dict[str, Any]:
    """Run one stage; return its result (figures) or {"stopped": True, "interrupted": ...}."""
    module = importlib.import_module(STAGES[name][0])
    if name == "speedrun":  # the speedrun writes its figures to report.json
        code = module.main(stage_cfg)
        if code:
            return {"stopped": True, "interrupted": code == 130}
        return json.loads((Path(stage_cfg.out_dir) / "report.json").read_text())
    return module.train(stage_cfg)


def figures(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numbers of a stage's result, nested dicts flattened to `before.pref_accuracy` style keys."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict) and key not in ("config", "timings", "data", "tokenizer"):
            out.update(figures(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def write_report(cfg: PipelineConfig, done: list[dict[str, Any]]) -> Path:
    """report.md + report.json: one section per finished stage with its figures and plots."""
    out = Path(cfg.out_dir)
    md = [
        f"# Pipeline report: {out.name}",
        "",
        "| # | stage | config | model written | wall s |",
        "|---|---|---|---|---|",
    ]
    for k, d in enumerate(done):
        model = Path(d["model"])
        shown = model.relative_to(out) if model.is_relative_to(out) else model  # stage dirs: relative to the report
        md.append(f"| {k + 1} | {d['name']} | `{d['config']}` | `{shown}` | {d['wall_s']:.0f} |")
    for k, d in enumerate(done):
        md += ["", f"## {k + 1}. {d['name']}", "", "| figure | value |", "|---|---|"]
        md += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
               for key, value in d["figures"].items()]  # fmt: skip
        for plot in PLOTS:
            if (stage_dir(cfg, k) / plot).is_file():
                md += ["", f"![{d['name']} {plot}]({stage_dir(cfg, k).name}/{plot})"]
    atomic_write_text(out / "report.json", json.dumps({"stages": done}, indent=1) + "\n")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path


def main(cfg: PipelineConfig) -> int:
    out = Path(cfg.out_dir)
    record = out / "pipeline.json"
    if record.exists() and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"--out_dir: {out} holds a pipeline ({record}); pass --resume to continue or --overwrite")
    done: list[dict[str, Any]] = json.loads(record.read_text())["done"] if cfg.resume and record.exists() else []
    out.mkdir(parents=True, exist_ok=True)
    model = done[-1]["model"] if done else None
    path = write_report(cfg, done)
    for k in range(len(done), len(cfg.stages)):
        name = cfg.stages[k]["name"]
        resume = cfg.resume and (stage_dir(cfg, k) / "checkpoint").exists()
        stage_cfg = stage_config(cfg, k, model if k > 0 else None, resume)
        info(f"pipeline: stage {k + 1}/{len(cfg.stages)} {name} -> {stage_dir(cfg, k)}")
        t0 = time.perf_counter()
        with interruptible():
            result = run_stage(name, stage_cfg)
        if result.get("stopped"):
            info(f"pipeline: stage {name} stopped; `lmstack pipeline ... --resume` continues it")
            return 130 if result.get("interrupted") else 0
        model = str(stage_output(name, stage_cfg))
        done.append({"name": name, "config": cfg.stages[k].get("config", ""), "model": model,
                     "wall_s": time.perf_counter() - t0, "figures": figures(result)})  # fmt: skip
        atomic_write_text(record, json.dumps({"done": done}, indent=1) + "\n")
        path = write_report(cfg, done)
    print(f"stages={len(done)} model={model} report={path}")
    return 0


def stage_output(name: str, stage_cfg: Any) -> Path:
    """Where a finished stage's model is: `model/` or `merged/` of SFT, else its checkpoint."""
    out = Path(stage_cfg.out_dir)
    if name == "sft" and stage_cfg.method != "full":
        if not getattr(stage_cfg, "merge", False):
            raise ValueError(f"an SFT stage with method={stage_cfg.method} writes an adapter; set merge: true so the "
                             "next stage gets a full model")  # fmt: skip
        return out / "merged"
    return out / STAGES[name][2]
