"""Interleaved wall-clock timing for noisy, shared machines.

Timing all runs of one function and then all runs of another confounds the
comparison with whatever else the machine does meanwhile (other processes,
frequency scaling): a burst of load during the second block shows up as a
"slow" second function. `interleave` instead alternates the functions within
every repeat, ``A B C, C B A, A B C, ...`` (the order reversed every other
repeat, so neither function always runs first or right after the same
other one), and keeps every sample. `compare` then reports

* the ratio of the medians, ``median(A) / median(B)``, robust to the
  outliers that load bursts cause; and
* the spread of the per-repeat ratios ``A_i / B_i`` (their interquartile
  range): both runs of a repeat saw nearly the same machine, so this spread
  says how far the ratio itself can be trusted.

Each sample times ``number`` back-to-back calls (chosen so that a sample
lasts about ``min_sample_s``) and divides by ``number``: short samples, many
of them, so that the median lands in the machine's quiet moments.
"""

import math
import statistics
import time

import numpy as np
import tensorflow as tf

__all__ = ["set_threads", "blocking", "interleave", "compare", "Comparison"]


def set_threads(threads):
  """Sets TensorFlow's intra- and inter-op thread pools (0: leave the default).

  Call before any TensorFlow op runs. One thread makes timings on a shared
  machine less sensitive to the other processes competing for the cores.
  """
  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def blocking(fn, *args):
  """``() -> None`` calling ``fn(*args)`` and waiting for every output tensor."""

  def run():
    for t in tf.nest.flatten(fn(*args)):
      if hasattr(t, "numpy"):
        t.numpy()

  return run


def _calls_per_sample(fn, min_sample_s):
  start = time.perf_counter()
  fn()
  once = time.perf_counter() - start
  return max(1, math.ceil(min_sample_s / max(once, 1e-6)))


def interleave(fns, *, repeats, warmup=2, min_sample_s=0.01):
  """Times the callables in ``fns`` interleaved; returns per-call seconds.

  Args:
    fns: dict ``name -> callable()`` that blocks until its work is done (see
      `blocking`).
    repeats: number of samples per function.
    warmup: untimed calls per function first (tracing, compilation, caches).
      Defaults to `2`.
    min_sample_s: each sample runs the function enough times back to back to
      last about this long. Defaults to `0.01`.

  Returns:
    dict ``name -> list`` of ``repeats`` per-call times in seconds; the i-th
    entries of all lists come from the same repeat.
  """
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      fns[name]()
  number = {name: _calls_per_sample(fns[name], min_sample_s) for name in names}
  times = {name: [] for name in names}
  for r in range(repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
      fn, n = fns[name], number[name]
      start = time.perf_counter()
      for _ in range(n):
        fn()
      times[name].append((time.perf_counter() - start) / n)
  return times


class Comparison:
  """``median(a) / median(b)`` and the quartiles of the paired ratios ``a_i / b_i``."""

  def __init__(self, a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    self.median_a = float(statistics.median(a))
    self.median_b = float(statistics.median(b))
    self.ratio = self.median_a / self.median_b
    self.q1, self.q3 = (float(v) for v in np.percentile(a / b, [25, 75]))

  @property
  def spread(self):
    """``"q1-q3"`` of the per-repeat ratios, two decimals."""
    return f"{self.q1:.2f}-{self.q3:.2f}"


def compare(times, a, b):
  """`Comparison` of ``times[a]`` against ``times[b]`` (see `interleave`)."""
  return Comparison(times[a], times[b])
