"""Adversarial attacks on logits functions, one attack a module.

* `pgd_attack` (`attacks.pgd`): lp projected gradient ascent (Madry et al.
  2018), the attack of the theorem (Roth, Kilcher & Hofmann, NeurIPS 2020).
* `apgd_attack`, `apgd_targeted_attack` (`attacks.apgd`): Auto-PGD with
  the cross-entropy, DLR and targeted DLR losses (Croce & Hein, ICML 2020),
  l-inf, l2 and l1 (Croce & Hein, ICML 2021).
* `fab_attack` (`attacks.fab`): the fast adaptive boundary attack and its
  targeted form FAB-T (Croce & Hein, ICML 2020), minimum-norm.
* `square_attack` (`attacks.square`): the score-based Square Attack
  (Andriushchenko et al., ECCV 2020), gradient-free.
* `fmn_attack` (`attacks.min_norm`): the fast minimum-norm attack (Pintor
  et al., NeurIPS 2021), per-example smallest perturbations.
* the attack losses (`attacks.losses`): cross-entropy, the lq logit
  distance, KL (TRADES), the margin and the (targeted) DLR.

`keras_opnorm.evaluation.auto_attack` runs them as AutoAttack's cascade.
"""

from keras_opnorm.attacks._common import _sparse_l1_direction  # noqa: F401 (tested directly)
from keras_opnorm.attacks.apgd import apgd_attack
from keras_opnorm.attacks.apgd import apgd_targeted_attack
from keras_opnorm.attacks.fab import fab_attack
from keras_opnorm.attacks.losses import ATTACK_LOSSES
from keras_opnorm.attacks.losses import attack_loss
from keras_opnorm.attacks.losses import crossentropy_loss
from keras_opnorm.attacks.losses import dlr_loss
from keras_opnorm.attacks.losses import kl_loss
from keras_opnorm.attacks.losses import logit_distance_loss
from keras_opnorm.attacks.losses import margin
from keras_opnorm.attacks.losses import targeted_dlr_loss
from keras_opnorm.attacks.min_norm import fmn_attack
from keras_opnorm.attacks.min_norm import minimal_perturbation_norms
from keras_opnorm.attacks.pgd import pgd_attack
from keras_opnorm.attacks.square import square_attack

__all__ = [
    "pgd_attack",
    "apgd_attack",
    "apgd_targeted_attack",
    "fab_attack",
    "square_attack",
    "fmn_attack",
    "minimal_perturbation_norms",
    "attack_loss",
    "crossentropy_loss",
    "logit_distance_loss",
    "kl_loss",
    "margin",
    "dlr_loss",
    "targeted_dlr_loss",
    "ATTACK_LOSSES",
]
