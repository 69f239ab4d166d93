"""Pass-count cost model: the exact Jacobian or the power method?

Both ways of getting the top direction ``v`` of a per-example Jacobian
``J [d, n]`` are counted in units of one forward + backward pass of the
batch (``fb``):

* **exact** (`keras_opnorm._jacobian_matrix.full_jacobian`): ``m = min(d, n)``
  products (``d`` reverse-mode rows or ``n`` forward-mode columns) on stacked
  copies of the batch, in ``ceil(m / 32)`` passes of ``ceil(m / passes)``
  copies each (the last padded)::

    exact = passes * size * EXACT_PER_COPY + passes * EXACT_PER_PASS

  A stacked copy costs less than a pass of its own (bigger matrix products);
  differentiating the result (an outer tape through ``J``) doubles it.
* **power** (``K = num_iters`` iterations): one forward pass with tangents and
  one backward pass per iteration, one forward pass with tangents for the
  final ``J v_K``, and a fixed overhead (the random start, the norms)::

    power = K * POWER_PER_ITER + POWER_FINAL + POWER_OVERHEAD

  differentiating the result adds the backward pass of the final ``J v_K``.

Calibration (``EXACT_PER_COPY`` etc.): ``operator_norm(method='exact')``
against ``method='power'`` with ``num_iters`` = 1, 10, 20 and a plain
forward + backward pass, (2, 2), batch 128, float32, no XLA, one TensorFlow
thread, interleaved in one process (`benchmarks/_timing.py`, 7 repeats,
medians), on the digits MLP (``models.mlp((64,), d)``, 64-256-256-d) and
``models.small_cnn((8, 8, 1), d)``; 2-core shared x86 CPU (load ~2.5),
2026-12-02. Time of the exact path over K = 20 / K = 10 power iterations::

  d        10          30          60          100
  MLP   0.27 / 0.51  0.94 / 1.80  2.18 / 3.86  3.10 / 5.61
  CNN   0.25 / 0.45  0.54 / 0.99  1.32 / 2.54  2.87 / 4.73

Measured crossover: ``d ~ 30-45`` logits against 20 iterations, ``d ~ 17-30``
against 10. In ``fb`` units the exact path cost 0.7-1.0 per logit (0.85
taken), a power iteration 1.1-1.4 (1.2 taken) and one iteration in all ~3.0;
the model's crossovers are ``d = 29`` (K = 20) and ``d = 15`` (K = 10). On an
accelerator stacked copies are relatively cheaper still (the exact path's
crossover moves up): the model then errs towards the power method.
"""

__all__ = ["pass_counts", "path_costs", "cheaper_path", "crossover"]

# Copies of the batch per stacked pass (= _jacobian_matrix.MAX_COPIES_PER_PASS).
COPIES_PER_PASS = 32
# Costs in forward + backward passes of the batch (see the module docstring).
EXACT_PER_COPY = 0.85
EXACT_PER_PASS = 0.5
POWER_PER_ITER = 1.2
POWER_FINAL = 0.6
POWER_OVERHEAD = 1.0


def pass_counts(d, n):
  """``(passes, copies_per_pass)`` of the exact Jacobian of ``J [d, n]``.

  ``m = min(d, n)`` products split into equal passes of at most
  ``COPIES_PER_PASS`` copies (as `_jacobian_matrix.full_jacobian` does).

  >>> pass_counts(100, 64)
  (2, 32)
  >>> pass_counts(10, 64)
  (1, 10)
  """
  m = min(int(d), int(n))
  passes = -(-m // COPIES_PER_PASS)
  return passes, -(-m // passes)


def path_costs(d, n, *, num_iters, differentiate=False):
  """``(exact, power)`` costs in forward + backward passes of the batch.

  Args:
    d: the number of logits.
    n: the input size.
    num_iters: the power iterations ``K``.
    differentiate: whether the result is differentiated by an outer tape
      (training through the norm). Defaults to `False`.

  Returns:
    A pair of floats (see the module docstring for the formulas).
  """
  passes, size = pass_counts(d, n)
  exact = passes * size * EXACT_PER_COPY + passes * EXACT_PER_PASS
  power = num_iters * POWER_PER_ITER + POWER_FINAL + POWER_OVERHEAD
  if differentiate:
    exact *= 2.0
    power += 2.0 * POWER_FINAL
  return exact, power


def cheaper_path(d, n, *, num_iters, p=2, q=2, differentiate=False, exactness_premium=1.0):
  """``'exact'`` or ``'power'``: the path to the top direction of ``J [d, n]``.

  ``'exact'`` when ``exact_cost <= exactness_premium * power_cost``
  (`path_costs`). Only (2, 2) is decided by cost: there the power method
  converges to the global maximum (the top singular vector), so both paths
  give the same answer up to convergence. The other closed-form pairs
  (``(1, q)``, ``(p, inf)``, ``(p, 1)``) get ``'exact'``: their power
  method is a local ascent whose fixed point can be far below the maximum,
  so no iteration count buys the closed form's answer.

  Args:
    d: the number of logits (> 0).
    n: the input size (> 0).
    num_iters: the power iterations ``K`` (> 0).
    p: the input exponent. Defaults to `2`.
    q: the output exponent. Defaults to `2`.
    differentiate: whether the result is differentiated. Defaults to
      `False`.
    exactness_premium: how many times the power method's cost the exact
      path may cost and still be chosen (> 0; 1: the cheaper one).
      Defaults to `1.0`.

  Returns:
    ``'exact'`` or ``'power'``.

  Raises:
    ValueError: for non-positive ``d``, ``n``, ``num_iters`` or
      ``exactness_premium``.

  >>> cheaper_path(10, 64, num_iters=20)
  'exact'
  >>> cheaper_path(100, 64, num_iters=20)
  'power'
  """
  for name, value in (("d", d), ("n", n), ("num_iters", num_iters)):
    if int(value) != value or value <= 0:
      raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
  if not exactness_premium > 0:
    raise ValueError(f"`exactness_premium` must be > 0. Received: "
                     f"exactness_premium={exactness_premium!r}")
  if not (float(p) == 2.0 and float(q) == 2.0):
    return "exact"
  exact, power = path_costs(d, n, num_iters=num_iters, differentiate=differentiate)
  return "exact" if exact <= exactness_premium * power else "power"


def crossover(n, *, num_iters, differentiate=False, exactness_premium=1.0):
  """The largest ``d`` for which (2, 2) takes ``'exact'`` (0 if none; ``d <= n``)."""
  best = 0
  for d in range(1, min(int(n), 4096) + 1):
    if cheaper_path(d, n, num_iters=num_iters, differentiate=differentiate,
                    exactness_premium=exactness_premium) == "exact":
      best = d
  return best

