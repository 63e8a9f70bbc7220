"""The ablation tables' statistics and figure against values worked out by hand, the physical-space head, and the
checks ``dspose experiment lsp-*`` makes before it trains anything."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dspose_graph.models import create_model
from dspose_graph.train.ablation import ABLATIONS, prepare_run, recipe_path, run_ablation
from dspose_graph.train.ablation_report import (METRIC, RunResult, compare, gap_budget, mean_std, paired_difference,
                                                plot_curves, render_markdown, seeds_needed, t_quantile)
from dspose_graph.train.config import load_config

T2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom


def _run(row: str, seed: int, final: float, curve: list[tuple[int, float]] | None = None, swap: float = 5.0,
         ) -> RunResult:
    curve = curve or [(10, final / 2), (20, final)]
    return RunResult(row=row, seed=seed, steps=curve[-1][0], params=1000, ms_per_step=12.0,
                     metrics={METRIC: final, "swap": swap, f"{METRIC}/head_top": final + 1},
                     curve=[{"global_step": s, METRIC: v, "swap": swap, "train_loss": 1.0} for s, v in curve])


def test_mean_std_and_t_quantile():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]) == (7.0, None) and mean_std([]) == (None, None)
    assert t_quantile(2) == pytest.approx(T2) and t_quantile(1000) == pytest.approx(1.962, abs=1e-3)


def test_paired_difference_helps_hurts_and_cannot_tell():
    ref = {0: 50.0, 1: 52.0, 2: 54.0}
    # differences 3, 2, 4: mean 3, sd 1, half width 4.3027 / sqrt(3) = 2.4841
    seeds, diffs, mean, ci, verdict = paired_difference({0: 53.0, 1: 54.0, 2: 58.0, 5: 99.0}, ref)
    assert seeds == [0, 1, 2] and diffs == [3.0, 2.0, 4.0] and mean == 3.0
    assert ci == pytest.approx((3 - T2 / math.sqrt(3), 3 + T2 / math.sqrt(3))) and ci[0] == pytest.approx(0.51586, 1e-4)
    assert verdict == "helps"
    assert paired_difference({0: 47.0, 1: 50.0, 2: 50.0}, ref)[4] == "hurts"  # -3, -2, -4
    # differences 1, -1, 3: mean 1, sd 2, half width 4.9683: the interval holds 0
    _, _, mean, ci, verdict = paired_difference({0: 51.0, 1: 51.0, 2: 57.0}, ref)
    assert mean == 1.0 and ci == pytest.approx((1 - 2 * T2 / math.sqrt(3), 1 + 2 * T2 / math.sqrt(3)))
    assert verdict == "cannot tell at this budget"
    assert paired_difference({0: 51.0}, ref)[4].startswith("cannot tell (one paired seed")
    assert paired_difference({7: 51.0}, ref)[4].startswith("not comparable yet")


def test_seeds_needed():
    # mean 1, sd 2: t(16) * 2 / sqrt(17) = 1.028 > 1 but t(17) * 2 / sqrt(18) = 0.9946 < 1
    assert seeds_needed(1.0, 2.0) == 18
    assert seeds_needed(-1.0, 2.0) == 18 and seeds_needed(0.0, 2.0) is None and seeds_needed(1.0, 0.0) == 2
    assert seeds_needed(0.001, 10.0) is None  # more than 1000 seeds


def test_gap_budget_extrapolates_a_widening_gap():
    # Paired differences at step 100: -1, 0, 1 (mean 0); at step 1000: 1, 2, 3 (mean 2, sd 1). The fit is
    # d(s) = 2 log10(s / 100); it reaches the half width T2 / sqrt(3) at s = 100 * 10 ** (T2 / sqrt(3) / 2).
    ref = [(100, 10.0), (1000, 20.0)]
    curves = {s: ([{"global_step": st, METRIC: v + (d if st == 100 else d + 2)} for st, v in ref],
                  [{"global_step": st, METRIC: v} for st, v in ref]) for s, d in zip(range(3), (-1, 0, 1))}
    steps, why = gap_budget(curves)
    assert why == "extrapolated" and steps == pytest.approx(100 * 10 ** (T2 / math.sqrt(3) / 2), rel=1e-9)
    assert steps == pytest.approx(1746.0, abs=1.0)
    # The other way: differences 1, 2, 3 at step 100 and -1, 0, 1 at step 1000, a gap that closes.
    narrowing = {s: ([{"global_step": 100, METRIC: 11.0 + s}, {"global_step": 1000, METRIC: 19.0 + s}],
                     [{"global_step": st, METRIC: v} for st, v in ref]) for s in range(3)}
    steps, why = gap_budget(narrowing)
    assert steps is None and "does not widen" in why


def test_compare_and_the_page_say_the_verdict_and_what_would_separate_the_rows(tmp_path):
    results = [_run("mlp", s, v) for s, v in enumerate((50.0, 52.0, 54.0))]
    results += [_run("dual", s, v) for s, v in enumerate((53.0, 54.0, 58.0))]
    results += [_run("feature", s, v, curve=[(10, v - 10), (20, v)]) for s, v in enumerate((51.0, 51.0, 57.0))]
    comparisons = {c.row: c for c in compare(results, ["mlp", "feature", "dual"], "mlp")}
    assert comparisons["dual"].verdict == "helps" and comparisons["dual"].estimate == ""
    feature = comparisons["feature"]
    assert feature.verdict == "cannot tell at this budget" and feature.estimate.startswith("~18 seeds at this budget")
    ablation = ABLATIONS["lsp-table5"]
    labels = {r.name: r.label for r in ablation.rows}
    page = render_markdown("Heads", "Which head?", ["mlp", "feature", "physical", "dual"], "mlp", results, labels,
                           {"mlp": 74.7, "dual": 75.1}, 20, [0, 1, 2], "dspose experiment lsp-table5",
                           ["physical seed0: not run yet"])
    assert "| Feature-A + Physical-A (DSPose) | 3 | 55.0 +- 2.6 | +3.0 [+0.5, +5.5] | helps | 5.0 +- 0.0 | 0.001 " \
           "| 12 | 75.1 |" in page
    assert "| MLP (TokenPose) | 3 | 52.0 +- 2.0 | reference |" in page
    assert "| Physical-A graph | 0 | - | - | not comparable yet" in page
    assert "To separate them: ~18 seeds at this budget" in page and "- physical seed0: not run yet" in page
    assert "| row | head_top |" in page and "| MLP (TokenPose) | 53.0 |" in page


def test_curves_figure_draws_the_seed_mean_and_its_range(tmp_path):
    results = [_run("mlp", 0, 40.0, [(10, 10.0), (20, 30.0), (30, 40.0)]),
               _run("mlp", 1, 44.0, [(10, 14.0), (20, 20.0), (30, 44.0)]),
               _run("dual", 0, 50.0, [(10, 12.0), (20, 35.0), (30, 50.0)])]
    path = tmp_path / "figs" / "curves.png"
    drawn = plot_curves(results, ["mlp", "dual"], {"mlp": "MLP", "dual": "dual"}, path, "heads")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    np.testing.assert_allclose(drawn["mlp"]["steps"], [10, 20, 30])
    np.testing.assert_allclose(drawn["mlp"]["mean"], [12.0, 25.0, 42.0])
    np.testing.assert_allclose(drawn["mlp"]["low"], [10.0, 20.0, 40.0])
    np.testing.assert_allclose(drawn["mlp"]["high"], [14.0, 30.0, 44.0])
    np.testing.assert_allclose(drawn["dual"]["mean"], drawn["dual"]["high"])  # one seed: no band


def test_physical_head_uses_the_body_graph_alone():
    torch.manual_seed(0)
    model = create_model("dspose_t", schema="lsp", head="physical")
    dual = create_model("dspose_t", schema="lsp", head="dual")
    assert model.head.p is None and "head.p" not in dict(model.named_parameters())
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(dual) - n_params(model) == 1  # the dual head's p
    heatmaps, adjacency = model(torch.randn(2, 3, 128, 96), return_adjacency=True)
    assert heatmaps.shape == (2, 14, 32, 24)
    a_p = model.head.a_p
    expected = a_p / a_p.sum(-1, keepdim=True)  # dspose_t row-normalises A_m
    for a_m, a_f in zip(adjacency["A_m"], adjacency["A_f"]):
        torch.testing.assert_close(a_m, expected.expand(2, 14, 14))
        assert not a_f.any()
    torch.testing.assert_close(adjacency["A_p"], a_p)


def test_the_runner_refuses_bad_requests_before_training(tmp_path):
    with pytest.raises(ValueError, match="lsp-table5 has no row 'gcn'; valid: mlp, feature, physical, dual"):
        run_ablation("lsp-table5", tmp_path, rows=["gcn"])
    with pytest.raises(ValueError, match="unknown ablation 'lsp-table9'"):
        run_ablation("lsp-table9", tmp_path)
    with pytest.raises(ValueError, match="--seeds 0,0: give distinct seeds"):
        run_ablation("lsp-table5", tmp_path, seeds=[0, 0])
    with pytest.raises(ValueError, match="--set model.overrides.head=mlp: model.overrides.head is what lsp-table5"):
        run_ablation("lsp-table5", tmp_path, overrides=["model.overrides.head=mlp"])
    assert not any(tmp_path.iterdir())


def test_rows_differ_only_in_their_overrides_and_seed(tmp_path):
    recipe = load_config(recipe_path())
    for ablation in ABLATIONS.values():
        assert ablation.reference in {r.name for r in ablation.rows}
        configs = [prepare_run(recipe, ablation, row, 1, tmp_path, steps=50) for row in ablation.rows]
        for row, config in zip(ablation.rows, configs):
            assert config.model.overrides == {**recipe.model.overrides, **row.overrides} and config.run.seed == 1
            assert config.optim.max_steps == config.optim.epochs == 50
            assert config.run.out_dir == str(tmp_path / row.name / "seed1")
            same = dict(vars(config.optim)), config.data, config.eval, config.model.init_from
            assert same == (dict(vars(configs[0].optim)), configs[0].data, configs[0].eval, configs[0].model.init_from)
    assert recipe.optim.max_steps == 3000 and recipe.model.init_exclude == ["head."] and recipe.optim.milestones == []
    # The project's LSP recipe: the same model, start, data and optimiser settings.
    lsp = load_config(recipe_path().parent / "dspose_t_lspet.yaml")
    assert (recipe.model.name, recipe.model.overrides, recipe.model.init_from) == \
        (lsp.model.name, lsp.model.overrides, lsp.model.init_from)
    assert (recipe.data, recipe.optim.lr, recipe.optim.batch_size, recipe.optim.grad_clip, recipe.optim.precision) == \
        (lsp.data, lsp.optim.lr, lsp.optim.batch_size, lsp.optim.grad_clip, lsp.optim.precision)


def test_an_mlp_model_starts_from_a_graph_models_body():
    from dspose_graph.models.checkpoint import load_checkpoint
    from dspose_graph.models.transfer import init_from_checkpoint
    from dspose_graph.weights import resolve_weights

    path = resolve_weights("dspose_t_synthetic")
    source = load_checkpoint(path)["state_dict"]
    assert "head.p" in source  # a dual-head checkpoint
    torch.manual_seed(0)
    model = create_model("dspose_t", schema="lsp", head="mlp")
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    init_from_checkpoint(model, path, exclude=["head."])
    own = model.state_dict()
    for k, v in own.items():
        if k.startswith("head."):
            torch.testing.assert_close(v, fresh[k])
        elif k.startswith("backbone."):
            torch.testing.assert_close(v, source[k], msg=k)


def test_command_line_options_belong_to_their_kind_of_table(tmp_path, capsys):
    from dspose_graph.cli.main import main

    out = ["--out", str(tmp_path)]
    assert main(["experiment", "lsp-table5", "--epochs", "3", *out]) == 2
    assert "--epochs is for the paper tables; lsp-table5 has a step budget (--steps)" in capsys.readouterr().err
    assert main(["experiment", "table5", "--steps", "30", *out]) == 2
    assert "--steps is for the lsp-* ablations" in capsys.readouterr().err
    assert main(["experiment", "lsp-table5", "--steps", "0", *out]) == 2
    assert "--steps 0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["experiment", "lsp-table5", "--seeds", "0,x", *out])
    assert "expected whole numbers separated by commas" in capsys.readouterr().err
    assert main(["experiment", "list"]) == 0
    listing = capsys.readouterr().out
    assert "lsp-table5: mlp, feature, physical, dual (LSPET, reference mlp)" in listing
    assert "lsp-convs: dspose, gcn, gat, gatv2, graphconv, sage, transformer (LSPET, reference dspose)" in listing
    assert not any(tmp_path.iterdir())


def test_precision_auto_is_decided_once_and_kept_by_later_commands(tmp_path):
    from dspose_graph.train.ablation import pin_precision

    ablation = ABLATIONS["lsp-table5"]
    recipe = load_config(recipe_path())
    assert recipe.optim.precision == "auto" and recipe.eval.precision == "auto"
    saved = tmp_path / "dual" / "seed0" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text("optim: {precision: bf16}\neval: {precision: bf16}\n")
    configs = {(row.name, 0): prepare_run(recipe, ablation, row, 0, tmp_path) for row in ablation.rows}
    pin_precision(configs, tmp_path)
    assert {(c.optim.precision, c.eval.precision) for c in configs.values()} == {("bf16", "bf16")}
    saved.unlink()
    configs = {(row.name, 0): prepare_run(recipe, ablation, row, 0, tmp_path) for row in ablation.rows}
    pin_precision(configs, tmp_path)  # measured here: one answer for all rows
    pinned = {(c.optim.precision, c.eval.precision) for c in configs.values()}
    assert pinned in ({("fp32", "fp32")}, {("bf16", "bf16")})
