"""The SAM family beside SAM (`sam.py`): cheaper and stronger variants as Optax transformations.

Every variant keeps `sam()`'s protocol (`sam.py`), `update(grads, state, params,
grad_fn=grad_fn)` with `grads` the clean gradient at `params` and `grad_fn(p)` the
gradient of the same loss (same batch, same randomness) at `p`, returning `(gradient,
aux)` when `aux_init` is given, and keeps a `SamState`. ESAM also needs `grad_fn(p,
examples=idx)` (the gradient on some examples only) and `example_losses` /
`example_losses_fn` (per-example losses; `steps.train_step` passes all three), and
Functional-SAM `grad_fn(p, functional=True)` (the Jacobian at p, dL/dlogits at the params).
Momentum-SAM is not in front of the optimizer but at its end (`momentum_perturbation`).
Each variant works per replica, like SAM: pass `axis_name` where it keeps state that must
stay the same on every replica.

The modules:

- cheaper.py: SAM every k steps, with probability p or late in training (`sometimes`),
  LookSAM, ESAM, Momentum-SAM.
- stronger.py: GSAM, GCSAM, WSAM, Functional-SAM.
- aimed.py: F-SAM, VaSSO.
- parallel.py: SAMPa, its two gradients on two groups of replicas at once.
- bayesian.py: bSAM, the whole optimizer (its own momentum and precision) and its posterior.
- registry.py: each as the training binary runs it, one entry per `config.sam.variant`.
"""

from sam_jax.family.aimed import friendly_sam, vasso
from sam_jax.family.bayesian import bayesian_sam, posterior_sample
from sam_jax.family.parallel import sampa
from sam_jax.family.cheaper import (esam, looksam, momentum_perturbation, sam_step_due, sometimes,
                                    unperturbed)
from sam_jax.family.stronger import (centralize_gradient, decoupled_wsam, functional_sam, gcsam,
                                     gsam, rho_following, wsam)

__all__ = [
    "bayesian_sam", "centralize_gradient", "decoupled_wsam", "esam", "friendly_sam",
    "functional_sam", "gcsam", "gsam", "looksam", "momentum_perturbation", "posterior_sample",
    "rho_following", "sam_step_due", "sampa", "sometimes", "unperturbed", "vasso", "wsam"
]
