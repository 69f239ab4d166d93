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

# [operator_norm] exports (operator_norm, singular_values, result types).
# [/operator_norm]

# [attacks] exports (pgd_attack, attack losses).
# [/attacks]

# [training] exports (objectives, RobustModel, callbacks, layers submodules).
# [/training]

# [evaluation] exports (evaluation submodule, monitors).
# [/evaluation]

# [datasets] exports (datasets submodule).
# [/datasets]

__all__ = [name for name in dir() if not name.startswith("_")]
