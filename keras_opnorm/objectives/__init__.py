"""Objectives: the terms that robust training adds to the loss.

Each objective is written once, as a pure loss term
``objective(model, x, y, y_pred, sample_weight) -> (loss, metrics)`` (see
`Objective`), and attached to training by a callback
(`keras_opnorm.callbacks`), the wrapper `keras_opnorm.RobustModel` or the
layer `keras_opnorm.layers.OperatorNormRegularizer`.

* `AdversarialTraining`: PGD adversarial training (cross-entropy, lq logit
  distance, TRADES KL).
* `OperatorNormRegularization`: data-dependent (p,q) operator norm
  regularisation (d.d. SNR for p = q = 2).
* `SpectralNormRegularization`: global spectral norm regularisation
  (Yoshida & Miyato 2017), the data-independent baseline.
"""

from keras_opnorm.objectives.base import Objective
from keras_opnorm.objectives.base import check_logits_output
from keras_opnorm.objectives.base import weighted_batch_mean
from keras_opnorm.objectives.adversarial_training import ADVERSARIAL_LOSSES
from keras_opnorm.objectives.adversarial_training import AdversarialTraining
from keras_opnorm.objectives.adversarial_training import crossentropy
from keras_opnorm.objectives.adversarial_training import kl_divergence
from keras_opnorm.objectives.adversarial_training import logit_distance
from keras_opnorm.objectives.operator_norm_regularization import OPERATOR_NORM_FORMS
from keras_opnorm.objectives.operator_norm_regularization import OperatorNormRegularization
from keras_opnorm.objectives.operator_norm_regularization import jacobian_penalty
from keras_opnorm.objectives.operator_norm_regularization import sum_of_squares_penalty
from keras_opnorm.objectives.spectral_norm_regularization import SpectralNormRegularization
from keras_opnorm.objectives.spectral_norm_regularization import kernel_matrix
from keras_opnorm.objectives.spectral_norm_regularization import spectral_norm_power_iteration

__all__ = [
    "Objective",
    "AdversarialTraining",
    "OperatorNormRegularization",
    "SpectralNormRegularization",
    "ADVERSARIAL_LOSSES",
    "OPERATOR_NORM_FORMS",
    "check_logits_output",
    "weighted_batch_mean",
    "crossentropy",
    "logit_distance",
    "kl_divergence",
    "sum_of_squares_penalty",
    "jacobian_penalty",
    "kernel_matrix",
    "spectral_norm_power_iteration",
]
