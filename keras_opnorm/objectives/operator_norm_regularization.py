"""Data-dependent (p,q) operator norm regularisation (d.d. SNR for p = q = 2).

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527):
with ``v`` the output of ``K`` (p,q) power iterations on the input-output
Jacobian ``J = J_f(x)`` of each example (held constant), the term::

  sum of squares:  lambda/2 * ||f(x + eps v) - f(x)||_q^2
  Jacobian:        lambda/2 * eps^2 * (u^T J v)^2,    u = s_{q*}(J v)

The two agree inside a linear region of ``f`` (ReLU networks, small eps),
where ``f(x + eps v) - f(x) = eps J v`` and ``u^T J v = ||J v||_q``; the
paper's ``lambda~`` of the Jacobian form is ``lambda * eps^2``.
"""

import keras
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import _cost
from keras_opnorm import _jacobian_matrix
from keras_opnorm import jacobian
from keras_opnorm import norms
from keras_opnorm.objectives import _example_memory
from keras_opnorm.objectives import _forward
from keras_opnorm.objectives import base
from keras_opnorm.objectives.adversarial_training import logit_distance
from keras_opnorm.operator_norm import MAX_VERTEX_LOGITS
from keras_opnorm.operator_norm import closed_form
from keras_opnorm.operator_norm import operator_norm

__all__ = [
    "OperatorNormRegularization",
    "OPERATOR_NORM_FORMS",
    "DIRECTIONS",
    "sum_of_squares_penalty",
    "jacobian_penalty",
]

OPERATOR_NORM_FORMS = ("sum_of_squares", "jacobian")
DIRECTIONS = ("power", "exact", "auto")


def sum_of_squares_penalty(logits_perturbed, logits, *, q=2):
  """Per-example ``1/2 * ||f(x + eps v) - f(x)||_q^2`` (Roth et al. 2020, Sec. 5).

  The numerically stable form used for the paper's experiments;
  differentiable with respect to both arguments, gradient 0 at equality.

  Args:
    logits_perturbed: ``[batch, d]`` logits at ``x + eps v``.
    logits: ``[batch, d]`` clean logits ``f(x)``.
    q: the output norm exponent in ``[1, inf]``. Defaults to `2`.

  Returns:
    Float32 tensor ``[batch]``.

  Example:

  >>> float(sum_of_squares_penalty(tf.constant([[3.0, 4.0]]), tf.zeros([1, 2]))[0])
  12.5
  """
  return 0.5 * logit_distance(logits_perturbed, logits, q=q, squared=True)


def jacobian_penalty(jv, *, q=2):
  """Per-example ``1/2 * (u^T J v)^2`` with ``u = s_{q*}(J v)`` held constant.

  ``u^T J v = ||J v||_q`` (``<s_{q*}(z), z> = ||z||_q``); the gradient with
  respect to the weights is ``(u^T J v) * u^T d(J v)``, the power method's
  output direction ``u`` weighting the Jacobian-vector product.

  Args:
    jv: ``[batch, d]`` Jacobian-vector products ``J v`` (differentiable).
    q: the output norm exponent in ``[1, inf]``. Defaults to `2`.

  Returns:
    Float32 tensor ``[batch]``.

  Example:

  >>> float(jacobian_penalty(tf.constant([[3.0, -4.0]]))[0])
  12.5
  """
  q = _checks.exponent(q, "q")
  jv = tf.cast(jv, tf.float32)
  u = tf.stop_gradient(norms.steepest_ascent(jv, norms.dual_exponent(q)))
  return 0.5 * tf.square(tf.reduce_sum(u * jv, axis=-1))


@keras.saving.register_keras_serializable(package="keras_opnorm.objectives")
class OperatorNormRegularization(base.Objective):
  """Data-dependent (p,q) operator norm regularisation of ``J_f(x)``.

  Per batch, ``v`` (``||v||_p = 1`` per example) comes from ``num_iters``
  (p,q) power iterations on each example's Jacobian at ``x``
  (`keras_opnorm.operator_norm`, method ``'power'``, in inference mode unless
  ``power_training``), or with ``direction='exact'`` from the closed form on
  the exact Jacobian (for (2, 2) the top right singular vector of ``J``,
  built from ``min(d, n)`` batched products), under ``stop_gradient``;
  then::

    'sum_of_squares'  l_i = 1/2 * ||f(x_i + eps v_i) - f(x_i)||_q^2
    'jacobian'        l_i = 1/2 * eps^2 * (u_i^T J_i v_i)^2,  u_i = s_{q*}(J_i v_i)
    loss = weight * sum_i w_i l_i / batch_size

  For p = q = 2 this is data-dependent spectral norm regularisation (d.d.
  SNR). Inside a linear region both forms equal
  ``weight/2 * eps^2 * ||J v||_q^2``: the Jacobian form with ``weight`` and
  ``epsilon`` is the paper's ``lambda~/2 * (u^T J v)^2`` with
  ``lambda~ = weight * eps^2`` (pass ``epsilon=1`` to set ``lambda~``
  directly). The Jacobian form's ``J v`` is computed inside the train step's
  tape, so the term is differentiable in the weights; it always uses the
  double-backward product ``J v = d/dz <J^T z, v>``: a forward-mode product
  differentiated by an outer tape makes XLA treat the weights as
  compile-time constants and recompile the step after every update
  (measured with benchmarks/bench_training.py on the 64-256-256-10 MLP:
  about 0.6 s per step against 4 ms).

  ``f(x)`` is the train step's clean prediction ``y_pred``. The pass at
  ``x + eps v`` (and the Jacobian form's pass at ``x``) runs with
  ``training=forward_training`` (default True: batch norm normalises with
  batch statistics, consistent with ``y_pred``) without moving batch-norm
  statistics unless ``update_batch_stats``; with ``forward_training=False``
  the clean logits are recomputed in inference mode.

  Direction: ``'power'`` (``num_iters`` iterations, a lower bound that
  converges to the top singular vector for (2, 2) at the rate
  ``(sigma_2 / sigma_1)^(2K)``), ``'exact'`` (only for the pairs with a
  closed form: ``(2, 2)``, ``(1, q)``, ``(p, inf)``, ``(p, 1)`` with at most
  12 logits; the penalty is then ``weight/2 * eps^2 * ||J||_{p,q}^2`` in a
  linear region) or ``'auto'``: the exact direction where the pass-count
  cost model (`keras_opnorm._cost.cheaper_path`, premium 1) finds it
  cheaper than ``num_iters`` power iterations (on a 2-core CPU: ``d <= 15``
  logits for 10 iterations, e.g. a 10-class classifier), the power method
  otherwise and for the pairs without a closed form. The direction only
  chooses ``v``: the penalty and its gradient are the same computation.
  Measured (whole train step with CE, batch 128, 10 classes, one thread of
  a 2-core CPU, interleaved, 2026-12-02): ``'exact'`` takes 0.65x the step
  time of ``'power'`` with K = 10 on the digits MLP and 0.49x on
  ``models.small_cnn``. The default stays ``'power'`` (the paper's
  computation, and the main job's results) until the robust-accuracy
  benchmark (``benchmarks/bench_robust_training.py``, ``dd_exact``) has
  compared them.

  Warm start (``warm_start=True``): each training example's ``v``
  persists from one epoch to the next, so that ``num_iters`` (typically 1)
  iterations per step continue the power method where the example's last
  visit left it instead of restarting it (the persistent power-iteration
  vector of Miyato et al.'s spectral normalisation, per example)::

    v0_i = memory[x_i] if x_i was stored, else a random direction
    v_i  = K power iterations from v0_i   (v0_i re-normalised to ||v0_i||_p = 1)
    memory[x_i] <- v_i

  Over epochs ``e = 1..E`` with K = 1 an example's ``v`` is then ``E``
  power iterations on a Jacobian that drifts with the weights.
  Examples are recognised by a 64-bit fingerprint of their content, so an
  unchanged ``model.fit(x, y, shuffle=True)`` or ``tf.data`` pipeline works;
  an augmented (changed) input, an unseen or an evicted example starts at
  random, never from another example's ``v``. The memory is a direct-mapped
  cache of ``warm_start_capacity`` slots (default 65536), ``(capacity + 1) *
  (4 n + 12)`` bytes for ``n`` input values (17.6 MB for 64 inputs, 805 MB
  for 32x32x3), refused above ``warm_start_max_bytes`` (1 GiB) before it is
  allocated; about ``exp(-N / capacity)`` of ``N`` distinct examples hit per
  epoch. The design and its reasons: `keras_opnorm.objectives._example_memory`.
  The memory is the objective's state (``ObjectiveCallback(backup_dir=...)``
  backs it up; the model and ``model.save`` do not see it); one replica only.
  It is created in ``build`` for a model with one input of static shape
  (Sequential, functional), else at the first step from the batch (a
  subclassed or multi-input model; a backup of such a memory cannot be
  restored into a new objective before its first step).
  ``direction='exact'`` has no iteration to continue and refuses it; with
  ``'auto'``, a step that takes the exact path neither reads nor writes the
  memory. Measured (benchmarks/bench_robust_training.py, ``dd_warm``
  against ``dd_k1`` (fresh K = 1), digits MLP, 30 epochs, 3 seeds,
  auto_attack 'standard', shared 2-core CPU machine, 2026-12-02; results in
  docs/results/bench_robust_training/mlp): 97.7-98.1% hits per epoch from
  epoch 2 on (1437 examples, 65536 slots); robust accuracy l2 (eps 1)
  0.134 +- 0.012 against 0.127 +- 0.008, l-inf (eps 0.1) 0.819 +- 0.018
  against 0.805 +- 0.016 (PGD-10 AT: 0.209 and 0.803); the steady-state
  step time is that of K = 1 within noise (interleaved, 19.7-26.4 ms cold,
  21.5-27.9 ms warm on the 64-256-256-10 MLP, batch 64), the memory's
  lookup and update alone 0.8 ms per step under XLA.

  Metrics: ``{name}`` (the mean power-method estimate of ``||J_f(x)||_{p,q}``
  over the batch), ``{name}_loss`` (``sum_i w_i l_i / batch_size``, so
  that ``loss = weight * {name}_loss``) and, with ``warm_start``,
  ``{name}_warm_hits`` (the fraction of the batch whose ``v`` came from the
  memory: 0 in the first epoch, about ``exp(-N / capacity)`` after).

  Args:
    epsilon: the radius ``eps > 0`` (a float or a variable; schedulable).
    p: the input norm. Defaults to `2`.
    q: the output norm. Defaults to `2`.
    weight: ``lambda >= 0`` (a float or a variable; schedulable). Defaults to
      `2e-2` (the paper's CIFAR-10 value with ``eps = 1.75``).
    num_iters: power iterations per step. Defaults to `10` (the paper's).
    direction: ``'power'``, ``'exact'`` or ``'auto'`` (see above). Defaults
      to `'power'`.
    form: ``'sum_of_squares'`` or ``'jacobian'``. Defaults to
      `'sum_of_squares'`.
    warm_start: continue each example's power iteration across epochs
      (see above). Defaults to `False`.
    warm_start_capacity: slots of the warm-start memory (> 0). Defaults to
      `None` (65536).
    warm_start_max_bytes: the bound on the memory's size in bytes. Defaults
      to `2**30` (1 GiB).
    power_training: the ``training`` flag of the power iterations. Defaults
      to `False`.
    forward_training: the ``training`` flag of the penalty's forward pass.
      Defaults to `True`.
    update_batch_stats: let that pass update batch-norm moving statistics.
      Defaults to `False`.
    jvp_mode: ``'forward'`` or ``'double_backward'`` Jacobian-vector
      products of the power iterations. Defaults to `'forward'`.
    name: metric prefix. Defaults to `"opnorm"`.
    **kwargs: ``output``, ``inputs``, ``from_logits`` for models with
      several outputs or inputs, or probability outputs (see
      `keras_opnorm.LogitsView`).

  Raises:
    ValueError: for ``epsilon`` or ``weight`` given as a variable or tensor
      whose value is invalid (checked at construction; the value read in
      the step is asserted, an InvalidArgumentError in a graph, NaN loss
      under XLA); in the step, for NaN / inf in ``x`` (under XLA the loss and
      the ``{name}`` metric are NaN).
    ValueError: for ``epsilon <= 0``, ``weight < 0``, ``num_iters <= 0``,
      ``p`` or ``q`` < 1, an unknown ``form``, ``direction`` or ``jvp_mode``,
      ``direction='exact'`` for a pair without a closed form or with
      ``warm_start=True``, a ``warm_start_capacity`` that is not a positive
      integer, a ``warm_start_max_bytes`` <= 0, a memory above it; in
      ``build`` for a model that outputs probabilities, or ``warm_start``
      under a strategy with several replicas; in the step, for inputs of
      another shape or dtype than the memory was built for.

  Example:

  ```python
  objective = OperatorNormRegularization(epsilon=1.75, weight=2e-2)
  objective.build(model)
  loss, metrics = objective(model, x, y, model(x, training=True))
  ```

  References: Roth, Kilcher & Hofmann, NeurIPS 2020
  (https://arxiv.org/abs/1906.01527); warm start: Miyato et al., ICLR 2018
  (https://arxiv.org/abs/1802.05957), Zheng et al., CVPR 2020
  (https://arxiv.org/abs/1912.11969).
  """

  default_name = "opnorm"

  def __init__(self,
               epsilon,
               p=2,
               q=2,
               weight=2e-2,
               num_iters=10,
               form="sum_of_squares",
               direction="power",
               warm_start=False,
               power_training=False,
               forward_training=True,
               update_batch_stats=False,
               jvp_mode="forward",
               warm_start_capacity=None,
               warm_start_max_bytes=_example_memory.DEFAULT_MAX_BYTES,
               name=None,
               **kwargs):
    super().__init__(name=name, **kwargs)
    # A variable's current value is checked too (its later values in the step).
    self._add_hyperparameter("epsilon", _checks.positive_float(epsilon, "epsilon"),
                             _checks.positive_float)
    self._add_hyperparameter("weight", _checks.nonnegative_float(weight, "weight"),
                             _checks.nonnegative_float)
    self.p = _checks.exponent(p, "p")
    self.q = _checks.exponent(q, "q")
    self.num_iters = _checks.positive_int(num_iters, "num_iters")
    if form not in OPERATOR_NORM_FORMS:
      raise ValueError(f"`form` must be one of {OPERATOR_NORM_FORMS}. Received: form={form!r}")
    self.form = form
    if direction not in DIRECTIONS:
      raise ValueError(f"`direction` must be one of {DIRECTIONS}. Received: "
                       f"direction={direction!r}")
    if direction == "exact" and closed_form(self.p, self.q) is None:
      raise ValueError(
          f"`direction='exact'` needs a closed form of the (p, q) operator norm, "
          f"which exists for (2, 2), (1, q), (p, inf) and (p, 1) only (use "
          f"direction='power' or 'auto'). Received: direction='exact' with "
          f"p={self.p}, q={self.q}")
    self.direction = direction
    self.warm_start, self.warm_start_capacity, self.warm_start_max_bytes = (
        _example_memory.check_arguments(warm_start, warm_start_capacity,
                                        warm_start_max_bytes))
    if self.warm_start and direction == "exact":
      raise ValueError(
          "`warm_start=True` continues the power iteration, and "
          "direction='exact' has none (its v is exact every step): use "
          "direction='power' or warm_start=False. Received: warm_start=True, "
          "direction='exact'")
    self._memory = None
    self.power_training = bool(power_training)
    self.forward_training = bool(forward_training)
    self.update_batch_stats = bool(update_batch_stats)
    if jvp_mode not in jacobian.JVP_MODES:
      raise ValueError(f"`jvp_mode` must be one of {jacobian.JVP_MODES}. Received: "
                       f"jvp_mode={jvp_mode!r}")
    self.jvp_mode = jvp_mode

  @property
  def metric_names(self):
    names = (self.name, f"{self.name}_loss")
    return names + (f"{self.name}_warm_hits",) if self.warm_start else names

  def _build_state(self, model):
    _example_memory.build_for(self, model)

  def call(self, model, x, y, y_pred, sample_weight=None):
    del y
    x = _checks.float_input(x, "x")
    method, max_dim = self._method(model, x)
    warm = self.warm_start and method == "power"
    v0 = None
    if warm:  # Zero rows (misses) start at random in `operator_norm`.
      memory = _example_memory.memory_for(self, x)
      key = _example_memory.fingerprint(x)
      v0, hit = memory.lookup(key)
      v0 = tf.cast(v0, x.dtype)
    result = operator_norm(
        model, x, self.p, self.q, num_iters=self.num_iters, method=method, v0=v0,
        training=self.power_training, jvp_mode=self.jvp_mode, exact_max_dim=max_dim)
    v = tf.stop_gradient(tf.cast(result.v, x.dtype))
    if warm:
      with tf.control_dependencies([memory.update(key, v)]):
        v = tf.identity(v)
    eps = _checks.hyperparameter_in_step(self._hyperparameter("epsilon"), "epsilon")
    if self.form == "sum_of_squares":
      logits_perturbed = _forward.perturbed_logits(
          model, x + tf.cast(eps, x.dtype) * v, training=self.forward_training,
          update_batch_stats=self.update_batch_stats)
      logits = _forward.clean_logits(model, x, y_pred, training=self.forward_training)
      per_example = sum_of_squares_penalty(logits_perturbed, logits, q=self.q)
    else:
      fn = lambda x_: _forward.perturbed_logits(  # pylint: disable=g-long-lambda
          model, x_, training=self.forward_training,
          update_batch_stats=self.update_batch_stats)
      _, jv = jacobian.jvp(fn, x, v, mode="double_backward")  # XLA: see docstring.
      per_example = tf.square(eps) * jacobian_penalty(jv, q=self.q)
    per_example = _checks.nan_where_nonfinite(per_example, x)  # XLA: no assertions.
    mean_loss = base.weighted_batch_mean(per_example, sample_weight)
    loss = _checks.hyperparameter_in_step(self._hyperparameter("weight"), "weight") * mean_loss
    metrics = {
        self.name: tf.stop_gradient(tf.reduce_mean(tf.cast(result.norm, tf.float32))),
        f"{self.name}_loss": tf.stop_gradient(mean_loss),
    }
    if self.warm_start:
      metrics[f"{self.name}_warm_hits"] = (
          tf.reduce_mean(tf.cast(hit, tf.float32)) if warm else tf.constant(0.0))
    return loss, metrics

  def exact_direction(self, d, n):
    """Whether ``v`` comes from the closed form for ``d`` logits, input size ``n``."""
    form = closed_form(self.p, self.q)
    if self.direction == "power" or form is None:
      return False
    if self.direction == "exact":
      return True
    if form == "vertices" and d > MAX_VERTEX_LOGITS:
      return False
    return _cost.cheaper_path(d, n, num_iters=self.num_iters, p=self.p, q=self.q) == "exact"

  def _method(self, model, x):
    """``(method, exact_max_dim)`` of the step's `operator_norm` call."""
    if self.direction == "power":
      return "power", 256
    n = _jacobian_matrix.num_features(x)
    d = _jacobian_matrix.num_logits(jacobian.as_logits_fn(model, self.power_training), x)
    if self.exact_direction(d, n):
      return "exact", min(d, n)
    return "power", 256

  def get_config(self):
    return {
        **super().get_config(),
        **self._hyper_config(),
        "p": base.exponent_config(self.p),
        "q": base.exponent_config(self.q),
        "num_iters": self.num_iters,
        "form": self.form,
        "direction": self.direction,
        "warm_start": self.warm_start,
        "power_training": self.power_training,
        "forward_training": self.forward_training,
        "update_batch_stats": self.update_batch_stats,
        "jvp_mode": self.jvp_mode,
        "warm_start_capacity": self.warm_start_capacity,
        "warm_start_max_bytes": self.warm_start_max_bytes,
    }
