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
    assert cpu.measured_backends() == ("torch", "onnx", "onnx_int8")
    for backend in cpu.measured_backends():
        for path in ("shared", "student", "teacher"):
            assert cpu.encoder_seconds(path, 64, backend) > cpu.encoder_seconds(path, 16, backend) > 0
    assert model.architectures["student"].layers < model.architectures["shared"].layers
    check = json.loads(plan_cli.DEFAULT_COSTS.read_text())["planner_check"]
    assert abs(check["predicted_seconds"] / check["measured_seconds"] - 1) <= 0.25
    assert plan_cli.main(["--tasks", "12", "--texts-per-day", "5e6", "--mean-tokens", "60"]) == 0
    assert "12 per-task students" in capsys.readouterr().out


def with_backends(tmp_path, backends: dict, **over):
    """The synthetic costs file with ``devices.cpu.backends`` added (the layout bench/costs.py --write writes)."""
    d = json.loads(costs_file(tmp_path, **over).read_text())
    d["devices"]["cpu"]["backends"] = backends
    p = tmp_path / "costs_backends.json"
    p.write_text(json.dumps(d))
    return p


def halved(tmp_path) -> dict:
    cpu = json.loads(costs_file(tmp_path).read_text())["devices"]["cpu"]["seconds_per_text"]
    return {"onnx": {"seconds_per_text": {k: [x / 2 for x in v] for k, v in cpu.items()}}}


def test_a_backend_prices_every_encoder_path_at_its_own_seconds(tmp_path):
    model = CostModel.load(with_backends(tmp_path, halved(tmp_path)))
    fixed = 20.0 + 10.0
    torch_p = plan(model, "cpu", 12, 5e6, 60)
    onnx_p = plan(model, "cpu", 12, 5e6, 60, backend="onnx")
    assert (torch_p.backend, onnx_p.backend) == ("torch", "onnx")
    heads = 12 * 5e6 * 2e-8
    assert onnx_p.seconds["shared"] - fixed - heads == pytest.approx((torch_p.seconds["shared"] - fixed - heads) / 2)
    for path in ("student", "teacher"):                      # per-task models on the same backend: like with like
        assert onnx_p.seconds[path] - 12 * 20.0 == pytest.approx((torch_p.seconds[path] - 12 * 20.0) / 2)
    assert onnx_p.encoder_seconds_per_million == pytest.approx(torch_p.encoder_seconds_per_million / 2)
    assert torch_p.encoder_seconds_per_million == pytest.approx(1e6 * (1e-3 + 1e-4 * 60 + 1e-7 * 3600))
    assert onnx_p.flops == torch_p.flops                      # a backend changes seconds, never FLOPs
    brute = next(n for n in range(1, 1000) if plan(model, "cpu", n, 5e6, 60, backend="onnx").seconds["shared"]
                 <= plan(model, "cpu", n, 5e6, 60, backend="onnx").seconds["student"])
    assert onnx_p.crossover_seconds == brute


def test_an_unmeasured_or_unknown_backend_is_refused_naming_what_is_measured(tmp_path, capsys):
    model = CostModel.load(with_backends(tmp_path, halved(tmp_path)))
    with pytest.raises(ValueError, match=r"backend 'onnx_int8' \(measured: \['torch', 'onnx'\]\).*bench/costs.py "
                                         r"--write"):
        plan(model, "cpu", 3, 1e6, 40, backend="onnx_int8")
    with pytest.raises(ValueError, match=r"backend 'tensorrt' \(measured: \['torch', 'onnx'\]\)"):
        plan(model, "cpu", 3, 1e6, 40, backend="tensorrt")
    p = costs_file(tmp_path)
    assert plan_cli.main(["--tasks", "3", "--texts-per-day", "1e6", "--mean-tokens", "40", "--backend", "onnx",
                          "--costs", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cpu costs measured for backend 'onnx' (measured: ['torch'])" in err
    with pytest.raises(ValueError, match=r"backends\.torch: torch's costs are devices\.cpu\.seconds_per_text"):
        CostModel.load(with_backends(tmp_path, {"torch": halved(tmp_path)["onnx"]}))
    with pytest.raises(ValueError, match="format_version = 2; this planner reads"):
        CostModel.load(costs_file(tmp_path, format_version=2))


def test_a_costs_file_without_backends_still_plans_for_torch(tmp_path):
    """A file written before the backends existed (no devices.cpu.backends) plans for torch as it always did."""
    old = CostModel.load(costs_file(tmp_path))
    assert old.device("cpu").measured_backends() == ("torch",)
    new = CostModel.load(with_backends(tmp_path, halved(tmp_path)))
    assert plan(old, "cpu", 12, 5e6, 60) == plan(new, "cpu", 12, 5e6, 60)


def test_the_cli_prices_each_measured_backend_of_the_committed_costs(capsys):
    """End to end on docs/costs.json: every backend plans, the header names it, onnx_int8 < onnx < torch per 1M texts,
    and --json carries the backend."""
    per_million = {}
    for backend in ("torch", "onnx", "onnx_int8"):
        assert plan_cli.main(["--tasks", "12", "--texts-per-day", "5e6", "--mean-tokens", "60", "--backend",
                              backend]) == 0
        out = capsys.readouterr().out
        assert f"device cpu, backend {backend} (costs measured" in out
        line = next(x for x in out.splitlines() if x.startswith("cost per 1M texts"))
        assert f"backend {backend})" in line and "CPU-hours (2 threads)" in line
        assert plan_cli.main(["--tasks", "12", "--texts-per-day", "5e6", "--mean-tokens", "60", "--backend",
                              backend, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["backend"] == backend
        per_million[backend] = got["encoder_seconds_per_million"]
    assert per_million["onnx_int8"] < per_million["onnx"] < per_million["torch"]
