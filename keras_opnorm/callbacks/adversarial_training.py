"""`AdversarialTraining` callback: lp PGD adversarial training inside ``fit``."""

import keras

from keras_opnorm.callbacks import objective_callback

__all__ = ["AdversarialTraining"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class AdversarialTraining(objective_callback._EpsilonObjectiveCallback):  # pylint: disable=protected-access
  """Adversarial training (Madry et al. 2018; Roth et al. 2020) for one ``fit``.

  Wraps `keras_opnorm.objectives.AdversarialTraining` (see it for the loss
  forms ``'crossentropy'``, ``'logit'`` = the paper's lq logit distance
  ``lambda * ||f(x*) - f(x)||_q``, and ``'kl'`` = TRADES) and attaches it to
  the user's compiled model for the duration of ``fit``; see
  `ObjectiveCallback` for the mechanics. The model must output logits.

  Args:
    epsilon: radius of the lp ball of the attack (> 0; schedulable).
    start_epoch: epoch index from which adversarial training is applied
      (plain training before). Defaults to `0`.
    warmup_epochs: epsilon grows linearly over the first ``warmup_epochs``
      active epochs, ``epsilon * (i + 1) / warmup_epochs`` in the i-th, then
      stays at ``epsilon``. Defaults to `0` (no warm-up).
    epsilon_schedule: a `Schedule` (or callable ``epoch -> value``) for
      epsilon instead of ``warmup_epochs``. Defaults to `None`.
    weight_schedule: a `Schedule` for the objective's weight. Defaults to
      `None`.
    backup_dir: see `ObjectiveCallback`. Defaults to `None`.
    **objective_kwargs: the other arguments of
      `keras_opnorm.objectives.AdversarialTraining` (``p``, ``num_steps``,
      ``step_size``, ``loss``, ``q``, ``weight``, ``squared``,
      ``replace_clean_loss``, ``random_start``, ``clip``,
      ``attack_training``, ...).

  Raises:
    ValueError, TypeError: for invalid arguments (raised by the objective
      for its own arguments), before training starts.

  Example:

  ```python
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, epochs=10, callbacks=[
      keras_opnorm.callbacks.AdversarialTraining(
          epsilon=0.1, p="inf", num_steps=10, warmup_epochs=3)])
  model.save("robust.keras")     # the user's model only
  ```
  """

  _objective_class_name = "AdversarialTraining"
