"""Tests of benchmarks/bench_robust_training.py: its arithmetic, and a tiny end-to-end run."""

import json
import os
import types

from absl.testing import flagsaver
import pytest

from benchmarks import bench_robust_training as brt


def _run(seconds, robust, clean=0.9):
  return {"train_seconds": seconds, "clean_accuracy": clean, "robust_accuracy": robust}


def test_summarise_takes_time_ratios_seed_by_seed():
  # Ratios are per seed, then averaged: (20/10 + 60/20) / 2 = 2.5, not 80/30.
  runs = {"standard": [_run(10, 0.0), _run(20, 0.0)],
          "at_pgd10": [_run(20, 0.5), _run(60, 0.7)],
          "dd_k1": [_run(5, 0.49), _run(20, 0.69)]}
  rows = brt.summarise(runs, ["standard", "at_pgd10", "dd_k1"])
  assert rows["at_pgd10"]["time_x_standard"][0] == pytest.approx(2.5)
  assert rows["at_pgd10"]["time_x_standard"][1] == pytest.approx(0.5)
  assert rows["dd_k1"]["time_x_at"][0] == pytest.approx((0.25 + 1 / 3) / 2)
  assert rows["at_pgd10"]["robust_accuracy"] == pytest.approx((0.6, 0.1))


@pytest.mark.parametrize("robust, seconds, verdict", [
    (0.59, 8, "holds"),    # -1 point at 0.4x: both limits met
    (0.579, 8, "fails"),   # -2.1 points
    (0.70, 8.1, "fails"),  # more robust, but 0.405x the time
])
def test_goal_verdict_applies_both_limits(robust, seconds, verdict):
  runs = {"at_pgd10": [_run(20, 0.6)], "dd_k1": [_run(seconds, robust)]}
  rows = brt.summarise(runs, ["at_pgd10", "dd_k1"])
  assert brt.goal_verdict(rows).endswith(verdict)


def test_goal_verdict_without_at_says_so():
  rows = brt.summarise({"dd_k1": [_run(1, 0.5)]}, ["dd_k1"])
  assert "not evaluated" in brt.goal_verdict(rows)


def test_warm_configurations_are_warm_started():
  cfg = types.SimpleNamespace(at_weight=1.0, opnorm_weight=0.1)
  (at,) = brt.method_callbacks("at_persistent", 2.0, 1.0, cfg, (0.0, 1.0), 0)
  assert (at.objective.warm_start, at.objective.num_steps) == (True, 2)
  (dd,) = brt.method_callbacks("dd_warm", 2.0, 1.0, cfg, (0.0, 1.0), 0)
  assert (dd.objective.warm_start, dd.objective.num_iters) == (True, 1)
  (cold,) = brt.method_callbacks("dd_k1", 2.0, 1.0, cfg, (0.0, 1.0), 0)
  assert not cold.objective.warm_start


def test_goal_verdict_covers_the_warm_started_configuration():
  runs = {"at_pgd10": [_run(20, 0.6)], "dd_warm": [_run(8, 0.59)]}
  rows = brt.summarise(runs, ["at_pgd10", "dd_warm"])
  assert brt.goal_verdict(rows) == ("dd_warm: robust 0.590 vs AT 0.600 (-1.0 pts), "
                                    "time 0.40x AT -> holds")


def test_unknown_configuration_is_refused():
  with pytest.raises(ValueError, match="method='pgd'"):
    brt.method_callbacks("pgd", 2.0, 1.0, None, (0.0, 1.0), 0)


@pytest.mark.slow
def test_tiny_run_writes_table_json_and_plot(tmp_path):
  out = str(tmp_path)
  with flagsaver.flagsaver(networks=["mlp"], threat_norms=["inf"], configs=["standard", "fast_at", "dd_warm"],
                           num_seeds=1, epochs=1, eval_examples=16, evaluation="fast",
                           output_dir=out):
    brt.main([])
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  summary = results["results"]["mlp, linf"]["summary"]
  assert summary["standard"]["time_x_standard"][0] == pytest.approx(1.0)
  assert 0.0 <= summary["fast_at"]["robust_accuracy"][0] <= summary["fast_at"]["clean_accuracy"][0]
  assert results["results"]["mlp, linf"]["runs"]["dd_warm"][0]["warm_hits"] == [0.0]  # 1 epoch
  assert os.path.getsize(os.path.join(out, "robust_vs_time.png")) > 0
  assert "time x PGD-10 AT" in open(os.path.join(out, "table.md")).read()
