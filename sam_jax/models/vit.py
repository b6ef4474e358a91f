"""Vision Transformer (Dosovitskiy et al., ICLR 2021), as google-research/vision_transformer
defines it (vit_jax/models_vit.py): patches embedded by a strided conv, a class token,
learned position embeddings, pre-LayerNorm encoder blocks (multi-head self-attention and a
GELU MLP, each with dropout and a residual), a final LayerNorm and a linear head on the
class token (or on the mean of the tokens, `classifier="gap"`).

Parameter names and shapes are those of the published checkpoints once Linen names them
(`pretrained.transformers` reads the `.npz` files), initialisers those of the reference: Xavier
uniform kernels, N(0, 1e-6) MLP biases, N(0, 0.02) position embeddings, a zero class
token and a zero head. Sizes (`SIZES`): Ti, S, B, L as the paper and the reference
configs give them; any patch size that divides the image (16 and 32 at 224 px, 4 for
CIFAR's 32 px, 2 for the 8 px digits).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models.layers import embed_patches

# name: (hidden size, MLP size, heads, layers)
SIZES = {
    "Ti": (192, 768, 3, 12),
    "S": (384, 1536, 6, 12),
    "B": (768, 3072, 12, 12),
    "L": (1024, 4096, 16, 24),
    "mini": (32, 64, 2, 2),  # for tests and the digits
}


class MlpBlock(nn.Module):
  """Dense(mlp_dim), GELU, dropout, Dense back to the input width, dropout."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    def dense(features: int) -> nn.Dense:
      return nn.Dense(features, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                      bias_init=nn.initializers.normal(stddev=1e-6))

    y = nn.Dropout(self.dropout_rate)(nn.gelu(dense(self.mlp_dim)(x)), deterministic=not train)
    return nn.Dropout(self.dropout_rate)(dense(x.shape[-1])(y), deterministic=not train)


class EncoderBlock(nn.Module):
  """x + Dropout(Attention(LN(x))), then x + MLP(LN(x))."""
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
        broadcast_dropout=False, dropout_rate=self.attention_dropout_rate)(y, y,
                                                                           deterministic=not train)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    return x + MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype)(y, train=train)


class VisionTransformer(nn.Module):
  """ViT-{size}/{patch}: `size` a key of SIZES."""
  num_classes: int
  size: str = "B"
  patch: int = 16
  classifier: str = "token"  # or "gap": the mean of the tokens (no class token)
  representation_size: int | None = None  # a tanh pre-logits layer, as in pre-training
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  head_bias_init: float = 0.0  # -10 with the sigmoid loss (big_vision's init_head_bias)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    hidden, mlp_dim, heads, layers = SIZES[self.size]
    x = embed_patches(x, hidden, self.patch, dtype=self.dtype, name="embedding")
    if self.classifier == "token":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, hidden))
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (len(x), 1, 1)), x], axis=1)
    x = Encoder(layers, mlp_dim, heads, self.dropout_rate, self.attention_dropout_rate, self.dtype,
                name="Transformer")(x, train=train)
    x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
    if self.representation_size is not None:
      x = nn.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.constant(self.head_bias_init),
                    name="head")(x).astype(jnp.float32)


class Encoder(nn.Module):
  """Position embeddings, dropout, the blocks, a final LayerNorm."""
  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x + PositionEmbedding(name="posembed_input")(x).astype(x.dtype)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    for i in range(self.num_layers):
      x = EncoderBlock(self.mlp_dim, self.num_heads, self.dropout_rate, self.attention_dropout_rate,
                       self.dtype, name=f"encoderblock_{i}")(x, train=train)
    return nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)


class PositionEmbedding(nn.Module):
  """A learned embedding per token, N(0, 0.02) as BERT's."""
  @nn.compact
  def __call__(self, x):
    return self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
