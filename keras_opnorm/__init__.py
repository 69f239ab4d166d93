"""keras_opnorm: adversarial training as data-dependent operator norm regularisation.

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527).
"""

__version__ = "0.1.0"

# lp geometry.
from keras_opnorm.norms import dual_exponent
from keras_opnorm.norms import lp_norm
from keras_opnorm.norms import project_lp_ball
from keras_opnorm.norms import random_lp_ball
from keras_opnorm.norms import steepest_ascent
# Jacobian products.
from keras_opnorm.jacobian import jvp
from keras_opnorm.jacobian import vjp
from keras_opnorm.logits_view import LogitsView

# [operator_norm] exports (operator_norm, singular_values, result types).
# The functions shadow their modules' names on the package: import the
# modules' other names with `from keras_opnorm.operator_norm import ...`.
from keras_opnorm.operator_norm import OperatorNormResult
from keras_opnorm.operator_norm import operator_norm
from keras_opnorm.singular_values import SingularValuesResult
from keras_opnorm.singular_values import singular_values
# [/operator_norm]

# [attacks] exports (pgd_attack, attack losses).
from keras_opnorm import attacks
from keras_opnorm.attacks import attack_loss
from keras_opnorm.attacks import crossentropy_loss
from keras_opnorm.attacks import kl_loss
from keras_opnorm.attacks import logit_distance_loss
from keras_opnorm.attacks import pgd_attack
from keras_opnorm.attacks import apgd_attack
from keras_opnorm.attacks import apgd_targeted_attack
from keras_opnorm.attacks import fab_attack
from keras_opnorm.attacks import fmn_attack
from keras_opnorm.attacks import square_attack
# [/attacks]

# [training] exports (objectives, RobustModel, callbacks, layers submodules).
from keras_opnorm import objectives
from keras_opnorm import training
from keras_opnorm import callbacks
from keras_opnorm import layers
from keras_opnorm.robust_model import RobustModel
# [/training]

# [evaluation] exports (evaluation submodule, monitors).
# Monitors (OperatorNormMonitor, RobustAccuracy, AlignmentMonitor) are in
# `keras_opnorm.callbacks`; plots import matplotlib only when drawing.
from keras_opnorm import evaluation
from keras_opnorm import plots
from keras_opnorm.evaluation import auto_attack
# [/evaluation]

# Warnings.
from keras_opnorm._checks import VacuousThreatModelWarning

# [datasets] exports (datasets submodule).
from keras_opnorm import datasets
from keras_opnorm import models
# [/datasets]

__all__ = [
    # lp geometry and Jacobian products.
    "dual_exponent",
    "lp_norm",
    "project_lp_ball",
    "random_lp_ball",
    "steepest_ascent",
    "jvp",
    "vjp",
    "LogitsView",
    # Operator norms and singular values.
    "OperatorNormResult",
    "operator_norm",
    "SingularValuesResult",
    "singular_values",
    # Attacks.
    "attack_loss",
    "crossentropy_loss",
    "kl_loss",
    "logit_distance_loss",
    "pgd_attack",
    "apgd_attack",
    "apgd_targeted_attack",
    "fab_attack",
    "fmn_attack",
    "square_attack",
    # Evaluation.
    "auto_attack",
    "VacuousThreatModelWarning",
    # Training.
    "RobustModel",
    # Submodules.
    "attacks",
    "callbacks",
    "datasets",
    "evaluation",
    "layers",
    "models",
    "objectives",
    "plots",
    "training",
]
