"""The same WideResNet and SGD / SAM steps in PyTorch: `benchmark_step.py --torch`'s reference.

Mirrors `sam_jax/models/wide_resnet.py`: pre-activation blocks, bias-free 3x3 convs, a
parameter-free shortcut (average pool by the stride, zero-padded channels), BatchNorm
momentum 0.9 (PyTorch's 0.1) and eps 1e-5, global average pool, a dense classifier. The
steps: cross-entropy with L2 weight decay, SGD with Nesterov momentum 0.9; SAM takes the
gradient at w + rho g / ||g|| (Foret et al. 2021, Algorithm 1), one replica. PyTorch is an
optional dependency: `available()` says whether it can be imported.
"""

import importlib.util


def available() -> bool:
  return importlib.util.find_spec("torch") is not None


def wide_resnet(depth: int, width: int, num_classes: int):
  """WRN-depth-width as `sam_jax.models.wide_resnet.WideResnet`, channels-last, training."""
  import torch  # pyright: ignore[reportMissingImports]  (optional)
  from torch import nn  # pyright: ignore[reportMissingImports]  (optional)
  import torch.nn.functional as F  # pyright: ignore[reportMissingImports]  (optional)

  def bn_relu(channels):
    return nn.Sequential(nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1), nn.ReLU())

  def conv3x3(cin, cout, stride=1):
    layer = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layer

  class Block(nn.Module):
    def __init__(self, cin, cout, stride, activate_before_residual):
      super().__init__()
      self.pre, self.activate_before_residual = bn_relu(cin), activate_before_residual
      self.conv1, self.act = conv3x3(cin, cout, stride), bn_relu(cout)
      self.conv2 = conv3x3(cout, cout)
      self.stride, self.pad = stride, cout - cin

    def forward(self, x):
      if self.activate_before_residual:
        x = shortcut = self.pre(x)
      else:
        shortcut, x = x, self.pre(x)
      x = self.conv2(self.act(self.conv1(x)))
      if self.stride != 1:
        shortcut = F.avg_pool2d(shortcut, self.stride)
      return x + F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))

  blocks, channels = (depth - 4) // 6, 16
  layers: list[nn.Module] = [conv3x3(3, 16)]
  for group, (base, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
    for i in range(blocks):
      layers.append(Block(channels, base * width, stride if i == 0 else 1, group == 0 and i == 0))
      channels = base * width
  layers += [
      bn_relu(channels),
      nn.AdaptiveAvgPool2d(1),
      nn.Flatten(),
      nn.Linear(channels, num_classes)
  ]
  model = nn.Sequential(*layers)
  # torch's overloads of Module.to omit the memory_format it takes (and passes on).
  return model.to(memory_format=torch.channels_last).train()  # pyright: ignore[reportCallIssue]


def make_step(depth: int, width: int, num_classes: int, batch_size: int, image_size: int,
              rho: float):
  """A function running one train step on a fixed synthetic batch (rho 0: SGD)."""
  import torch  # pyright: ignore[reportMissingImports]  (optional)
  import torch.nn.functional as F  # pyright: ignore[reportMissingImports]  (optional)
  model = wide_resnet(depth, width, num_classes)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
  generator = torch.Generator().manual_seed(0)
  images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
  images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
  params = list(model.parameters())

  def gradient():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()

  def step():
    gradient()
    if rho > 0:
      with torch.no_grad():
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        eps = [rho / (norm + 1e-12) * p.grad for p in params]
        # torch does not re-export its foreach ops (underscored, yet what its optimizers use).
        torch._foreach_add_(params, eps)  # pyright: ignore[reportPrivateImportUsage]
      gradient()
      with torch.no_grad():
        torch._foreach_sub_(params, eps)  # pyright: ignore[reportPrivateImportUsage]
    optimizer.step()

  return step
