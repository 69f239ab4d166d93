"""`SpectralNormRegularization` callback: global SNR baseline inside ``fit``."""

import keras

from keras_opnorm.callbacks import objective_callback

__all__ = ["SpectralNormRegularization"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class SpectralNormRegularization(objective_callback._BuiltInObjectiveCallback):  # pylint: disable=protected-access
  """Global spectral norm regularisation (Yoshida & Miyato 2017) for one ``fit``.

  Wraps `keras_opnorm.objectives.SpectralNormRegularization`:
  ``weight / 2 * sum_l sigma_max(W_l)^2`` over the model's Dense and Conv
  kernels, one power iteration per step from persistent vectors (the
  data-independent baseline of Roth et al. 2020). See `ObjectiveCallback`
  for the mechanics. The model may be unbuilt when ``fit`` starts (a
  subclassed model never called): the vectors are then made on the first
  batch. Give ``backup_dir`` (the directory of
  ``keras.callbacks.BackupAndRestore``) to keep the persistent vectors across
  an interrupted and resumed run.

  Args:
    weight: ``lambda >= 0`` (schedulable). Defaults to `3e-4`.
    start_epoch: epoch index from which the term is applied. Defaults to `0`.
    warmup_epochs: the weight grows linearly over the first ``warmup_epochs``
      active epochs, ``weight * (i + 1) / warmup_epochs`` in the i-th.
      Defaults to `0` (no warm-up).
    weight_schedule: a `Schedule` (or callable ``epoch -> value``) for the
      weight instead of ``warmup_epochs``. Defaults to `None`.
    backup_dir: see `ObjectiveCallback`. Defaults to `None`.
    **objective_kwargs: the other arguments of
      `keras_opnorm.objectives.SpectralNormRegularization` (``num_iters``,
      ``seed``, ``name``).

  Raises:
    ValueError, TypeError: for invalid arguments, before training starts.

  Example:

  ```python
  model.fit(x, y, callbacks=[
      keras_opnorm.callbacks.SpectralNormRegularization(weight=3e-4)])
  ```
  """

  _objective_class_name = "SpectralNormRegularization"
  _warmup_hyperparameter = "weight"

  def __init__(self, weight=3e-4, *, start_epoch=0, warmup_epochs=0,
               weight_schedule=None, backup_dir=None, **objective_kwargs):
    super().__init__(
        objective_kwargs={"weight": weight, **objective_kwargs},
        start_epoch=start_epoch, warmup_epochs=warmup_epochs,
        schedules={"weight": weight_schedule}, backup_dir=backup_dir)
