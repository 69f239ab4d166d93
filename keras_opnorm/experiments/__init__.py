"""Command-line experiments that reproduce the paper's comparisons.

* `keras_opnorm.experiments.compare`: train standard, PGD adversarial
  training, data-dependent (p,q) operator-norm regularisation and global
  spectral-norm regularisation with matched settings, evaluate them, and write
  a table, ``results.json`` and plots. Run it as
  ``python -m keras_opnorm.experiments.compare`` or ``keras-opnorm-compare``.
"""
