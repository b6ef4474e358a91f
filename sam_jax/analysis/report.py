"""Analyses of a training run: its checkpoint and training set in, a report and plots out.

`load_run` rebuilds a workdir's model, variables and training set (the labels it was
trained on, label noise included; no augmentation); `analyze` measures the Hessian
spectrum and the m-sharpness; `write` saves analysis.json and the PNG plots, and
`write_training_curves` the run's TensorBoard curves. `python -m sam_jax.analysis`
(`__main__.py`) runs them.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sam_jax import (checkpoints, console, events, losses, optim, replicas, run_files, run_setup,
                     steps)
from sam_jax.analysis import hessian, loss, plots, sharpness
from sam_jax.data import pipeline, run_data
from sam_jax.data.datasets import get_dataset_info
from sam_jax.errors import UsageError
from sam_jax.family import registry


def load_run(workdir: str, step: int | None = None, use_ema: bool = False):
  """(config, dataset info, model, {"params", "batch_stats"}, step) of a training workdir.

  Raises:
    UsageError: one line when there is no config.json or checkpoint, or when the
      checkpoint does not fit the config's model.
  """
  config = run_files.run_config(workdir)  # config.json with its recorded changes
  if config is None:
    raise UsageError(f"{workdir} is not a training workdir (no config.json): pass the "
                     "--workdir of a python -m sam_jax.train run.")
  step = checkpoints.saved_step(workdir, step)
  info = get_dataset_info(config.dataset, config.normalization)
  config.sync_batch_norm = False  # no cross-replica BatchNorm in the analyses
  config.dtype = "float32"  # the loss surface in the precision its Hessian needs
  model = run_setup.build_model(config, info.num_classes)
  # The saved state laid out as training keeps it: the optimizer's typed states included.
  tx = optim.create_optimizer(config, 1, replicas.REPLICA_AXES)
  shape = run_setup.image_shape(config, model, info)
  like = jax.eval_shape(
      lambda: steps.init_train_state(model, tx, jax.random.key(0), shape, ema=config.ema_decay > 0))
  step, state = checkpoints.read(workdir, step, like)
  if use_ema and not state.ema:
    raise UsageError(f"The run in {workdir} kept no EMA (ema_decay 0): drop --use_ema.")
  variables = state.ema if use_ema else {  # the parameters the variant evaluates
      "params": registry.evaluated(config.sam)(state.params, state.opt_state),
      "batch_stats": state.batch_stats
  }
  return config, info, model, variables, step


def describe_run(workdir: str, config, step: int) -> dict:
  """What the report is about: the run, how it was trained, and its results.json."""
  description = {
      "workdir": os.path.abspath(workdir),
      "step": step,
      "model": config.model_name,
      "dataset": config.dataset,
      "trained_with": {
          "rho": config.sam.rho,
          "m": config.sam.m,
          "label_noise": config.label_noise,
          "seed": config.seed
      }
  }
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    with open(results_path) as f:
      description["results"] = json.load(f)
  return description


def training_examples(config, info, model, num_examples: int = 0) -> dict[str, np.ndarray]:
  """The run's training examples as evaluation sees images (normalised, no augmentation),
  with the labels it was trained on (its label noise); the first `num_examples` (0: all)."""
  examples, _ = run_data.load_examples(config, info, "train", whole=True)
  images, labels, count = [], [], 0
  for batch in pipeline.eval_batches(info, examples, 256, run_setup.input_size(config, model, info),
                                     resize_method=config.get("resize_method", "bicubic")):
    keep = batch["mask"] > 0
    images.append(batch["image"][keep])
    labels.append(batch["label"][keep])
    count += int(keep.sum())
    if num_examples and count >= num_examples:
      break
  if not count:
    raise UsageError(f"The training split of {config.dataset} has no examples to analyse.")
  examples = {"image": np.concatenate(images), "label": np.concatenate(labels)}
  return {k: v[:num_examples or count] for k, v in examples.items()}


def mean_loss_and_error(model, variables, examples, batch_size: int,
                        kind: str = "softmax") -> tuple[float, float]:
  """Mean cross-entropy (of `kind`) and error of the model (eval mode) on `examples`."""
  @jax.jit
  def sums(batch):
    logits = model.apply(variables, batch["image"], train=False).astype(jnp.float32)
    example_losses = losses.cross_entropy(logits, batch["label"], kind=kind)
    errors = jnp.argmax(logits, -1) != batch["label"]
    return jnp.sum(example_losses * batch["mask"]), jnp.sum(errors * batch["mask"])

  totals = np.sum([np.asarray(sums(b)) for b in loss.padded_batches(examples, batch_size)], 0)
  return float(totals[0]) / len(examples["label"]), float(totals[1]) / len(examples["label"])


def analyze(model, variables, examples, *, m_values=(1, 4, 16, 64, 256), rho: float = 0.05,
            batch_size: int = 256, train_batch_norm: bool = False, top_k: int = 5,
            lanczos_steps: int = 40, slq_vectors: int = 2, hutchinson_probes: int = 20,
            power_iterations: int = 0, seed: int = 0, loss_kind: str = "softmax"):
  """The numbers of analysis.json, and the spectral density (None without a Hessian).

  The Hessian uses every example; the m-sharpness the first N, N the largest multiple of
  lcm(m_values) x devices, so that every m sees the same examples. `loss_kind` is the
  run's loss (config.loss), the function measured.
  """
  mesh = replicas.make_mesh()
  key = jax.random.key(seed)
  count = len(examples["label"])
  loss_fn = loss.example_loss_fn(model, variables["batch_stats"], train_batch_norm, kind=loss_kind)
  train_loss, train_error = mean_loss_and_error(model, variables, examples, batch_size, loss_kind)
  report = {
      "num_examples": count,
      "batch_norm": "train" if train_batch_norm else "eval",
      "train_loss": train_loss,
      "train_error": train_error
  }
  density = None
  if slq_vectors:
    products = slq_vectors * lanczos_steps + hutchinson_probes + power_iterations * top_k
    with console.tally("Hessian-vector products", products, "products") as counted:
      report["hessian"], density = hessian_report(
          loss_fn, variables["params"], loss.padded_batches(examples, batch_size * mesh.size), mesh,
          key, counted.advance, top_k=top_k, lanczos_steps=lanczos_steps, slq_vectors=slq_vectors,
          hutchinson_probes=hutchinson_probes, power_iterations=power_iterations)
  if m_values:
    unit = math.lcm(*m_values) * mesh.size
    used = count // unit * unit
    if not used:
      raise UsageError(f"m-sharpness for m in {list(m_values)} over {mesh.size} devices needs "
                       f"at least {unit} examples, and there are {count}: use smaller m.")
    subset = {k: examples[k][:used] for k in ("image", "label")}
    values = {}
    with console.tally("m-sharpness", len(m_values), "values of m") as counted:
      for m in m_values:
        values[str(m)] = sharpness.m_sharpness(loss_fn, variables["params"], subset, m, rho, mesh,
                                               batch_size * mesh.size)
        counted.advance()
    report["m_sharpness"] = {"rho": rho, "num_examples": used, "values": values}
  return report, density


def hessian_report(loss_fn, params, batches, mesh, key: jax.Array, advance, *, top_k: int,
                   lanczos_steps: int, slq_vectors: int, hutchinson_probes: int,
                   power_iterations: int):
  """The Hessian's part of analysis.json, and its spectral density; `advance()` is called
  after each Hessian-vector product (the progress display)."""
  dataset_hvp, dim = hessian.dataset_hvp(loss_fn, params, batches, mesh)

  def hvp(vectors):
    product = dataset_hvp(vectors)
    advance()
    return product

  density = hessian.spectral_density(hvp, dim, key, slq_vectors, lanczos_steps)
  top = np.sort(density.nodes[0])[::-1][:top_k]  # the first vector's Ritz values
  found = {
      "num_parameters": dim,
      "lanczos_steps": lanczos_steps,
      "slq_vectors": slq_vectors,
      "top_eigenvalues": top.tolist(),
      "lambda_max": float(top[0]),
      f"lambda_max/lambda_{len(top)}": float(top[0] / top[-1]),
      "density": {
          "grid": density.grid.tolist(),
          "density": density.density.tolist(),
          "sigma": density.sigma
      },
  }
  if hutchinson_probes:
    trace, error = hessian.hutchinson_trace(hvp, dim, jax.random.fold_in(key, 1), hutchinson_probes)
    found["trace"] = {"estimate": trace, "standard_error": error, "probes": hutchinson_probes}
  if power_iterations:
    values, _ = hessian.power_iteration(hvp, dim, top_k, jax.random.fold_in(key, 2),
                                        power_iterations)
    found["power_iteration_top_eigenvalues"] = values.tolist()
  return found, density


def write(report, density, out: str, name: str) -> None:
  """analysis.json, and hessian_spectrum.png / m_sharpness.png for what was computed.

  `name` is the run's in the legends, which add the rho it was trained with (its
  "trained_with", from `describe_run`); the m-sharpness title gives the measurement's rho.
  """
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "analysis.json"), "w") as f:
    json.dump(report, f, indent=2)
  if "trained_with" in report:
    name = f"{name}, {plots.trained_with(report['trained_with']['rho'])}"
  if density is not None:
    plots.spectral_densities({name: (density.grid, density.density, density.lambda_max)},
                             os.path.join(out, "hessian_spectrum.png"))
  if "m_sharpness" in report:
    values = report["m_sharpness"]["values"]
    plots.m_sharpness({name: ([int(m) for m in values], list(values.values()), None)},
                      os.path.join(out, "m_sharpness.png"), report["m_sharpness"]["rho"])


def write_training_curves(workdir: str, out: str, title: str) -> str | None:
  """training_curves.png in `out` from the TensorBoard scalars of the run in `workdir`.

  Returns its path, or None (with a warning) when the workdir has none of the curves' tags.
  """
  scalars = events.read_scalars(workdir)
  tags = [tag for _, panel in plots.CURVE_PANELS for tag in panel]
  if not any(scalars.get(tag) for tag in tags):
    logging.warning("No training curves: %s has no TensorBoard scalars %s.", workdir,
                    ", ".join(tags))
    return None
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "training_curves.png")
  plots.training_curves(scalars, path, title)
  return path
