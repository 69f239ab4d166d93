r"""How far below the NP-hard (p,q) operator norms `operator_norm` lands, and at what cost.

On the main job's models (``keras_opnorm.experiments.compare``'s 8x8-digits
MLP trained with ``--p=inf --epsilon=0.1``: standard, PGD adversarial
training, d.d. operator-norm regularisation; `compare.train`, seed 0), for
the first ``--examples`` test inputs and the pairs ``(inf, 2)`` (the l-inf
table's), ``(inf, 1)`` and ``(3, 3)`` (a ``p -> p`` pair), it compares

* ``old``: ``method='power'``, one random start, 20 iterations (the default
  of versions before the multi-start ascent);
* ``new``: the default ``method='auto'`` (multi-start ascent on the exact
  Jacobian, see `keras_opnorm.operator_norm`);

against a strong lower bound computed in numpy (float64) from the exact
Jacobian: the best of ``2 min(d, n)`` deterministic starts (``s_p`` of the
right singular vectors and of the rows) and ``--lower_bound_starts`` random
ones, each refined by 60 power iterations and, for ``p = inf``, a greedy
single-coordinate vertex search, four rounds. Every value is ``||J v||_q``
at a feasible ``v``: a valid lower bound. For ``(inf, 1)`` the lower bound
is also compared with the exact value ``max_{u in {+-1}^d} ||J^T u||_1``
(``2^(d-1)`` sign vectors), and for ``(inf, 2)`` and ``(3, 3)`` with a
cheap upper bound (``min(sqrt(n) sigma_1, sqrt(sum_i ||J_i||_1^2))``,
Riesz-Thorin), to show the gap. The cost is the ratio of the median wall
times of ``new`` and ``old`` (interleaved, see `benchmarks._timing`). Never
asserted: these machines are noisy.

Usage::

  python -m benchmarks.bench_operator_norm_bounds
  python -m benchmarks.bench_operator_norm_bounds --examples=100 --models=standard
"""

import itertools
import math
import os
import tempfile

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from benchmarks import _timing
from keras_opnorm import _jacobian_matrix
from keras_opnorm import datasets
from keras_opnorm import jacobian
from keras_opnorm.experiments import compare
from keras_opnorm.operator_norm import operator_norm

_INF = float("inf")
_EXAMPLES = flags.DEFINE_integer("examples", 300, "Test inputs per model.")
_LB_STARTS = flags.DEFINE_integer("lower_bound_starts", 200,
                                  "Random starts of the numpy lower bound.")
_METHODS = flags.DEFINE_list("models", ["standard", "adversarial", "opnorm"],
                             "compare.py methods to train (seed 0, p = inf, eps = 0.1).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timing samples.")
_CACHE = flags.DEFINE_string("cache_dir", None, "Where trained models are kept between runs "
                             "(default: a temporary folder).")
_PAIRS = ((_INF, 2.0), (_INF, 1.0), (3.0, 3.0))


def _dual(p):
  return _INF if p == 1.0 else (1.0 if math.isinf(p) else p / (p - 1.0))


def _norm(z, p):
  a = np.abs(z)
  return a.max(-1) if math.isinf(p) else (a ** p).sum(-1) ** (1.0 / p)


def _s(g, p):
  """s_p over the last axis (1 < p <= inf)."""
  if math.isinf(p):
    return np.sign(g)
  h = np.sign(g) * np.abs(g) ** (_dual(p) - 1.0)
  n = _norm(h, p)[..., None]
  return np.where(n > 0, h / np.where(n > 0, n, 1.0), 0.0)


def _power(jac, v, p, q, iters):
  for _ in range(iters):
    z = v @ jac.T
    u = np.sign(z) if q == 1.0 else _s(z, _dual(q))
    g = u @ jac
    v = np.where(np.abs(g).max(-1, keepdims=True) > 0, _s(g, p), v)
  return v


def _vertex_search(jac, v, q):
  """Greedy best single-coordinate move v_j -> +-1 until none improves (p = inf)."""
  v = v.copy()
  rows = np.arange(len(v))
  for _ in range(10 * jac.shape[1]):
    z = v @ jac.T
    best, where, to = _norm(z, q), np.full(len(v), -1), np.zeros(len(v))
    for t in (-1.0, 1.0):
      val = _norm(z[:, None, :] + (t - v)[:, :, None] * jac.T[None], q)  # [S, n]
      k = val.argmax(1)
      better = val[rows, k] > best * (1 + 1e-12)
      best = np.where(better, val[rows, k], best)
      where, to = np.where(better, k, where), np.where(better, t, to)
    moved = np.nonzero(where >= 0)[0]
    if not len(moved):
      break
    v[moved, where[moved]] = to[moved]
  return v


def lower_bound(jac, p, q, num_random, rng):
  """A strong lower bound of ||J||_{p,q} (float64): see the module docstring."""
  d, n = jac.shape
  vt = np.linalg.svd(jac)[2]
  starts = [_s(vt[i], p) for i in range(min(d, n))] + [_s(jac[i], p) for i in range(d)]
  z = rng.normal(size=(num_random, n))
  v = np.concatenate([np.array(starts), z / _norm(z, p)[:, None]])
  for _ in range(4):
    v = _power(jac, v, p, q, 60)
    if math.isinf(p):
      v = _vertex_search(jac, v, q)
  return _norm(v @ jac.T, q).max()


def reference(jac, p, q):
  """The exact (inf, 1) norm, else a cheap upper bound."""
  d, n = jac.shape
  if math.isinf(p) and q == 1.0:
    u = np.array(list(itertools.product([-1.0, 1.0], repeat=d - 1)))
    u = np.concatenate([np.ones((len(u), 1)), u], 1)
    return np.abs(u @ jac).sum(1).max()
  if math.isinf(p) and q == 2.0:
    s1 = np.linalg.svd(jac, compute_uv=False)[0]
    return min(math.sqrt(n) * s1, math.sqrt((np.abs(jac).sum(1) ** 2).sum()))
  return np.abs(jac).sum(0).max() ** (1 / p) * np.abs(jac).sum(1).max() ** (1 - 1 / p)


def trained_models(methods, cache_dir):
  cfg = compare.Config(p=_INF, q=2.0, epsilon=0.1, verbose=0, output_dir=cache_dir)
  x, _, info = datasets.load_arrays("digits", split="test", seed=cfg.seed, flatten=True)
  models = {}
  for method in methods:
    path = os.path.join(cache_dir, f"{method}.keras")
    if os.path.exists(path):
      models[method] = keras.models.load_model(path)
    else:
      models[method], _ = compare.train(method, cfg, info, True)
      models[method].save(path)
  return models, x


def _row(ratios):
  r = np.asarray(ratios)
  return f"{r.mean():.4f} | {r.min():.4f} | {np.mean(r >= 0.98):.3f}"


def main(argv):
  del argv
  cache = _CACHE.value or tempfile.mkdtemp(prefix="bench_opnorm_bounds_")
  models, x = trained_models(_METHODS.value, cache)
  x = tf.constant(x[:_EXAMPLES.value])
  print("Ratios estimate / lower bound (LB); LB / reference: the exact value for (inf,1), "
        "else an upper bound.")
  print("| model | (p,q) | LB / reference | old mean | old worst | old >= 0.98 | new mean "
        "| new worst | new >= 0.98 | cost new/old (IQR) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for method, model in models.items():
    fn = jacobian.as_logits_fn(model, False)
    d = _jacobian_matrix.num_logits(fn, x)
    jac = _jacobian_matrix.full_jacobian(fn, x, d, int(x.shape[1])).numpy().astype(np.float64)
    for p, q in _PAIRS:
      rng = np.random.default_rng(0)
      lbs = np.array([lower_bound(j, p, q, _LB_STARTS.value, rng) for j in jac])
      ref = np.array([reference(j, p, q) for j in jac])
      old = tf.function(lambda x, p=p, q=q: operator_norm(model, x, p, q, method="power").norm)
      new = tf.function(lambda x, p=p, q=q: operator_norm(model, x, p, q).norm)
      r_old, r_new = old(x).numpy() / lbs, new(x).numpy() / lbs
      times = _timing.interleave({"old": _timing.blocking(old, x), "new": _timing.blocking(new, x)},
                                 repeats=_REPEATS.value, min_sample_s=0.05)
      cost = _timing.compare(times, "new", "old")
      kind = "exact" if math.isinf(p) and q == 1.0 else "upper"
      pq = f"({'inf' if math.isinf(p) else f'{p:g}'},{q:g})"
      print(f"| {method} | {pq} | {np.mean(lbs / ref):.3f} ({kind}; min {np.min(lbs / ref):.3f}) "
            f"| {_row(r_old)} | {_row(r_new)} | {cost.ratio:.2f} ({cost.spread}) |", flush=True)


if __name__ == "__main__":
  app.run(main)
