"""From a config to a network: a stack of layers with all parameters in one flat buffer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._config import ACTIVATIONS, ConfigError, TrainConfig
from ._init import initial_weights
from ._layers import (
    Affine,
    BatchNorm,
    Dropout,
    FlatParameters,
    Layer,
    Parameter,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)

__all__ = ["Network", "build_network", "seed_streams"]

ACTIVATION_LAYERS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def seed_streams(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence, np.random.SeedSequence]:
    """Three independent seed sequences from one seed: initial weights, dropout masks, batch order.

    Separate streams keep each component's randomness apart: adding dropout, for example,
    does not change the initial weights or the order of the batches.
    """
    weights, dropout, batches = np.random.SeedSequence(seed).spawn(3)
    return weights, dropout, batches


class Network:
    """Layers applied in order, then softmax cross-entropy, plus weight decay on weight matrices.

    The layers' parameters are packed into one `FlatParameters` (`self.flat`), which the
    optimizer updates as whole buffers.

    Args:
        layers: the layers, input side first; the last one produces the class scores.
        weight_decay: lambda of the 1/2 * lambda * ||W||^2 term for every weight matrix.
        config: the config the network was built from, if any (kept for reference).
    """

    def __init__(self, layers: Sequence[Layer], weight_decay: float = 0.0, config: TrainConfig | None = None):
        self.layers = list(layers)
        self.loss_layer = SoftmaxCrossEntropy()
        self.weight_decay = weight_decay
        self.config = config
        self.flat = FlatParameters(p for layer in self.layers for p in layer.parameters())
        self.dtype = self.flat.dtype
        self._scores: np.ndarray | None = None
        self._decay_grad: np.ndarray | None = None  # scratch for lambda * W
        self._inference: list[Layer] | None = None  # see _inference_layers

    def parameters(self) -> list[Parameter]:
        """Every parameter, layer by layer."""
        return list(self.flat.parameters)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Class scores (batch, classes), in a buffer of the last layer (copy it to keep it).

        Args:
            x: (batch, features) inputs; converted to the network's dtype if needed.
            train: training mode (batch statistics, dropout) instead of inference.
        """
        out = np.asarray(x, dtype=self.dtype)
        for layer in self.layers if train else self._inference_layers():
            out = layer.forward(out, train)
        self._scores = out
        return out

    def _inference_layers(self) -> list[Layer]:
        """The layers as inference runs them, with the same result in fewer passes.

        Dropout is the identity there, so it is left out, and batch norm with its running
        statistics is a per-feature multiply-add, folded into the Affine before it:
        (x W) * s + t = x (W * s) + t. The folded weights are recomputed from the current
        parameters at every call (one small multiply per layer).
        """
        if self._inference is None:
            layers = [layer for layer in self.layers if not isinstance(layer, Dropout)]
            plan: list[Layer] = []
            folded: set[int] = set()  # ids of the BatchNorm layers already folded into an Affine
            for layer, after in zip(layers, layers[1:] + [None]):
                if id(layer) in folded:
                    continue
                if isinstance(layer, Affine) and isinstance(after, BatchNorm):
                    layer = _FoldedAffine(layer, after)
                    folded.add(id(after))
                plan.append(layer)
            self._inference = plan
        for layer in self._inference:
            if isinstance(layer, _FoldedAffine):
                layer.refresh()
        return self._inference

    def data_loss(self, x: np.ndarray, labels: np.ndarray, train: bool = False) -> float:
        """Mean cross-entropy of the batch, without the weight-decay term."""
        return self.loss_layer.forward(self.forward(x, train), labels)

    def decay_loss(self) -> float:
        """The weight-decay term 1/2 * lambda * sum of ||W||^2 over the weight matrices."""
        if not self.weight_decay:
            return 0.0
        weights = self.flat.values[: self.flat.decay_size]
        return 0.5 * self.weight_decay * float(np.dot(weights, weights))

    def loss(self, x: np.ndarray, labels: np.ndarray, train: bool = False) -> float:
        """The objective that `backward` differentiates: mean cross-entropy plus weight decay."""
        return self.data_loss(x, labels, train) + self.decay_loss()

    def correct(self, labels: np.ndarray) -> int:
        """How many rows of the last forward pass have their highest score at the label."""
        return int(np.count_nonzero(self._scores.argmax(axis=1) == labels))

    def backward(self) -> None:
        """Write the gradient of `loss` from the last forward pass into every `Parameter.grad`."""
        dout = self.loss_layer.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:  # the first Affine does not compute a gradient for the data
                break
        if self.weight_decay:
            # d/dW of 1/2 lambda ||W||^2 is lambda W: two passes over the weight part of the buffers.
            part = slice(0, self.flat.decay_size)
            if self._decay_grad is None:
                self._decay_grad = np.empty(self.flat.decay_size, self.dtype)
            np.multiply(self.flat.values[part], self.weight_decay, out=self._decay_grad)
            self.flat.grads[part] += self._decay_grad

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class scores (n, classes) in inference mode, as a new array; computed batch by batch."""
        x = np.asarray(x, dtype=self.dtype)
        starts = range(0, len(x), batch_size) or [0]  # no rows: one empty batch gives the shape
        return np.concatenate([self.forward(x[i : i + batch_size]).copy() for i in starts])

    def describe(self) -> str:
        """One line per layer, with parameter shapes, for people."""
        lines = []
        for layer in self.layers:
            shapes = ", ".join(f"{p.name.rsplit('.', 1)[-1]} {p.shape}" for p in layer.parameters())
            lines.append(f"{type(layer).__name__}" + (f" [{shapes}]" if shapes else ""))
        lines.append(f"SoftmaxCrossEntropy; {self.flat.size:,} parameter slots, {self.dtype}")
        return "\n".join(lines)


class _FoldedAffine(Affine):
    """An Affine followed by a BatchNorm in inference mode, as one Affine (inference only).

    Holds its own weight and bias arrays, outside the network's flat buffers; `refresh`
    recomputes them from the two layers' current parameters and running statistics.
    """

    def __init__(self, affine: Affine, batchnorm: BatchNorm):
        fan_out = affine.weight.shape[1]
        super().__init__(np.empty_like(affine.weight.value), np.empty(fan_out, affine.weight.value.dtype),
                         input_grad=False, name=f"{affine.weight.name.rsplit('.', 2)[0]}.folded")
        self.affine, self.batchnorm = affine, batchnorm

    def refresh(self) -> None:
        scale, shift = self.batchnorm.inference_scale_shift()  # (fan_out,) each
        np.multiply(self.affine.weight.value, scale, out=self.weight.value)
        if self.affine.bias is None:
            self.bias.value[...] = shift
        else:
            np.multiply(self.affine.bias.value, scale, out=self.bias.value)
            self.bias.value += shift


def build_network(config: TrainConfig) -> Network:
    """The network a config describes.

    Each hidden layer is Affine -> [BatchNorm] -> activation -> [Dropout]; the output layer
    is Affine, followed by softmax cross-entropy. An Affine followed by BatchNorm has no
    bias: the batch mean would cancel it (BatchNorm's beta is the shift). Weights are drawn in config.dtype from a
    Generator seeded by config.seed (see `seed_streams`); each Dropout layer gets its own.
    """
    if config.activation not in ACTIVATION_LAYERS:
        raise ConfigError("activation", "one of " + ", ".join(ACTIVATIONS), config.activation)
    dtype = np.dtype(config.dtype)
    weights_seed, dropout_seed, _ = seed_streams(config.seed)
    weights_rng = np.random.default_rng(weights_seed)
    dropout_rngs = [np.random.default_rng(s) for s in dropout_seed.spawn(len(config.hidden_sizes))]

    def affine(fan_in: int, fan_out: int, name: str, first: bool, bias: bool = True) -> Affine:
        weight = initial_weights(config.init, fan_in, fan_out, weights_rng, dtype, config.init_std)
        return Affine(weight, np.zeros(fan_out, dtype) if bias else None, input_grad=not first, name=name)

    layers: list[Layer] = []
    sizes = (config.input_size, *config.hidden_sizes)
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        name = f"hidden{i + 1}"
        layers.append(affine(fan_in, fan_out, f"{name}.affine", first=i == 0, bias=not config.batch_norm))
        if config.batch_norm:
            layers.append(BatchNorm(fan_out, dtype, name=f"{name}.batchnorm"))
        layers.append(ACTIVATION_LAYERS[config.activation]())
        if config.dropout > 0:
            layers.append(Dropout(config.dropout, dropout_rngs[i]))
    layers.append(affine(sizes[-1], config.output_size, "output.affine", first=len(sizes) == 1))
    return Network(layers, config.weight_decay, config)
