"""Global spectral norm regularisation (Yoshida & Miyato 2017): a baseline.

The data-independent regulariser the paper compares against::

  lambda/2 * sum_l sigma_max(W_l)^2

over the kernels of the model's Dense and Conv layers, a conv kernel taken as
the ``(out, in*k*k)`` matrix; ``sigma_max`` is estimated with one power
iteration per training step from persistent vectors.

Y. Yoshida, T. Miyato, "Spectral Norm Regularization for Improving the
Generalizability of Deep Learning", arXiv 1705.10941 (2017).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm.objectives import base

__all__ = ["SpectralNormRegularization", "kernel_matrix", "spectral_norm_power_iteration"]


def kernel_matrix(kernel, *, out_axis=-1):
  """Reshapes a Dense or Conv kernel to the ``(out, in*k*k)`` matrix.

  A Keras ``Dense`` kernel is ``(in, out)``, a ``ConvND`` kernel is
  ``(k_1, ..., k_N, in, out)`` and a ``ConvNDTranspose`` kernel is
  ``(k_1, ..., k_N, out, in)``: the output axis (``out_axis``) becomes the
  rows, all other axes are flattened into the columns (Yoshida & Miyato 2017,
  Sec. 2.2). The order of the columns does not change the singular values.

  Args:
    kernel: the kernel tensor or variable.
    out_axis: the axis of the output units. Defaults to `-1`.

  Returns:
    A float32 tensor of shape ``(out, in * prod(k))``.

  Example:

  >>> kernel_matrix(tf.ones([3, 3, 2, 4])).shape.as_list()
  [4, 18]
  """
  kernel = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
  rank = kernel.shape.rank
  out_axis = out_axis % rank
  perm = [out_axis] + [i for i in range(rank) if i != out_axis]
  w = tf.transpose(kernel, perm)
  return tf.reshape(w, [kernel.shape[out_axis], -1])


def _normalize_or_keep(new, old):
  """``new / ||new||_2``, or ``old`` where ``new`` is 0 (a zero matrix)."""
  sq = tf.reduce_sum(tf.square(new))
  safe = tf.where(sq > 0, sq, tf.ones_like(sq))
  return tf.where(sq > 0, new * tf.math.rsqrt(safe), old)


def spectral_norm_power_iteration(w, u, *, num_iters=1):
  """Power iteration for the largest singular value of ``w`` from ``u``.

  Each iteration (Miyato et al. 2018, Algorithm 1)::

    v = W^T u / ||W^T u||_2,    u = W v / ||W v||_2

  and ``sigma = u^T W v`` with ``u`` and ``v`` held constant
  (``stop_gradient``), so that ``d sigma / dW = u v^T``: differentiable with
  respect to ``W`` only. For ``W = 0`` the vectors are kept (never NaN) and
  ``sigma = 0``.

  Args:
    w: float tensor ``[m, n]``.
    u: float tensor ``[m]``, the previous left singular vector estimate.
    num_iters: number of iterations. Defaults to `1`.

  Returns:
    ``(sigma, u, v)``: a scalar, ``[m]`` and ``[n]``.

  Example:

  >>> w = tf.constant([[3.0, 0.0], [0.0, 1.0]])
  >>> sigma, u, v = spectral_norm_power_iteration(w, tf.constant([1.0, 1.0]), num_iters=30)
  >>> round(float(sigma), 4)
  3.0
  """
  num_iters = _checks.positive_int(num_iters, "num_iters")
  w = tf.convert_to_tensor(w)
  u = tf.stop_gradient(tf.cast(u, w.dtype))
  w_const = tf.stop_gradient(w)
  v = tf.zeros([tf.shape(w)[1]], w.dtype)
  for _ in range(num_iters):
    v = _normalize_or_keep(tf.linalg.matvec(w_const, u, transpose_a=True), v)
    u = _normalize_or_keep(tf.linalg.matvec(w_const, v), u)
  u = tf.stop_gradient(u)
  v = tf.stop_gradient(v)
  sigma = tf.tensordot(u, tf.linalg.matvec(w, v), 1)
  return sigma, u, v


def _spectral_kernels(model):
  """``(layer, out_axis)`` for every Dense / Conv layer, nested too (built or not)."""
  dense = (keras.layers.Dense,)
  conv = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
  conv_t = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose)
  found, seen = [], set()
  for layer in base.all_layers(model):
    if isinstance(layer, conv_t):
      out_axis = -2
    elif isinstance(layer, dense + conv):
      out_axis = -1
    else:
      continue
    if id(layer) in seen:
      continue
    seen.add(id(layer))
    found.append((layer, out_axis))
  return found


@keras.saving.register_keras_serializable(package="keras_opnorm.objectives")
class SpectralNormRegularization(base.Objective):
  """Global spectral norm regularisation ``lambda/2 * sum_l sigma(W_l)^2``.

  The data-independent baseline of Roth et al. (2020) (Yoshida & Miyato
  2017): for every ``Dense``, ``Conv1D/2D/3D`` and ``Conv1D/2D/3DTranspose``
  layer of the model (nested models and layers included), with its kernel
  as the ``(out, in*k*k)`` matrix ``W_l`` (see `kernel_matrix`), the term::

    loss = weight / 2 * sum_l sigma_l^2,    sigma_l = u_l^T W_l v_l

  where ``u_l`` (persistent) and ``v_l`` come from ``num_iters`` power
  iterations per step (see `spectral_norm_power_iteration`), held constant so
  that ``d loss / d W_l = weight * sigma_l * u_l v_l^T``. Depthwise and
  separable convolutions are not regularised.

  The term does not depend on the batch (``x``, ``y`` and ``sample_weight``
  are ignored). On a model that is not built yet (a subclassed model before
  its first ``fit`` step) ``build`` defers the ``u_l`` to the first batch,
  once the forward pass has created the kernels. The ``u_l`` are non-trainable ``keras.Variable`` objects owned
  by the objective (not the model) with ``synchronization="on_read"``: under a
  tf.distribute strategy each replica updates its own copy locally (all
  replicas compute the same update from the same mirrored kernels), which
  avoids the cross-replica assignment that breaks
  ``keras.layers.SpectralNormalization`` under tf.distribute and works with
  XLA.

  Metrics: ``{name}_max`` (largest ``sigma_l``) and ``{name}_loss``
  (``1/2 * sum_l sigma_l^2``, so that ``loss = weight * {name}_loss``).

  Args:
    weight: ``lambda >= 0`` (a float or a variable; schedulable). Defaults to
      `3e-4` (the paper's CIFAR-10 value).
    num_iters: power iterations per training step. Defaults to `1`.
    seed: seed of the initial vectors ``u_l``. Defaults to `None`.
    name: metric prefix. Defaults to `"spectral_norm"`.

  Raises:
    ValueError: for ``weight < 0`` or ``num_iters <= 0``; in ``build`` (or
      on the first batch, for a model not built yet) for a model without
      Dense or Conv kernels.

  Example:

  ```python
  objective = SpectralNormRegularization(weight=3e-4)
  objective.build(model)
  loss, metrics = objective(model, x, y, y_pred)
  ```

  References: Yoshida & Miyato, arXiv 2017
  (https://arxiv.org/abs/1705.10941); Roth, Kilcher & Hofmann, NeurIPS 2020
  (https://arxiv.org/abs/1906.01527).
  """

  default_name = "spectral_norm"
  uses_model_outputs = False  # Weights only.

  def __init__(self, weight=3e-4, num_iters=1, seed=None, name=None):
    super().__init__(name=name)
    self._add_hyperparameter("weight", weight, _checks.nonnegative_float)
    self.num_iters = _checks.positive_int(num_iters, "num_iters")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
      raise ValueError(f"`seed` must be None or an integer >= 0. Received: seed={seed!r}")
    self.seed = seed
    self._kernels = []
    self._pending = False  # vectors deferred to the first batch (unbuilt model)

  def _validate_model(self, model):
    # Weights only: the model's output activation does not matter here.
    del model

  def _build_state(self, model):
    self._kernels = []
    self._pending = False
    kernels = _spectral_kernels(model)
    unbuilt = [layer for layer in base.all_layers(model)
               if isinstance(layer, keras.layers.Layer) and not layer.built]
    if unbuilt:
      # A model not called yet (a subclassed model before `fit`): its kernels
      # do not exist. The vectors are made on the first batch (`call`), after
      # the train step's forward pass has built the layers.
      self._pending = True
      return
    self._make_vectors(kernels, model)

  def _make_vectors(self, kernels, model):
    """Creates the persistent ``u_l``, one per kernel (``seed``-determined)."""
    if not kernels:
      raise ValueError(
          "SpectralNormRegularization found no Dense or Conv kernels to "
          "regularise (it looks for keras.layers.Dense, Conv1D/2D/3D and "
          "Conv1D/2D/3DTranspose layers, nested ones included). Received: "
          f"model={getattr(model, 'name', model)!r}")
    rng = np.random.default_rng(self.seed)
    self._kernels = []
    for i, (layer, out_axis) in enumerate(kernels):
      rows = int(layer.kernel.shape[out_axis])
      u0 = rng.standard_normal(rows).astype("float32")
      u0 /= np.linalg.norm(u0)
      u = self._add_state_variable(f"u_{i}", u0, synchronization="on_read")
      self._kernels.append((layer, out_axis, u))

  def _make_pending_vectors(self, model):
    """Creates the vectors deferred by `build`, on the first (traced) batch.

    By now the forward pass has built the layers. As for Keras' own layers
    built inside a traced step, ``tf.init_scope`` lifts the creation out of
    the graph; under tf.distribute it runs once, in cross-replica context
    (``merge_call``), inside the strategy's scope. Layers the forward pass
    did not build (never called) have no kernel and are not regularised.
    """

    def create(strategy=None):
      del strategy
      if not self._pending:  # another replica made them
        return
      with tf.init_scope(), base._distribution_scope(model):  # pylint: disable=protected-access
        kernels = [(layer, axis) for layer, axis in _spectral_kernels(model) if layer.built]
        self._make_vectors(kernels, model)
      self._pending = False

    ctx = tf.distribute.get_replica_context()
    if ctx is not None and tf.distribute.has_strategy():
      ctx.merge_call(create)
    else:
      create()

  @property
  def kernel_layers(self):
    """The regularised layers, in the order of the persistent vectors."""
    return [layer for layer, _, _ in self._kernels]

  @property
  def metric_names(self):
    return (f"{self.name}_max", f"{self.name}_loss")

  def call(self, model, x, y, y_pred, sample_weight=None):
    del x, y, y_pred, sample_weight
    if self._pending:
      self._make_pending_vectors(model)
    sigmas = []
    for layer, out_axis, u_var in self._kernels:
      w = kernel_matrix(layer.kernel, out_axis=out_axis)
      sigma, u, _ = spectral_norm_power_iteration(
          w, tf.convert_to_tensor(u_var), num_iters=self.num_iters)
      u_var.assign(u)
      sigmas.append(sigma)
    sigmas = tf.stack(sigmas)
    penalty = 0.5 * tf.reduce_sum(tf.square(sigmas))
    loss = self._hyperparameter("weight") * penalty
    metrics = {
        f"{self.name}_max": tf.stop_gradient(tf.reduce_max(sigmas)),
        f"{self.name}_loss": tf.stop_gradient(penalty),
    }
    return loss, metrics

  def get_config(self):
    return {
        **super().get_config(),
        **self._hyper_config(),
        "num_iters": self.num_iters,
        "seed": self.seed,
    }
