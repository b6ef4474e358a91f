"""The members of the SAM family that change the SAM gradient itself: GSAM, GCSAM, WSAM,
Functional-SAM."""

from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from sam_jax.family.common import Schedule, combine, dot
from sam_jax.sam import AxisName, GradFn, SamState, gradient, init_state, perturb, required


def rho_following(learning_rate: Schedule, rho_max: float, rho_min: float, lr_max: float,
                  lr_min: float) -> Schedule:
  r"""GSAM's radius tied to the learning rate (Zhuang et al. 2022, Algorithm 1):

  .. math::

      \rho_t = \rho_\min + (\rho_\max - \rho_\min) \,
          \frac{\mathrm{lr}_t - \mathrm{lr}_\min}{\mathrm{lr}_\max - \mathrm{lr}_\min},

  rho_max when lr_max == lr_min (big_vision trainers/proj/gsam/gsam.py:72-75). Like
  big_vision, not clamped: during a warmup below lr_min, rho_t falls below rho_min.
  """
  if lr_max == lr_min:
    return lambda count: jnp.asarray(rho_max, jnp.float32)
  return lambda count: rho_min + (rho_max - rho_min) * (learning_rate(count) - lr_min) / (
      lr_max - lr_min)


def gsam(rho: float | Schedule, *, alpha: float = 0.01, eps: float = 1e-12, aux_init: Any = None,
         **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""GSAM (Zhuang et al., ICLR 2022, arXiv 2203.08065): surrogate-gap guided SAM.

  With g = grad f(w) (clean) and g_p = grad f(w + eps) (the SAM gradient), g is split
  into its part along g_p and the rest, g_perp, and the update gradient is

  .. math::

      g_p - \alpha \, g_\perp, \qquad
      g_\perp = g - \Big\langle g, \frac{g_p}{\|g_p\|} \Big\rangle \frac{g_p}{\|g_p\|},

  which descends f_p while ascending the clean loss only across g_p, shrinking the
  surrogate gap f_p - f. alpha = 0 is SAM. `rho` is a number or a schedule of the step
  (`rho_following`: rho tied to the learning rate, as the paper). Per replica, then
  averaged (big_vision trainers/proj/gsam/gsam.py:77-105 runs per worker; train.py:211
  averages the result). Defaults: alpha 0.01 (the paper's ResNet-50 ImageNet setting;
  0.4-1.0 for ViTs).
  """
  def init_fn(params):
    del params
    return init_state(aux_init)

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del extra_args
    params, grad_fn = required("GSAM", params, grad_fn)
    radius = rho(state.count) if callable(rho) else rho
    robust, aux = gradient(grad_fn, perturb(params, updates, radius, eps=eps, **perturb_kwargs),
                           state)
    along = dot(updates, robust) / (dot(robust, robust) + eps)
    updates = combine(1.0 + alpha * along, robust, -alpha, updates)
    return updates, SamState(state.count + 1, aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def centralize_gradient(grads: optax.Updates) -> optax.Updates:
  """Gradient centralization (Yong et al. 2020): each kernel (ndim > 1) minus its mean
  over all axes but the last, the output axis in Flax's layouts ([in, out],
  [kh, kw, in, out]); biases and norms unchanged. (`optax.centralize` averages over
  all axes but the first: PyTorch's output axis, not Flax's.)"""
  return jax.tree.map(
      lambda g: g - jnp.mean(g, tuple(range(g.ndim - 1)), keepdims=True)
      if g.ndim > 1 else g, grads)


def gcsam(rho: float, *, eps: float = 1e-12,
          aux_init: Any = None) -> optax.GradientTransformationExtraArgs:
  r"""GCSAM (Hassan et al. 2025, arXiv 2501.11584): SAM ascending along the centralized gradient.

  .. math::

      \epsilon = \rho \, \mathrm{GC}(g) / \|g\|, \qquad
      \text{update gradient} = \nabla L(w + \epsilon) \ \text{(not centralized)}

  as the authors' code does (Mohamed-Hassan22/GCSAM cifar10_gcsam_resnet50.py:124-131:
  the norm is taken before centralizing, so ||eps|| = rho ||GC(g)|| / ||g|| <= rho; the
  centralization of the final gradient is commented out at :143).
  """
  def init_fn(params):
    del params
    return init_state(aux_init)

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del extra_args
    params, grad_fn = required("GCSAM", params, grad_fn)
    scale = rho / (optax.tree_utils.tree_norm(updates) + eps)
    perturbed = jax.tree.map(lambda w, g: w + (scale * g).astype(w.dtype), params,
                             centralize_gradient(updates))
    updates, aux = gradient(grad_fn, perturbed, state)
    return updates, SamState(state.count + 1, aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def wsam(rho: float, *, gamma: float = 0.9, eps: float = 1e-12, aux_init: Any = None,
         **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""WSAM (Yue et al., KDD 2023, arXiv 2305.15817), coupled form: SAM's sharpness as a
  weighted regularizer, L(w) + gamma / (1 - gamma) (L(w + eps) - L(w)), whose gradient is

  .. math::

      g + a \, (g_s - g), \qquad a = \gamma / (1 - \gamma)

  with g_s = grad L(w + eps). gamma = 0.5 is SAM, gamma = 0 the base optimizer. The
  authors' default is the decoupled form (`decoupled_wsam`); this is their
  `decouple=False` (dlrover atorch/optimizers/wsam.py:91).
  """
  if not 0 <= gamma < 1:
    raise ValueError(f"WSAM needs gamma in [0, 1), got {gamma}.")
  weight = gamma / (1.0 - gamma)

  def init_fn(params):
    del params
    return init_state(aux_init)

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del extra_args
    params, grad_fn = required("WSAM", params, grad_fn)
    sam_grads, aux = gradient(grad_fn, perturb(params, updates, rho, eps=eps, **perturb_kwargs),
                              state)
    return combine(1.0 - weight, updates, weight, sam_grads), SamState(state.count + 1, aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def decoupled_wsam(rho: float, base: optax.GradientTransformation, learning_rate: float | Schedule,
                   *, gamma: float = 0.9, axis_name: AxisName | None = None, eps: float = 1e-12,
                   aux_init: Any = None, **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""WSAM, decoupled (the authors' default): the base optimizer steps on the clean g, and
  the sharpness term is a plain step of the current learning rate, without momentum:

  .. math::

      w \leftarrow w + \mathrm{base}(g) - \mathrm{lr}_t \, a \, (g_s - g),
          \qquad a = \gamma / (1 - \gamma)

  (dlrover atorch/optimizers/wsam.py:93-103; gamma 0.9, so a = 9, with rho 0.2 in the
  authors' CIFAR-10 example). `base` is the whole optimizer chain after SAM (replica
  mean, clipping, momentum, learning rate); g_s - g is averaged over `axis_name`.
  """
  front = wsam(rho, gamma=0.5, eps=eps, aux_init=aux_init, **perturb_kwargs)  # g_s itself
  weight = gamma / (1.0 - gamma)

  def init_fn(params):
    return (front.init(params), base.init(params))

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del extra_args
    front_state, base_state = state
    sam_grads, front_state = front.update(updates, front_state, params, grad_fn=grad_fn)
    base_updates, base_state = base.update(updates, base_state, params)
    sharpness = combine(1.0, sam_grads, -1.0, updates)
    if axis_name is not None:
      sharpness = jax.lax.pmean(sharpness, axis_name)
    count = cast(SamState, front_state).count  # `front` is a wsam
    lr = learning_rate(count - 1) if callable(learning_rate) else learning_rate
    return combine(1.0, base_updates, -lr * weight, sharpness), (front_state, base_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def functional_sam(
    tx: optax.GradientTransformationExtraArgs) -> optax.GradientTransformationExtraArgs:
  r"""Functional-SAM (Singh, Mobahi, Agarwala and Dauphin, ICML 2025, arXiv 2502.02407,
  "Avoiding spurious sharpness minimization broadens applicability of SAM"): `tx` (SAM,
  or any member with its protocol) with each gradient at a perturbed point replaced by its
  functional part.

  With F(w) the logits, L the loss of the logits and R the in-loss regularizer, the
  chain rule splits SAM's gradient at w + eps into a functional path (the Jacobian
  moves) and a logit path (dL/dF moves). Functional-SAM keeps the first:

  .. math::

      g_\mathrm{SAM} &= J_F(w + \epsilon)^\top \, \frac{\partial L}{\partial F}
          \big(F(w + \epsilon)\big) + \nabla R(w + \epsilon) \qquad \text{(SAM)} \\
      g_\mathrm{fun} &= J_F(w + \epsilon)^\top \, \frac{\partial L}{\partial F}
          \big(F(w)\big) + \nabla R(w + \epsilon) \qquad \text{(Functional-SAM)}

  one vector-Jacobian product at w + eps with the clean pass's dL/dF as cotangent: the
  cost of SAM's second pass. eps is `tx`'s (SAM: rho g/||g||). Where dL/dF does not
  depend on F (a loss linear in the logits) it is SAM; at eps = 0 it is the clean
  gradient. The authors' code is not public; the formula is the paper's. The paper
  trains with decoupled weight decay (AdamW); an in-loss penalty R has no logits, so its
  gradient stays SAM's, at w + eps (our choice).

  It calls `grad_fn(p, functional=True)`, which must return g_fun at p with dL/dF taken
  at the params of this update (`steps.train_step` does; for a loop of your own:
  `jax.vjp` of the logits at p, applied to `jax.grad` of the loss in the logits at w).
  """
  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    params, grad_fn = required("Functional-SAM", params, grad_fn)
    return tx.update(updates, state, params, grad_fn=lambda p: grad_fn(p, functional=True),
                     **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)
