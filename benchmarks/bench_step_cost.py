r"""Per-step cost of bench_robust_training's configurations, timed interleaved.

`benchmarks.bench_robust_training` reports each configuration's whole
``model.fit`` wall time as a ratio to the standard model's. On a shared,
loaded machine those ratios are noise: the trainings run one after another,
minutes apart, so a burst of load (another process, a CI run) lands on
whichever configuration happens to be training (Fast AT once came out at
0.97x PGD-10 AT, 0.65x in a quieter run). This benchmark measures the same
configurations' cost per training step instead, all of them interleaved in
one process, so that slow drifts of the machine's load hit every
configuration alike and cancel in the ratios.

What is timed. For each network (``--networks``: the digits MLP and the
digits CNN, `keras_opnorm.models.build` exactly as bench_robust_training
builds them) and threat norm (``--threat_norms``), every configuration of
bench_robust_training (``--configs``; `bench_robust_training.METHODS`,
``dd_exact`` for l2 only) is built and compiled as that bench does (Adam,
cross-entropy, accuracy metric, the main job's constants from
`keras_opnorm.experiments.compare`), its callbacks
(`bench_robust_training.method_callbacks`) attached as ``model.fit``
attaches them (``make_train_function``, then ``set_model`` /
``on_train_begin`` / ``on_epoch_begin``, which install the objective's train
step). Each model then runs one untimed warm-up epoch over the real digits
training set (batch 64, the shuffled ``tf.data`` pipeline of
`keras_opnorm.datasets.load`), so that tracing is done and the warm-started
configurations' per-example memories (``dd_warm``, ``at_persistent``) are
populated. What is timed is ``model.train_function(iterator)``, the compiled
function ``fit`` calls once per batch, on an iterator over the training
set's batches cycled with ``.repeat()`` (not one repeated batch: the
warm-start configurations see real memory hits, reported as ``warm hits``,
the fraction of the batch found in memory over the timed steps). Each
sample is ``--steps_per_sample`` steps (default: one epoch, so each sample
has the same mix of full batches and the last, smaller one), divided by the
number of steps. The configurations alternate ``A B C ..., ... C B A, A B C
...`` (`benchmarks._timing.interleave`), ``--repeats`` samples each.

Reported per network and norm: the median ms/step, the ratio of medians to
``standard`` and to ``at_pgd10``, and the interquartile range of the
per-sample ratios (both samples of a pair ran seconds apart, on nearly the
same machine: the IQR says how far the ratio can be trusted). The header
gives the machine, the date and the load average (``os.getloadavg``) before
and after. The ratios are per step; a configuration's whole training also
pays per-epoch costs (none of these has any) and the same number of steps.
Never asserted in a test.

Usage::

  python -m benchmarks.bench_step_cost --networks=mlp --output_dir=outputs/bench_step_cost/mlp
  python -m benchmarks.bench_step_cost --networks=cnn --repeats=10 --threat_norms=2
"""

import datetime
import json
import math
import os
import platform
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from benchmarks import _timing
from benchmarks import bench_robust_training as brt
from keras_opnorm import datasets
from keras_opnorm import models
from keras_opnorm.experiments import compare

# --networks, --threat_norms and --configs are bench_robust_training's flags;
# --seed, --batch_size, --learning_rate, the objectives' constants and
# --output_dir are the main job's (keras_opnorm.experiments.compare).
_REPEATS = flags.DEFINE_integer("repeats", 20, "Interleaved samples per configuration.")
_STEPS_PER_SAMPLE = flags.DEFINE_integer(
    "steps_per_sample", 0, "Train steps per sample (0: one epoch of the training set).")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).")
_XLA = flags.DEFINE_enum(
    "xla", "auto", ["auto", "on", "off"],
    "jit_compile of model.compile (auto: Keras' default, as bench_robust_training; off on CPU).")
FLAGS = flags.FLAGS

_JIT = {"auto": "auto", "on": True, "off": False}


def build(network, method, p, epsilon, cfg):
  """``(model, callbacks, iterator, steps_per_epoch)`` of one configuration, as fit sets it up."""
  arch, flatten = brt._NETWORKS[network]  # pylint: disable=protected-access
  keras.utils.set_random_seed(cfg.seed)
  train_ds, _, info = datasets.load("digits", batch_size=cfg.batch_size, seed=cfg.seed,
                                    flatten=flatten)
  model = models.build(arch, info.input_shape, info.num_classes)
  model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=_JIT[_XLA.value])
  callbacks = brt.method_callbacks(method, p, epsilon, cfg, tuple(info.input_range), cfg.seed)
  steps_per_epoch = int(train_ds.cardinality())
  # As model.fit: build the train function, then the callbacks' hooks.
  model.make_train_function()
  for cb in callbacks:
    cb.set_model(model)
    cb.on_train_begin()
  for cb in callbacks:
    cb.on_epoch_begin(0)
  iterator = iter(train_ds.repeat())
  return model, callbacks, iterator, steps_per_epoch


def _runner(model, iterator, steps, last_logs):
  """A blocking ``() -> None`` running ``steps`` train steps; keeps the last logs."""

  def run():
    for _ in range(steps):
      logs = model.train_function(iterator)
      logs["loss"].numpy()
    last_logs.clear()
    last_logs.update(logs)

  return run


def _warm_hits(logs):
  value = next((v for k, v in logs.items() if k.endswith("_warm_hits")), None)
  return None if value is None else float(value)


def measure(network, p, epsilon, methods, cfg):
  """Times ``methods`` interleaved; returns ``(per-step times, warm hits, steps)``."""
  built, fns, last = {}, {}, {}
  for m in methods:
    model, callbacks, iterator, steps_per_epoch = build(network, m, p, epsilon, cfg)
    warm = {}
    _runner(model, iterator, steps_per_epoch, warm)()  # the warm-up epoch
    for cb in callbacks:
      cb.on_epoch_end(0)
      cb.on_epoch_begin(1)  # resets the metrics: warm hits over the timed steps only
    steps = _STEPS_PER_SAMPLE.value or steps_per_epoch
    last[m] = {}
    fns[m] = _runner(model, iterator, steps, last[m])
    built[m] = (model, callbacks)
    print(f"  built and warmed up: {network} l{_p_text(p)} {m}", flush=True)
  # min_sample_s=0: each sample is exactly one call of the runner (`steps` train steps).
  times = _timing.interleave(fns, repeats=_REPEATS.value, warmup=0, min_sample_s=0.0)
  times = {m: [t / steps for t in ts] for m, ts in times.items()}
  for model, callbacks in built.values():
    for cb in callbacks:
      cb.on_train_end()
  return times, {m: _warm_hits(last[m]) for m in methods}, steps


def _p_text(p):
  return "inf" if math.isinf(p) else f"{p:g}"


def summarise(times, hits, methods):
  rows = {}
  for m in methods:
    row = {"median_ms": 1e3 * float(np.median(times[m])), "warm_hits": hits[m],
           "samples_ms": [1e3 * t for t in times[m]]}
    for ref, key in (("standard", "x_standard"), ("at_pgd10", "x_at_pgd10")):
      if ref in times:
        c = _timing.compare(times, m, ref)
        row[key], row[key + "_iqr"] = c.ratio, [c.q1, c.q3]
    rows[m] = row
  return rows


def format_table(network, p, epsilon, steps, rows):
  def ratio(r, key):
    if key not in r:
      return "n/a", "n/a"
    return f"{r[key]:.2f}", f"{r[key + '_iqr'][0]:.2f}-{r[key + '_iqr'][1]:.2f}"

  lines = [f"### {network}, l{_p_text(p)}, eps = {epsilon:g} ({steps} steps per sample)", "",
           "| configuration | ms/step | x standard | IQR | x PGD-10 AT | IQR | warm hits |",
           "|---|---|---|---|---|---|---|"]
  for m, r in rows.items():
    (xs, xs_iqr), (xa, xa_iqr) = ratio(r, "x_standard"), ratio(r, "x_at_pgd10")
    hits = "" if r["warm_hits"] is None else f"{r['warm_hits']:.3f}"
    lines.append(f"| {m}: {brt.LABELS[m]} | {r['median_ms']:.2f} | {xs} | {xs_iqr} | {xa} | "
                 f"{xa_iqr} | {hits} |")
  return "\n".join(lines + [""])


def _machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  gpus = tf.config.list_physical_devices("GPU")
  return (f"{cpu}, {os.cpu_count()} logical cores, {len(gpus)} GPU(s); "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")


def main(argv):
  del argv
  methods = [m for m in brt.METHODS if m in FLAGS.configs]
  unknown = sorted(set(FLAGS.configs) - set(brt.METHODS))
  if unknown:
    raise app.UsageError(f"--configs must be among {', '.join(brt.METHODS)}. Received: {unknown}")
  for n in FLAGS.networks:
    if n not in brt._NETWORKS:  # pylint: disable=protected-access
      raise app.UsageError(f"--networks must be among mlp, cnn. Received: {n!r}")
  if _REPEATS.value < 1 or _STEPS_PER_SAMPLE.value < 0:
    raise app.UsageError("--repeats must be >= 1 and --steps_per_sample >= 0. Received: "
                         f"--repeats={_REPEATS.value}, --steps_per_sample={_STEPS_PER_SAMPLE.value}")
  _timing.set_threads(_THREADS.value)
  cfg = compare.config_from_flags()
  output_dir = FLAGS.output_dir or "outputs/bench_step_cost"
  os.makedirs(output_dir, exist_ok=True)
  start_time = datetime.datetime.now(datetime.timezone.utc)
  load_before = os.getloadavg()
  start = time.perf_counter()
  results, tables = {}, []
  for network in FLAGS.networks:
    for p_text in FLAGS.threat_norms:
      p = float(p_text)
      epsilon = compare.default_epsilon("digits", p)
      methods_p = [m for m in methods if m != "dd_exact" or p == 2.0]
      times, hits, steps = measure(network, p, epsilon, methods_p, cfg)
      rows = summarise(times, hits, methods_p)
      key = f"{network}, l{p_text}"
      results[key] = {"epsilon": epsilon, "steps_per_sample": steps, "rows": rows}
      tables.append(format_table(network, p, epsilon, steps, rows))
      print(tables[-1], flush=True)
  seconds = time.perf_counter() - start
  load_after = os.getloadavg()
  load = lambda l: ", ".join(f"{v:.2f}" for v in l)
  header = (
      f"Per-step cost of bench_robust_training's configurations on digits (batch "
      f"{cfg.batch_size}), {_REPEATS.value} interleaved samples of model.train_function per "
      f"configuration, after one warm-up epoch; XLA {_XLA.value}, threads "
      f"{_THREADS.value or 'default'}.\n\n"
      f"Machine: {_machine()}. Run: {start_time:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s; load "
      f"average (1, 5, 15 min) {load(load_before)} before, {load(load_after)} after.\n\n"
      "ms/step: median over samples; x standard, x PGD-10 AT: ratio of medians; IQR: "
      "quartiles of the per-sample ratios; warm hits: fraction of the batch found in the "
      "warm-start memory over the timed steps.\n\n")
  print(header, flush=True)
  with open(os.path.join(output_dir, "table.md"), "w") as f:
    f.write(header + "\n".join(tables))
  with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump({"date_utc": start_time.isoformat(), "machine": _machine(),
               "loadavg_before": list(load_before), "loadavg_after": list(load_after),
               "seconds": seconds, "repeats": _REPEATS.value, "xla": _XLA.value,
               "threads": _THREADS.value, "batch_size": cfg.batch_size, "seed": cfg.seed,
               "results": results}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
