"""Scaling-law fit recovers known parameters; the compute-optimal allocation obeys its closed form; a 2x2 sweep."""

from __future__ import annotations

import json

import pytest

from lmstack.train.scaling import ScalingConfig, compute_optimal, fit, predict

TRUE = {"E": 1.8, "A": 60.0, "B": 250.0, "alpha": 0.35, "beta": 0.3}


def test_fit_recovers_known_parameters():
    ns = [2e4, 5e4, 1e5, 3e5, 1e6]
    ds = [1e5, 3e5, 1e6, 3e6, 1e7]
    grid = [(n, d) for n in ns for d in ds]
    losses = [predict(TRUE, n, d) for n, d in grid]
    p = fit([n for n, _ in grid], [d for _, d in grid], losses)
    for k in TRUE:
        assert p[k] == pytest.approx(TRUE[k], rel=0.02), (k, p[k], TRUE[k])


def test_compute_optimal_is_the_minimum_on_the_isoflop_line():
    c = 1e15
    opt = compute_optimal(TRUE, c)
    assert 6 * opt["n_opt"] * opt["d_opt"] == pytest.approx(c)
    for f in (0.5, 0.8, 1.25, 2.0):  # moving along 6 N D = C in either direction costs loss
        n = opt["n_opt"] * f
        assert predict(TRUE, n, c / 6 / n) > opt["loss"]
    # equal exponents and A = B give N_opt = D_opt
    assert compute_optimal({**TRUE, "A": 100.0, "B": 100.0, "alpha": 0.3}, c)["tokens_per_param"] == pytest.approx(1.0)


@pytest.mark.parametrize("kw, flag", [(dict(models=["4-128"]), "--models"), (dict(budgets=[10]), "--budgets")])
def test_bad_values_name_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        ScalingConfig(**kw)


def test_toy_sweep_2x2(tiny_data, tmp_path, monkeypatch):
    # the sweep on the tiny shard directory instead of the real corpus (corpus_shards is the step it skips)
    import lmstack.train.scaling as scaling

    monkeypatch.setattr(scaling, "corpus_shards", lambda *a, **k: (None, None, None))
    out = tmp_path / "sweep"
    (out / "data").parent.mkdir(parents=True)
    (out / "data").symlink_to(tiny_data, target_is_directory=True)
    cfg = ScalingConfig(out_dir=str(out), models=["1x32", "2x64"], budgets=[2048, 4096], seq_len=32, batch_size=8,
                        dtype="float32", eval_tokens=512)  # fmt: skip
    assert scaling.main(cfg) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["model"], r["budget"]) for r in results} == {("1x32", 2048), ("1x32", 4096), ("2x64", 2048),
                                                             ("2x64", 4096)}  # fmt: skip
    assert all(r["d"] == r["budget"] for r in results)
    fitted = json.loads((out / "fit.json").read_text())
    assert set(fitted["fit"]) >= {"E", "A", "B", "alpha", "beta"} and len(fitted["frontier"]) == 3
    assert (out / "scaling.png").stat().st_size > 1000 and "tokens / param" in (out / "report.md").read_text()
    # the sweep resumes: a second call trains nothing new and refits the same results
    assert scaling.main(cfg) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
