"""Adversarial attacks on logits functions, one attack a module.

* `pgd_attack` (`attacks.pgd`): lp projected gradient ascent (Madry et al.
  2018), the attack of the theorem (Roth, Kilcher & Hofmann, NeurIPS 2020).
* the attack losses (`attacks.losses`): cross-entropy, the lq logit
  distance, KL (TRADES).
"""

from keras_opnorm.attacks._common import _sparse_l1_direction  # noqa: F401 (tested directly)
from keras_opnorm.attacks.losses import ATTACK_LOSSES
from keras_opnorm.attacks.losses import attack_loss
from keras_opnorm.attacks.losses import crossentropy_loss
from keras_opnorm.attacks.losses import kl_loss
from keras_opnorm.attacks.losses import logit_distance_loss
from keras_opnorm.attacks.pgd import pgd_attack

__all__ = [
    "pgd_attack",
    "attack_loss",
    "crossentropy_loss",
    "logit_distance_loss",
    "kl_loss",
    "ATTACK_LOSSES",
]
