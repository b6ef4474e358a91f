"""MLP-Mixer (Tolstikhin et al., NeurIPS 2021), as google-research/vision_transformer defines
it (vit_jax/models_mixer.py): patches embedded by a strided conv, blocks of a token-mixing
MLP (across patches) and a channel-mixing MLP (across features), each after a LayerNorm
and with a residual, a final LayerNorm, the mean over patches and a zero-initialised head.

Parameter names, shapes and initialisers (Flax's defaults) are the reference's. Sizes
(`SIZES`) from the paper's Table 1: S, B, L; any patch size that divides the image.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models.layers import embed_patches

# name: (hidden size C, token-mixing MLP size D_S, channel-mixing MLP size D_C, blocks)
SIZES = {
    "S": (512, 256, 2048, 8),
    "B": (768, 384, 3072, 12),
    "L": (1024, 512, 4096, 24),
    "mini": (32, 16, 64, 2),  # for tests and the digits
}


class MlpBlock(nn.Module):
  """Dense(mlp_dim), GELU, Dense back to the input width."""
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(x))
    return nn.Dense(x.shape[-1], dtype=self.dtype)(y)


class MixerBlock(nn.Module):
  """x + token-mixing MLP(LN(x)) over the patch axis, then x + channel-mixing MLP(LN(x))."""
  tokens_mlp_dim: int
  channels_mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = jnp.swapaxes(nn.LayerNorm(dtype=self.dtype)(x), 1, 2)
    x = x + jnp.swapaxes(MlpBlock(self.tokens_mlp_dim, self.dtype, name="token_mixing")(y), 1, 2)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    return x + MlpBlock(self.channels_mlp_dim, self.dtype, name="channel_mixing")(y)


class MlpMixer(nn.Module):
  """Mixer-{size}/{patch}: `size` a key of SIZES."""
  num_classes: int
  size: str = "B"
  patch: int = 16
  head_bias_init: float = 0.0  # -10 with the sigmoid loss (big_vision's init_head_bias)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train  # no dropout, no BatchNorm
    hidden, tokens_mlp_dim, channels_mlp_dim, blocks = SIZES[self.size]
    x = embed_patches(x, hidden, self.patch, dtype=self.dtype, name="stem")
    for _ in range(blocks):
      x = MixerBlock(tokens_mlp_dim, channels_mlp_dim, self.dtype)(x)
    x = jnp.mean(nn.LayerNorm(dtype=self.dtype, name="pre_head_layer_norm")(x), axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.constant(self.head_bias_init),
                    name="head")(x).astype(jnp.float32)
