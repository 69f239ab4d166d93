"""`OperatorNormRegularization` callback: data-dependent (p,q) operator norm regularisation inside ``fit``."""

import keras

from keras_opnorm.callbacks import objective_callback

__all__ = ["OperatorNormRegularization"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class OperatorNormRegularization(objective_callback._EpsilonObjectiveCallback):  # pylint: disable=protected-access
  """Data-dependent (p,q) operator norm regularisation for one ``fit``.

  Wraps `keras_opnorm.objectives.OperatorNormRegularization` (Roth et al.
  2020): in the sum-of-squares form
  ``lambda/2 * ||f(x + eps v) - f(x)||_q^2`` with ``v`` from K (p,q) power
  iterations on the per-example Jacobian (held constant), or the Jacobian form
  ``lambda~/2 * (u^T J v)^2``; d.d. spectral norm regularisation for
  ``p = q = 2``. See `ObjectiveCallback` for the mechanics. The model must
  output logits.

  Args:
    epsilon: the radius ``eps`` of the sum-of-squares form (> 0;
      schedulable).
    start_epoch: epoch index from which the term is applied (plain training
      before). Defaults to `0`.
    warmup_epochs: epsilon grows linearly over the first ``warmup_epochs``
      active epochs, ``epsilon * (i + 1) / warmup_epochs`` in the i-th, then
      stays at ``epsilon``. Defaults to `0` (no warm-up).
    epsilon_schedule: a `Schedule` (or callable ``epoch -> value``) for
      epsilon instead of ``warmup_epochs``. Defaults to `None`.
    weight_schedule: a `Schedule` for the weight ``lambda``. Defaults to
      `None`.
    backup_dir: see `ObjectiveCallback`. Defaults to `None`.
    **objective_kwargs: the other arguments of
      `keras_opnorm.objectives.OperatorNormRegularization` (``p``, ``q``,
      ``weight``, ``num_iters``, ``form``, ``direction`` (``'power'``,
      ``'exact'`` or ``'auto'``), ``warm_start`` (each example's power
      iteration continues across epochs: with ``num_iters=1``, epoch ``E``
      runs the ``E``-th iteration; not with ``direction='exact'``),
      ``warm_start_capacity`` (memory slots, default 65536; about
      ``exp(-N / capacity)`` of ``N`` examples hit per epoch),
      ``warm_start_max_bytes`` (default 1 GiB), ``power_training``, ...).
      The warm-start memory is the objective's state: ``backup_dir`` backs it
      up, the saved model does not contain it; the ``{name}_warm_hits``
      metric shows the fraction of hits.

  Raises:
    ValueError, TypeError: for invalid arguments (raised by the objective
      for its own arguments), before training starts.

  Example:

  ```python
  model.fit(x, y, epochs=10, callbacks=[
      keras_opnorm.callbacks.OperatorNormRegularization(
          epsilon=1.0, p=2, q=2, weight=0.1, num_iters=10)])
  # Warm-started: one iteration per step, continued across epochs.
  model.fit(x, y, epochs=10, shuffle=True, callbacks=[
      keras_opnorm.callbacks.OperatorNormRegularization(
          epsilon=1.0, weight=0.1, num_iters=1, warm_start=True)])
  ```
  """

  _objective_class_name = "OperatorNormRegularization"
