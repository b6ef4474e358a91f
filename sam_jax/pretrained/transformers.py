"""Published ViT and MLP-Mixer checkpoints into this codebase's models.

google-research/vision_transformer publishes its models, the ViT-SAM and Mixer-SAM ones
of Chen et al. (ICLR 2022) among them, as `.npz` files of named arrays, one per parameter:
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`, ... The older
files name submodules as pre-Linen Flax did (one counter over all of a module's children:
LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3); `linen_names`
renames them as Linen does (a counter per class), as the reference's
`checkpoint.load` does with `flax.training.checkpoints.convert_pre_linen`.

`convert` then checks every name and shape against the model and loads everything, with
the reference's finetuning adaptations (vit_jax/checkpoint.py `load_pretrained`):

- a classifier of another number of classes is replaced by the model's fresh head;
- a pre-logits layer the model does not have is dropped;
- ViT position embeddings of another grid (another resolution or patch count) are
  resized bilinearly (`scipy.ndimage.zoom`, order 1), the class token's kept.

Each adaptation is logged; anything else that does not fit is a `CheckpointError`.
"""

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.traverse_util
import numpy as np
import scipy.ndimage
from absl import logging

from sam_jax.models import get_model
from sam_jax.models.mixer import MlpMixer
from sam_jax.models.vit import VisionTransformer
from sam_jax.pretrained.readers import CheckpointError

_NUMBERED = re.compile(r"^([A-Z]\w*)_(\d+)$")  # an automatic name: a class and its number
POSITIONS = "params/Transformer/posembed_input/pos_embedding"


def linen_names(names: list[str]) -> dict[str, str]:
  """Checkpoint name -> the same variable's name under Linen's per-class numbering: each
  module's automatically named children (`Class_N`) numbered from 0 per class in the order
  of N; names given explicitly (`encoderblock_11`) are kept."""
  renamed = {}
  children: dict[str, set[str]] = {}  # parent path -> its children's names
  for name in names:
    parts = name.split("/")
    for depth in range(len(parts) - 1):
      children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
  renumbered: dict[tuple[str, str], str] = {}
  for parent, kids in children.items():
    by_class: dict[str, list[tuple[int, str]]] = {}
    for kid in kids:
      if match := _NUMBERED.match(kid):
        by_class.setdefault(match[1], []).append((int(match[2]), kid))
    for cls, numbered in by_class.items():
      for new, (_, kid) in enumerate(sorted(numbered)):
        renumbered[(parent, kid)] = f"{cls}_{new}"
  for name in names:
    parts = name.split("/")
    renamed[name] = "/".join(
        renumbered.get(("/".join(parts[:d]), part), part) if d < len(parts) - 1 else part
        for d, part in enumerate(parts))
  return renamed


def resized_positions(saved: np.ndarray, needed: tuple[int, ...], class_token: bool) -> np.ndarray:
  """Position embeddings [1, tokens, width] of one square grid resized to another (the
  reference's `interpolate_posembed`); the class token's embedding is kept."""
  token, grid = (saved[:, :1], saved[0, 1:]) if class_token else (saved[:, :0], saved[0])
  old, new = int(round(len(grid) ** 0.5)), int(round((needed[1] - class_token) ** 0.5))
  if old * old != len(grid) or new * new != needed[1] - class_token:
    raise CheckpointError(f"Position embeddings {saved.shape} and {needed} are not square grids.")
  zoomed = np.asarray(
      scipy.ndimage.zoom(grid.reshape(old, old, -1), (new / old, new / old, 1), order=1))
  return np.concatenate([token, zoomed.reshape(1, new * new, -1)], axis=1)


def convert(shapes: Mapping[str, tuple[int, ...]], read: Callable[[str], Any], variables: Any,
            model: Any, source: str = "the checkpoint") -> Any:
  """Our `variables` (the model's fresh `{"params"}`) with every array read from a
  vision_transformer checkpoint (`shapes` and `read` by its names).

  Raises:
    CheckpointError: naming the missing, unexpected and misshapen parameters.
  """
  ours: dict[str, Any] = flax.traverse_util.flatten_dict({"params": variables["params"]}, sep="/")
  theirs = {f"params/{new}": old for old, new in linen_names(list(shapes)).items()}
  dropped = sorted(n for n in theirs if n.startswith("params/pre_logits/") and n not in ours)
  if dropped:
    logging.warning("%s has a pre-logits layer the model does not have: dropped.", source)
  missing = sorted(n for n in ours if n not in theirs)
  unexpected = sorted(n for n in theirs if n not in ours and n not in dropped)
  misshapen = {
      n: (tuple(shapes[theirs[n]]), tuple(ours[n].shape))
      for n in ours
      if n in theirs and tuple(shapes[theirs[n]]) != tuple(ours[n].shape)
  }
  fresh = {n for n in misshapen if n.startswith("params/head/")}
  if fresh and all(a[:-1] == b[:-1] for a, b in (misshapen[n] for n in fresh)):
    logging.warning(
        "%s has a %d-class classifier and the model %d classes: the head is "
        "freshly initialised, everything else is loaded.", source,
        misshapen["params/head/bias"][0][0], misshapen["params/head/bias"][1][0])
  else:
    fresh = set()
  resized = POSITIONS in misshapen and misshapen[POSITIONS][0][-1] == misshapen[POSITIONS][1][-1]
  for name in fresh | ({POSITIONS} if resized else set()):
    del misshapen[name]
  if missing or unexpected or misshapen:
    problems = (
        [f"missing {n}" for n in missing] + [f"unexpected {n}" for n in unexpected] +
        [f"{n} is {a} where the model needs {b}" for n, (a, b) in sorted(misshapen.items())])
    shown = "; ".join(
        problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise CheckpointError(f"{source} does not fit the model: {len(problems)} parameters do not "
                          f"match ({shown}).")
  loaded = {n: ours[n] if n in fresh else np.asarray(read(theirs[n])) for n in ours}
  if resized:
    logging.warning("%s: position embeddings resized from %s to %s for the new resolution.", source,
                    shapes[theirs[POSITIONS]], ours[POSITIONS].shape)
    loaded[POSITIONS] = resized_positions(loaded[POSITIONS], tuple(ours[POSITIONS].shape),
                                          getattr(model, "classifier", "") == "token")
  return flax.traverse_util.unflatten_dict(loaded, sep="/")


def model_and_resolution(shapes: Mapping[str, tuple[int, ...]], model_name: str) -> tuple[Any, int]:
  """Our `model_name` with the checkpoint's classes, and the image side the checkpoint was
  trained at: sqrt(tokens) patches, the tokens counted by the ViT's position embeddings
  (less the class token) or the Mixer's token-mixing MLP.

  Raises:
    CheckpointError: for a model that is not a ViT or a Mixer, or a file without a head.
  """
  names = {new: old for old, new in linen_names(list(shapes)).items()}
  if "head/bias" not in names:
    raise CheckpointError("The checkpoint has no head/bias: is it a ViT or Mixer .npz file?")
  model = get_model(model_name, int(shapes[names["head/bias"]][0]))
  if not isinstance(model, (VisionTransformer, MlpMixer)):
    raise CheckpointError(f"A .npz checkpoint holds a ViT or a Mixer; {model_name} is neither "
                          "(ViT-{Ti,S,B,L}_{patch}, Mixer-{S,B,L}_{patch}).")
  positions = names.get(POSITIONS.removeprefix("params/"))
  mixing = names.get("MixerBlock_0/token_mixing/Dense_0/kernel")
  if positions is not None:
    tokens = shapes[positions][1] - (getattr(model, "classifier", "") == "token")
  elif mixing is not None:
    tokens = shapes[mixing][0]
  else:
    raise CheckpointError(f"The checkpoint has neither ViT position embeddings nor a Mixer's "
                          f"token mixing: it does not fit {model_name}.")
  return model, round(tokens ** 0.5) * model.patch
