"""The cost model and the planner CLI: the crossover N* is the first N where the shared path is no dearer, by seconds
and by FLOPs; a device without measured costs is a clear error."""
from __future__ import annotations

import json

import pytest

from planning.flops import Architecture, encoder_flops
from planning.costs import CostModel, plan
from jobs import plan as plan_cli


def costs_file(tmp_path, **over):
    arch = {"layers": 6, "hidden": 384, "intermediate": 1536}
    d = {"format_version": 1, "dim": 384, "measured": {"date": "test", "machine": "test"},
         "architectures": {"shared": arch, "teacher": arch, "student": arch | {"layers": 2}},
         "devices": {"cpu": {"seconds_per_text": {"shared": [1e-3, 1e-4, 1e-7], "teacher": [1e-3, 1e-4, 1e-7],
                                                  "student": [4e-4, 3.5e-5, 3e-8]},
                             "head_seconds_per_text": 2e-8, "fixed_seconds": {"embed": 20.0, "apply": 10.0}}}}
    d.update(over)
    p = tmp_path / "costs.json"
    p.write_text(json.dumps(d))
    return p


def test_crossover_is_the_first_n_where_shared_is_no_dearer(tmp_path):
    model = CostModel.load(costs_file(tmp_path))
    for tokens in (20.0, 60.0, 200.0):
        p = plan(model, "cpu", 1, 1e6, tokens)
        brute = next(n for n in range(1, 1000) if plan(model, "cpu", n, 1e6, tokens).seconds["shared"]
                     <= plan(model, "cpu", n, 1e6, tokens).seconds["student"])
        assert p.crossover_seconds == brute
        brute_f = next(n for n in range(1, 1000) if plan(model, "cpu", n, 1e6, tokens).flops["shared"]
                       <= plan(model, "cpu", n, 1e6, tokens).flops["student"])
        assert p.crossover_flops == brute_f
    p = plan(model, "cpu", 12, 5e6, 60)
    # FLOPs: one 6-layer pass + 12 heads against 12 two-layer passes (+ their heads)
    enc = 5e6 * encoder_flops(Architecture(6, 384, 1536), 60)
    assert p.flops["shared"] == pytest.approx(enc + 12 * 5e6 * 2 * 384 * 4)
    assert p.flops["student"] == pytest.approx(12 * (enc / 3 + 5e6 * 2 * 384 * 4))
    assert p.storage_bytes == {"binary": 5e6 * 48, "int8": 5e6 * 384, "fp16": 5e6 * 768, "fp32": 5e6 * 1536}


def test_no_crossover_when_a_student_is_cheaper_than_a_head(tmp_path):
    model = CostModel.load(costs_file(tmp_path))
    dev = model.devices["cpu"]
    cheap = CostModel(model.architectures, {"cpu": type(dev)({**dev.seconds_per_text, "student": (0.0, 0.0, 0.0)},
                                                              1e-3, {"embed": 0.0, "apply": 0.0})}, 384, {})
    assert plan(cheap, "cpu", 5, 1e3, 30).crossover_seconds is None


def test_planner_cli_prints_both_paths_and_refuses_an_unmeasured_device(tmp_path, capsys):
    p = costs_file(tmp_path)
    assert plan_cli.main(["--tasks", "12", "--texts-per-day", "5e6", "--mean-tokens", "60", "--costs", str(p)]) == 0
    out = capsys.readouterr().out
    assert "12 per-task students (2 layers)" in out and "crossover N* (seconds):" in out and "binary 240.00 MB" in out
    assert plan_cli.main(["--tasks", "3", "--texts-per-day", "1e6", "--mean-tokens", "40", "--device", "gpu",
                          "--costs", str(p)]) == 2
    assert "no costs measured for device 'gpu'" in capsys.readouterr().err


def test_planner_without_measured_costs_says_how_to_measure_them(tmp_path, capsys):
    assert plan_cli.main(["--tasks", "3", "--texts-per-day", "1e6", "--mean-tokens", "40", "--costs",
                          str(tmp_path / "none.json")]) == 2
    assert "bench/costs.py --write" in capsys.readouterr().err


def test_a_length_distribution_costs_the_mean_of_its_texts_not_the_cost_of_its_mean(tmp_path):
    import numpy as np

    model = CostModel.load(costs_file(tmp_path))
    lengths = np.array([10, 10, 10, 250])                       # mean 70, one long text
    p = plan(model, "cpu", 4, 1e6, lengths)
    one = [plan(model, "cpu", 4, 1e6, float(t)) for t in lengths]
    for path in ("shared", "student", "teacher"):
        assert p.seconds[path] == pytest.approx(np.mean([q.seconds[path] for q in one]))
        assert p.flops[path] == pytest.approx(np.mean([q.flops[path] for q in one]))
    assert p.tokens == 70.0
    at_mean = plan(model, "cpu", 4, 1e6, 70.0)
    assert p.seconds["shared"] > at_mean.seconds["shared"]     # attention: convex in length
    with pytest.raises(ValueError, match="tokens >= 3"):
        plan(model, "cpu", 4, 1e6, np.array([12, 2]))


def test_the_committed_costs_load_and_the_planner_uses_them_by_default(capsys):
    """docs/costs.json (written by bench/costs.py --write) is the planner's default: it must stay
    loadable, hold CPU costs for all three paths, and carry its check against a measured run."""
    model = CostModel.load(plan_cli.DEFAULT_COSTS)
    cpu = model.device("cpu")
    for path in ("shared", "student", "teacher"):
        assert cpu.encoder_seconds(path, 64) > cpu.encoder_seconds(path, 16) > 0
    assert model.architectures["student"].layers < model.architectures["shared"].layers
    check = json.loads(plan_cli.DEFAULT_COSTS.read_text())["planner_check"]
    assert abs(check["predicted_seconds"] / check["measured_seconds"] - 1) <= 0.25
    assert plan_cli.main(["--tasks", "12", "--texts-per-day", "5e6", "--mean-tokens", "60"]) == 0
    assert "12 per-task students" in capsys.readouterr().out
