"""Which runs produced a model: read what each stage writes next to its output, follow it back to the base model.

A model directory (an HF checkpoint) is usually the `checkpoint/` or `model/` folder of a run directory that also
holds `config.yaml` (the resolved config), `metrics.jsonl` (one JSON object per logged step) and a results JSON
(`report.json` from pretraining; `results.json` or `*_results.json` from other stages). The run directory is the
model directory itself or its parent, whichever has those files. The config names the model the stage started
from under one of `PARENT_KEYS`; following it gives the lineage: fine-tuned -> pretrained, quantized -> fine-tuned,
and so on. Relative paths in a config are tried from the working directory, then from each ancestor of the run
directory (a run records `runs/x/data` relative to where it was launched). Nothing here assumes a stage exists:
what is not on disk is simply not shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARENT_KEYS = ("base_model", "model", "init_from", "policy", "model_dir", "from_model", "teacher")
DATA_KEYS = ("data_dir",)  # token-shard directories (manifest.json): pretraining data
RUN_FILES = ("config.yaml", "metrics.jsonl", "report.json", "results.json")


@dataclass
class Stage:
    model_dir: Path  # the HF checkpoint directory
    run_dir: Path | None  # where config.yaml / metrics.jsonl / results live (None: a bare model)
    config: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # results file name -> its JSON
    parent: str | None = None  # the model spec this stage started from

    @property
    def name(self) -> str:
        return (self.run_dir or self.model_dir).name


def run_dir_of(model_dir: Path) -> Path | None:
    for d in (model_dir, model_dir.parent):
        if any((d / f).is_file() for f in RUN_FILES):
            return d
    return None


def resolve_path(value: str, run_dir: Path | None) -> Path | None:
    """A path from a config: as given (absolute or from the cwd), else relative to an ancestor of the run dir."""
    p = Path(value).expanduser()
    if p.exists():
        return p.resolve()
    if run_dir is not None and not p.is_absolute():
        for base in [run_dir, *run_dir.resolve().parents]:
            if (base / p).exists():
                return (base / p).resolve()
    return None


def _read_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for f in sorted({*run_dir.glob("report.json"), *run_dir.glob("results.json"), *run_dir.glob("*_results.json")}):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[f.name] = data
    return out


def stage_of(model_dir: str | Path) -> Stage:
    model_dir = Path(model_dir).resolve()
    run_dir = run_dir_of(model_dir)
    config: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        loaded = yaml.safe_load((run_dir / "config.yaml").read_text())
        config = loaded if isinstance(loaded, dict) else {}
    parent = next((str(config[k]) for k in PARENT_KEYS if isinstance(config.get(k), str) and config[k]), None)
    return Stage(model_dir, run_dir, config, _read_results(run_dir) if run_dir else {}, parent)


def lineage(model_dir: str | Path, max_depth: int = 8) -> list[Stage]:
    """This model's stage first, then the stage it started from, and so on (stops at a model we cannot find)."""
    from lmstack.model.loader import model_path

    stages = [stage_of(model_dir)]
    while stages[-1].parent and len(stages) < max_depth:
        here = stages[-1]
        found = resolve_path(here.parent, here.run_dir)
        try:
            parent_dir = found if found is not None and found.is_dir() else model_path(here.parent)
        except (FileNotFoundError, ValueError):
            break
        if any(s.model_dir == Path(parent_dir).resolve() for s in stages):
            break
        stages.append(stage_of(parent_dir))
    return stages


def training_data_dirs(stages: list[Stage]) -> list[Path]:
    """Token-shard directories (with manifest.json) the stages trained on."""
    dirs = []
    for s in stages:
        for key in DATA_KEYS:
            value = s.config.get(key)
            p = resolve_path(value, s.run_dir) if isinstance(value, str) and value else None
            if p is not None and (p / "manifest.json").is_file() and p not in dirs:
                dirs.append(p)
    return dirs
