"""The SAM family as the training binary runs it: one entry per `config.sam.variant`.

An entry (`Variant`) declares everything the rest of the project needs to know about a
variant: how it builds the optimizer chain around the base optimizer, its own fields of
`config.sam` and their ranges, which of SAM's shared options it honours, when its second
pass runs (decided on the host), whether its clean gradient only perturbs, and which
parameters to evaluate. Validation, the optimizer (`optim.py`), the training loop,
evaluation and the analyses read entries through `get`; no other module names a variant.
Adding one is its transformation in this package, an entry in `VARIANTS`, and its tests.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax

from sam_jax.errors import UsageError
from sam_jax.family import aimed, cheaper, stronger
from sam_jax.masks import normalization_layers
from sam_jax.sam import sam

Range = tuple[Callable[[Any], bool], str]  # a test of the value, and what the value must be
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

  def perturb_options(self) -> dict[str, Any]:
    options = {name: self.sam[name] for name in PERTURB}
    options["perturbation_mask"] = MASKS[options["perturbation_mask"]]
    return options


def _as_trained(params: Params, opt_state: OptState) -> Params:
  del opt_state
  return params


@dataclasses.dataclass(frozen=True)
class Variant:
  """One member of the family as the binary runs it (see the module docstring)."""
  summary: str  # one line: what it does
  build: Callable[[Chain], optax.GradientTransformationExtraArgs]  # the whole chain
  fields: Mapping[str, Range] = dataclasses.field(default_factory=dict)  # its own, in sam.
  takes: frozenset[str] = frozenset()  # the SHARED_OPTIONS it honours
  ascent_only: bool = False  # the update is the gradient at w + eps: g only perturbs
  # Update number t (0-based) -> whether the second pass runs, for a variant that skips it
  # by a rule of its own (config.sam -> rule); `every` and `probability` are generic.
  second_pass: Callable[[Any], Callable[[int], bool]] | None = None
  # The parameters to evaluate, from those the optimizer keeps and its state.
  evaluated: Callable[[Params, OptState], Params] = _as_trained
  check: Callable[[Any], None] = lambda sam: None  # what `takes` cannot say


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


def _decoupled_wsam_every_step(s: Any) -> None:
  if s.wsam_decoupled and skips(s):
    raise UsageError("Decoupled WSAM runs its sharpness step at every update: leave "
                     "--config.sam.every=1, --config.sam.probability=1 and "
                     "--config.sam.late_phase=1, or set --config.sam.wsam_decoupled=False.")


def _at_least_zero(value) -> bool:
  return value >= 0


def _in_unit_interval(value) -> bool:
  return 0 < value <= 1


VARIANTS: dict[str, Variant] = {
    "sam": Variant("SAM (Foret et al. 2021; ASAM with adaptive): the gradient at w + rho g/||g||",
                   in_front(_sam), takes=frozenset(SHARED_OPTIONS), ascent_only=True),
    "gsam": Variant(
        "GSAM (Zhuang et al. 2022): g_sam - alpha g_perp, rho following the learning rate",
        in_front(_gsam), takes=PERTURB | SKIP, fields={
            "gsam_alpha": (_at_least_zero, ">= 0 (0: SAM)"),
            "gsam_rho_min": (lambda r: r is None or r >= 0, "a radius >= 0, or unset"),
        }),
    "looksam": Variant(
        "LookSAM (Liu et al. 2022): SAM every k steps, its orthogonal part reused between",
        in_front(_looksam), takes=PERTURB, fields={
            "looksam_every": (lambda k: k > 0, "a positive number of steps (1: SAM)"),
            "looksam_alpha": (_at_least_zero, ">= 0 (the paper's is 0.7)"),
        }, second_pass=lambda s: lambda t: t % s.looksam_every == 0),
    "fsam": Variant(
        "F-SAM (Li et al. 2024): the ascent along g - sigma EMA(g), the full gradient removed",
        in_front(_fsam), takes=PERTURB | SKIP, ascent_only=True, fields={
            "fsam_sigma": (_at_least_zero, ">= 0 (0: SAM; the authors' is 1)"),
            "fsam_lambda": (lambda x: 0 <= x < 1, "in [0, 1) (the EMA's decay)"),
        }),
    "vasso": Variant(
        "VaSSO (Li and Giannakis 2023): the ascent along an EMA of the gradients", in_front(_vasso),
        takes=PERTURB | SKIP, ascent_only=True, fields={
            "vasso_theta": (_in_unit_interval, "in (0, 1] (1: SAM; the weight of the new g)"),
        }),
    "esam": Variant(
        "ESAM (Du et al. 2022): some tensors perturbed, the SAM pass on the sharpest examples",
        in_front(_esam), takes=SKIP, ascent_only=True, fields={
            "esam_beta": (_in_unit_interval, "a probability in (0, 1] (1: every tensor)"),
            "esam_gamma": (_in_unit_interval, "a fraction in (0, 1] (1: every example)"),
        }),
    "gcsam": Variant("GCSAM (Hassan et al. 2025): the ascent along the centralized gradient",
                     in_front(_gcsam), takes=SKIP, ascent_only=True),
    "msam": Variant(
        "Momentum-SAM (Becker et al. 2024): the gradient at w - rho v/||v||, no second pass", _msam,
        evaluated=cheaper.unperturbed),
    "wsam": Variant("WSAM (Yue et al. 2023): sharpness as a weighted regularizer", _wsam,
                    takes=PERTURB | SKIP, check=_decoupled_wsam_every_step, fields={
                        "wsam_gamma": (lambda g: 0 <= g < 1, "in [0, 1) (0.5: SAM)"),
                    }),
}


def get(name: str) -> Variant:
  """The entry of `name`.

  Raises:
    UsageError: for a name the registry does not know, listing those it does.
  """
  if name not in VARIANTS:
    raise UsageError(f"Unknown SAM variant '{name}': choose one of {', '.join(VARIANTS)} "
                     "(--config.sam.variant).")
  return VARIANTS[name]


def field_ranges() -> dict[str, Range]:
  """The ranges of every variant's own fields, as `sam.FIELD`."""
  return {f"sam.{field}": r for variant in VARIANTS.values() for field, r in variant.fields.items()}


def check(s: Any) -> None:
  """Refuses shared options that `s.variant` does not honour, and its own conflicts.

  Raises:
    UsageError: one line naming the option, its value and the variants that take it.
  """
  variant = get(s.variant)
  for option, off in SHARED_OPTIONS.items():
    if option not in variant.takes and s[option] != off:
      those = [name for name, v in VARIANTS.items() if option in v.takes]
      raise UsageError(f"--config.sam.{option}={s[option]} is not an option of {s.variant} "
                       f"({variant.summary}): leave it at {off}, or choose a variant that takes "
                       f"it ({', '.join(those)}).")
  variant.check(s)


def build_chain(chain: Chain) -> optax.GradientTransformationExtraArgs:
  """The whole optimizer chain of `chain.sam.variant`."""
  return get(chain.sam.variant).build(chain)


def ascent_only(s: Any) -> bool:
  """Whether the clean gradient serves only to perturb at every step (SAM, GCSAM, ESAM on
  every step), not in the update too."""
  return s.rho > 0 and get(s.variant).ascent_only and not skips(s)


def second_pass_schedule(s: Any, seed: int, total_steps: int = 0) -> Callable[[int], bool | None]:
  """Update number t (0-based) -> whether its second pass runs (a Python bool, decided on
  the host with numpy), for the variants that skip it on some steps; None for the others
  (their program decides, `steps.train_step`'s `sam_step`)."""
  variant = get(s.variant)
  if variant.second_pass is not None:
    return variant.second_pass(s)
  if skips(s):
    start = late_start(s, total_steps)
    return lambda t: bool(
        cheaper.sam_step_due(
            np.int64(t), every=s.every, probability=s.probability, seed=seed, start=start))
  return lambda t: None


def evaluated(s: Any) -> Callable[[Params, OptState], Params]:
  """The parameters `s.variant` evaluates, from the params and optimizer state it keeps."""
  return get(s.variant).evaluated
