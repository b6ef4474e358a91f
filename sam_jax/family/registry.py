"""The SAM family as the training binary runs it: one entry per `config.sam.variant`.

An entry (`Variant`) declares everything the rest of the project needs to know about a
variant: how it builds the optimizer chain around the base optimizer, its own fields of
`config.sam` and their ranges, which of SAM's shared options it honours, when its second
pass runs (decided on the host), whether its clean gradient only perturbs, and which
parameters to evaluate. Validation, the optimizer (`optim.py`), the training loop,
evaluation and the analyses read entries through `get`; no other module names a variant.
Adding one is its transformation in this package, its chain (`chains.py`), an entry in
`VARIANTS`, and its tests.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax

from sam_jax.errors import UsageError
from sam_jax.family import chains, cheaper
from sam_jax.family.chains import PERTURB, SHARED_OPTIONS, SKIP, Chain, late_start, skips

Range = tuple[Callable[[Any], bool], str]  # a test of the value, and what the value must be
Params = Any
OptState = Any


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
  check: Callable[[Any], None] = lambda config: None  # what `takes` cannot say (whole config)
  clean_gradient: bool = True  # False: the update ignores it, and the step runs no clean pass
  # True: the step sees the previous batch and the current one, their replicas interleaved
  # (`replicas.paired_batches`): twice the examples, each seen by two steps.
  paired_batches: bool = False
  # A posterior over the parameters, for a predictive evaluation: (config.sam, the
  # training examples an epoch sees) -> (params, opt_state, key) -> a sample; None: no
  # posterior (the evaluated params are a point estimate).
  posterior: Callable[[Any, int], Callable[[Params, OptState, Any], Params]] | None = None


def _bsam_alone(config: Any) -> None:
  """bSAM is the whole optimizer: the base optimizer's decay and clipping must be off."""
  wanted = {"optimizer": "sgd", "weight_decay": 0, "gradient_clipping": 0}
  if wrong := [f"--config.{k}={v}" for k, v in wanted.items() if config[k] != v]:
    raise UsageError(
        "bSAM is the whole optimizer (its own momentum sam.bsam_beta1, precision and prior decay "
        "sam.bsam_prior_precision / N), not one in front of the base optimizer's: set "
        f"{' '.join(wrong)}.")


def _decoupled_wsam_every_step(config: Any) -> None:
  s = config.sam
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
                   chains.sam_chain, takes=frozenset(SHARED_OPTIONS), ascent_only=True),
    "gsam": Variant(
        "GSAM (Zhuang et al. 2022): g_sam - alpha g_perp, rho following the learning rate",
        chains.gsam_chain, takes=PERTURB | SKIP, fields={
            "gsam_alpha": (_at_least_zero, ">= 0 (0: SAM)"),
            "gsam_rho_min": (lambda r: r is None or r >= 0, "a radius >= 0, or unset"),
        }),
    "looksam": Variant(
        "LookSAM (Liu et al. 2022): SAM every k steps, its orthogonal part reused between",
        chains.looksam_chain, takes=PERTURB, fields={
            "looksam_every": (lambda k: k > 0, "a positive number of steps (1: SAM)"),
            "looksam_alpha": (_at_least_zero, ">= 0 (the paper's is 0.7)"),
        }, second_pass=lambda s: lambda t: t % s.looksam_every == 0),
    "fsam": Variant(
        "F-SAM (Li et al. 2024): the ascent along g - sigma EMA(g), the full gradient removed",
        chains.fsam_chain, takes=PERTURB | SKIP, ascent_only=True, fields={
            "fsam_sigma": (_at_least_zero, ">= 0 (0: SAM; the authors' is 1)"),
            "fsam_lambda": (lambda x: 0 <= x < 1, "in [0, 1) (the EMA's decay)"),
        }),
    "vasso": Variant(
        "VaSSO (Li and Giannakis 2023): the ascent along an EMA of the gradients",
        chains.vasso_chain, takes=PERTURB | SKIP, ascent_only=True, fields={
            "vasso_theta": (_in_unit_interval, "in (0, 1] (1: SAM; the weight of the new g)"),
        }),
    "esam": Variant(
        "ESAM (Du et al. 2022): some tensors perturbed, the SAM pass on the sharpest examples",
        chains.esam_chain, takes=SKIP, ascent_only=True, fields={
            "esam_beta": (_in_unit_interval, "a probability in (0, 1] (1: every tensor)"),
            "esam_gamma": (_in_unit_interval, "a fraction in (0, 1] (1: every example)"),
        }),
    "gcsam": Variant("GCSAM (Hassan et al. 2025): the ascent along the centralized gradient",
                     chains.gcsam_chain, takes=SKIP, ascent_only=True),
    "msam": Variant(
        "Momentum-SAM (Becker et al. 2024): the gradient at w - rho v/||v||, no second pass",
        chains.msam_chain, evaluated=cheaper.unperturbed),
    "wsam": Variant("WSAM (Yue et al. 2023): sharpness as a weighted regularizer",
                    chains.wsam_chain, takes=PERTURB | SKIP, check=_decoupled_wsam_every_step,
                    fields={
                        "wsam_gamma": (lambda g: 0 <= g < 1, "in [0, 1) (0.5: SAM)"),
                    }),
    "functional": Variant(
        "Functional-SAM (Singh et al. 2025): the Jacobian at w + eps, dL/dlogits at w",
        chains.functional_chain, takes=frozenset(SHARED_OPTIONS), ascent_only=True),
    "sampa": Variant(
        "SAMPa (Xie et al. 2024): the ascent and a lookahead gradient at once, on paired replicas",
        chains.sampa_chain, takes=PERTURB, clean_gradient=False, paired_batches=True, fields={
            "sampa_lambda": (lambda x: 0 <= x <= 1, "in [0, 1] (the lookahead's weight)"),
        }),
    "bsam": Variant(
        "bSAM (Moellenhoff and Khan 2023): SAM from a posterior sample, with its own precision",
        chains.bsam_chain, check=_bsam_alone, clean_gradient=False, posterior=chains.bsam_posterior,
        fields={
            "bsam_beta1": (lambda b: 0 <= b < 1, "in [0, 1) (the momentum's decay)"),
            "bsam_beta2": (lambda b: 0 <= b < 1, "in [0, 1) (the precision's decay)"),
            "bsam_prior_precision": (_at_least_zero, ">= 0 (the prior's weight decay times N)"),
            "bsam_data_factor": (lambda f: f > 0, "> 0 (N = the training examples times it)"),
            "bsam_init_precision": (lambda s: s > 0, "> 0 (the precision s at the start)"),
            "bsam_damping": (_at_least_zero, ">= 0 (added to the precision's update)"),
            "bsam_predictive_samples": (_at_least_zero, ">= 0 posterior samples (0: none)"),
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


def check(config: Any) -> None:
  """Refuses shared options that `config.sam.variant` does not honour, and its own conflicts
  (with the rest of the config too).

  Raises:
    UsageError: one line naming the option, its value and the variants that take it.
  """
  s = config.sam
  variant = get(s.variant)
  for option, off in SHARED_OPTIONS.items():
    if option not in variant.takes and s[option] != off:
      those = [name for name, v in VARIANTS.items() if option in v.takes]
      raise UsageError(f"--config.sam.{option}={s[option]} is not an option of {s.variant} "
                       f"({variant.summary}): leave it at {off}, or choose a variant that takes "
                       f"it ({', '.join(those)}).")
  variant.check(config)


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


def clean_gradient(s: Any) -> bool:
  """Whether the update of `s.variant` uses the train step's clean gradient at w."""
  return get(s.variant).clean_gradient


def paired_batches(s: Any) -> bool:
  """Whether `s.variant`'s step takes the previous batch with the current one."""
  return get(s.variant).paired_batches


def posterior(s: Any, epoch_examples: int) -> Callable[[Params, OptState, Any], Params] | None:
  """(params, opt_state, key) -> a sample of the variant's posterior, when it keeps one and
  `s.bsam_predictive_samples` asks for a predictive evaluation; else None."""
  sampler = get(s.variant).posterior
  if sampler is None or not s.bsam_predictive_samples:
    return None
  return sampler(s, epoch_examples)
