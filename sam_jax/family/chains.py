"""How each member of the SAM family builds the optimizer chain the binary trains with: the
run's parts (`Chain`) in, one `optax` transformation out; `registry.py` names them."""

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

from sam_jax.family import aimed, bayesian, cheaper, parallel, stronger
from sam_jax.masks import normalization_layers
from sam_jax.sam import sam

Params = Any
OptState = Any

# SAM's options that not every variant honours, and the values that leave them off.
SHARED_OPTIONS = {
    "adaptive": False,  # ASAM's scaled ball
    "eta": 0.01,
    "p": 2.0,
    "perturbation_mask": "all",  # SAM-ON: "norm", the normalization layers only
    "sync_perturbations": False,  # one perturbation for several replicas
    "every": 1,  # the second pass on some steps only (`family.sometimes`)
    "probability": 1.0,
    "late_phase": 1.0,  # the fraction of the run, at its end, with the second pass
}
PERTURB = frozenset({"adaptive", "eta", "p", "perturbation_mask"})  # what `sam.perturb` takes
MASKS = {"all": None, "norm": normalization_layers}  # config.sam.perturbation_mask
SKIP = frozenset({"every", "probability", "late_phase"})


@dataclasses.dataclass(frozen=True)
class Chain:
  """What an entry builds the optimizer from."""
  sam: Any  # config.sam: rho, the shared options and every variant's own fields
  base: tuple[optax.GradientTransformation, ...]  # after SAM: replica mean, clipping, ...
  learning_rate: Callable[[Any], Any]  # the schedule, of the update count
  learning_rates: tuple[float, float]  # its peak and final values
  replica_axes: tuple[str, ...]
  seed: int
  aux_init: Any  # what the second pass returns besides its gradient (`sam(aux_init=...)`)
  total_steps: int = 0  # the run's length (late_phase)
  epoch_examples: int = 0  # the training examples an epoch sees (bSAM's N)

  def perturb_options(self) -> dict[str, Any]:
    options = {name: self.sam[name] for name in PERTURB}
    options["perturbation_mask"] = MASKS[options["perturbation_mask"]]
    return options


def skips(s: Any) -> bool:
  """Whether the shared options skip the second pass on some steps."""
  return s.every > 1 or s.probability < 1 or s.late_phase < 1


def late_start(s: Any, total_steps: int) -> int:
  """The first update with the second pass under `late_phase`: the last late_phase of
  `total_steps` run it."""
  return total_steps - round(s.late_phase * total_steps)


def in_front(front: Callable[[Chain], optax.GradientTransformationExtraArgs]):
  """The chain of a variant that replaces the gradient before the base optimizer; with
  `every` or `probability`, `family.sometimes` runs it on some steps only."""
  def build(chain: Chain) -> optax.GradientTransformationExtraArgs:
    tx, s = front(chain), chain.sam
    if skips(s):
      tx = cheaper.sometimes(tx, every=s.every, probability=s.probability, seed=chain.seed,
                             start=late_start(s, chain.total_steps))
    return optax.chain(tx, *chain.base)

  return build


def _sam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return sam(s.rho, sync_axis_name=c.replica_axes if s.sync_perturbations else None,
             sync_group_size=s.sync_group_size, aux_init=c.aux_init if s.rho else None,
             **c.perturb_options())


def _gsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  rho = s.rho if s.gsam_rho_min is None else stronger.rho_following(
      c.learning_rate, s.rho, s.gsam_rho_min, *c.learning_rates)
  return stronger.gsam(rho, alpha=s.gsam_alpha, aux_init=c.aux_init, **c.perturb_options())


def _looksam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return cheaper.looksam(s.rho, every=s.looksam_every, alpha=s.looksam_alpha,
                         axis_name=c.replica_axes, aux_init=c.aux_init, **c.perturb_options())


def _fsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return aimed.friendly_sam(s.rho, sigma=s.fsam_sigma, lmbda=s.fsam_lambda,
                            axis_name=c.replica_axes, aux_init=c.aux_init, **c.perturb_options())


def _vasso(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return aimed.vasso(s.rho, theta=s.vasso_theta, axis_name=c.replica_axes, aux_init=c.aux_init,
                     **c.perturb_options())


def _esam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return cheaper.esam(s.rho, beta=s.esam_beta, gamma=s.esam_gamma, seed=c.seed, aux_init=c.aux_init)


def _gcsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  return stronger.gcsam(c.sam.rho, aux_init=c.aux_init)


def _msam(c: Chain) -> optax.GradientTransformationExtraArgs:
  return optax.chain(*c.base, cheaper.momentum_perturbation(c.sam.rho))


def _coupled_wsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  return stronger.wsam(c.sam.rho, gamma=c.sam.wsam_gamma, aux_init=c.aux_init,
                       **c.perturb_options())


def _wsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  if not s.wsam_decoupled:
    return in_front(_coupled_wsam)(c)
  return stronger.decoupled_wsam(s.rho, optax.chain(*c.base), c.learning_rate,
                                 gamma=s.wsam_gamma, axis_name=c.replica_axes, aux_init=c.aux_init,
                                 **c.perturb_options())


def _bsam_num_data(s: Any, epoch_examples: int) -> float:
  """bSAM's N: the examples an epoch sees times the authors' augmentation factor."""
  return epoch_examples * s.bsam_data_factor


def _bsam(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  return bayesian.bayesian_sam(c.learning_rate, rho=s.rho, beta1=s.bsam_beta1, beta2=s.bsam_beta2,
                               prior_precision=s.bsam_prior_precision,
                               num_data=_bsam_num_data(s, c.epoch_examples),
                               init_precision=s.bsam_init_precision, damping=s.bsam_damping,
                               seed=c.seed, axis_name=c.replica_axes, aux_init=c.aux_init)


def _sampa(c: Chain) -> optax.GradientTransformationExtraArgs:
  s = c.sam
  base = optax.chain(*c.base) if c.base else optax.identity()
  return parallel.sampa(s.rho, base, lmbda=s.sampa_lambda, axis_name=c.replica_axes,
                        aux_init=c.aux_init, **c.perturb_options())


def bsam_posterior(s: Any, epoch_examples: int) -> Callable[[Params, OptState, Any], Params]:
  """(params, opt_state, key) -> a draw of bSAM's posterior, the N of its training."""
  def sample(params: Params, opt_state: OptState, key: Any) -> Params:
    precision = bayesian.precision(opt_state)
    assert precision is not None, "a bSAM posterior needs bSAM's optimizer state"
    return bayesian.posterior_sample(params, precision, _bsam_num_data(s, epoch_examples), key)

  return sample


# Each variant's whole chain, as `registry.VARIANTS` names it.
sam_chain = in_front(_sam)
functional_chain = in_front(lambda c: stronger.functional_sam(_sam(c)))
gsam_chain = in_front(_gsam)
looksam_chain = in_front(_looksam)
fsam_chain = in_front(_fsam)
vasso_chain = in_front(_vasso)
esam_chain = in_front(_esam)
gcsam_chain = in_front(_gcsam)
msam_chain, wsam_chain, bsam_chain, sampa_chain = _msam, _wsam, _bsam, _sampa
