"""Evaluation the way the paper does it: robustness, alignment, spectra.

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527),
Section 5 ("Experiments"). For a network ``f`` (up to the logits) and held-out
examples ``x`` with Jacobians ``J = J_f(x)``:

* `robust_accuracy`: accuracy under lp PGD over a sweep of epsilons
  (the accuracy-vs-eps curve; ``eps = 0`` is the clean accuracy).
* `alignment`: ``|cos|`` between the PGD perturbation ``x_adv - x`` and the
  right singular vectors ``v_r`` of ``J`` by rank ``r = 1..k``, next to the
  same for a random direction (the paper's flat baseline);
  `alignment_vs_epsilon`: the rank-1 alignment as a function of eps.
* `spectrum`: the top-k singular values of ``J`` per example.
* `mean_operator_norm`: the mean per-example ``||J||_{p,q}``.
* `margin_alignment`: why cross-entropy PGD perturbations can miss ``v_1``
  while lq-logit ones find it: their alignment with the margin direction
  ``s_p(J^T (e_j - e_y))`` and how much ``J``'s top output direction is a
  margin direction.

Every function takes a model (or any callable ``x -> logits``) and either
arrays ``x`` (and ``y``) or a finite, *batched* ``tf.data.Dataset`` of
``(x, y)`` (or ``x``) batches; it walks the data in batches through
`tf.function`-compiled kernels and returns a small result dataclass whose
``to_dict()`` is plain JSON (Python floats and lists; ``float('inf')`` is
written as the string ``"inf"``).

Centered logits. Cross-entropy is invariant to adding the same constant to
every logit, ``CE(y, f(x) + c 1) = CE(y, f(x))``, so a cross-entropy attack
cannot see the component of ``J`` that shifts all logits together, while the
singular vectors of ``J`` can be dominated by it. The Jacobian that the
cross-entropy actually "sees" is the one of the centered logits

    f_c(x) = f(x) - mean_i f_i(x) = P f(x),   P = I - 1 1^T / d,
    J_c = P J,

(`center_logits`); every function here takes ``centered=True`` to use it and
`alignment` then reports the raw and the centered numbers side by side.

* `auto_attack`: robust accuracy under an AutoAttack-grade cascade (APGD-CE,
  APGD-T, FAB-T, Square; Croce & Hein, ICML 2020), the number to report;
  `gradient_masking_checks`: the sanity checks of Carlini et al. (2019);
  `robust_radii`: per-example minimum-norm radii (FMN), the whole
  accuracy-vs-eps curve from one run.

Modules: `evaluation.autoattack` (the ensemble), `evaluation.sanity`
(gradient-masking checks), `evaluation.robustness` (accuracy under PGD,
robust radii), `evaluation.spectrum` (spectra, mean operator norms, centered
logits), `evaluation.alignment` (singular-vector and margin alignment).
"""

from keras_opnorm.evaluation.robustness import RobustAccuracyCurve
from keras_opnorm.evaluation.robustness import robust_accuracy
from keras_opnorm.evaluation.robustness import RobustRadii
from keras_opnorm.evaluation.robustness import robust_radii
from keras_opnorm.evaluation.autoattack import AutoAttackResult
from keras_opnorm.evaluation.autoattack import auto_attack
from keras_opnorm.evaluation.sanity import SanityCheck
from keras_opnorm.evaluation.sanity import SanityReport
from keras_opnorm.evaluation.sanity import gradient_masking_checks
from keras_opnorm.evaluation.spectrum import SpectrumResult
from keras_opnorm.evaluation.spectrum import mean_operator_norm
from keras_opnorm.evaluation.spectrum import spectrum
from keras_opnorm.evaluation.spectrum import center_logits
from keras_opnorm.evaluation.alignment import AlignmentResult
from keras_opnorm.evaluation.alignment import AlignmentCurve
from keras_opnorm.evaluation.alignment import MarginAlignmentResult
from keras_opnorm.evaluation.alignment import alignment
from keras_opnorm.evaluation.alignment import alignment_vs_epsilon
from keras_opnorm.evaluation.alignment import margin_alignment
from keras_opnorm.evaluation.alignment import expected_random_alignment

# Private names shared with the monitor callbacks, compare and the tests.
from keras_opnorm.evaluation.robustness import _RobustKernel  # noqa: F401
from keras_opnorm.evaluation.spectrum import _OperatorNormKernel  # noqa: F401
from keras_opnorm.evaluation.alignment import _AlignmentKernel  # noqa: F401
from keras_opnorm.evaluation.alignment import _abs_cosines  # noqa: F401
from keras_opnorm.evaluation._results import _jsonable  # noqa: F401

__all__ = [
    "AutoAttackResult",
    "auto_attack",
    "SanityCheck",
    "SanityReport",
    "gradient_masking_checks",
    "RobustRadii",
    "robust_radii",
    "RobustAccuracyCurve",
    "AlignmentResult",
    "AlignmentCurve",
    "SpectrumResult",
    "MarginAlignmentResult",
    "robust_accuracy",
    "alignment",
    "alignment_vs_epsilon",
    "spectrum",
    "mean_operator_norm",
    "margin_alignment",
    "center_logits",
    "expected_random_alignment",
]
