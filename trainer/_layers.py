"""Layers, each with its forward and backward pass side by side, and the parameters they own.

Conventions shared by every layer:

- `forward(x, train)` and `backward(dout)` return arrays that the layer owns and reuses on
  its next call (scratch buffers, so a training step allocates almost nothing). Read the
  result before calling the layer again; copy it to keep it.
- `backward` never writes into `dout`. It writes each parameter's gradient into
  `Parameter.grad`, replacing the previous step's, and returns the gradient for the input.
- A layer reaches its arrays through its `Parameter` objects at every call, because the
  network moves all parameters into one flat buffer after the layers are built
  (`FlatParameters`).
- All activations are 2-D: (batch, features).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

__all__ = [
    "Affine",
    "BatchNorm",
    "Dropout",
    "FlatParameters",
    "Layer",
    "Parameter",
    "ReLU",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
]

_ALIGN_BYTES = 64  # one cache line: every parameter view starts on one


class Parameter:
    """A learnable array, its gradient, and whether weight decay applies to it.

    Attributes:
        name: for people ("hidden2.affine.weight"); nothing looks parameters up by name.
        value: the array the layer computes with.
        grad: the gradient of the loss with respect to `value`, same shape and dtype.
        decay: True for weight matrices, which get the 1/2 * lambda * ||W||^2 penalty.
        owner: the `FlatParameters` holding `value` and `grad`, or None.
    """

    __slots__ = ("name", "value", "grad", "decay", "owner")

    def __init__(self, name: str, value: np.ndarray, decay: bool = False):
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)
        self.decay = decay
        self.owner: FlatParameters | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def size(self) -> int:
        return self.value.size

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.value.dtype}, decay={self.decay})"


class FlatParameters:
    """Parameters packed into one contiguous value buffer and one gradient buffer.

    Packing copies every value into `values` and rebinds each parameter's `value` and `grad`
    to views of `values` and `grads`. An optimizer step is then a few NumPy operations over
    whole buffers instead of a Python loop over parameters. Parameters with weight decay are
    placed first, so the weight-decay part is the one slice `[:decay_size]`. Each view starts
    on a 64-byte boundary; the gaps between views hold zeros in both buffers and stay zero
    under every optimizer (a zero gradient never moves a zero value).

    Args:
        parameters: the parameters to pack, all of one dtype, none packed elsewhere.
    """

    def __init__(self, parameters: Iterable[Parameter]):
        params = list(parameters)
        if not params:
            raise ValueError("parameters must not be empty")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("parameters must not repeat a parameter")
        dtypes = {p.value.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"parameters must share one dtype; got {sorted(str(d) for d in dtypes)}")
        for p in params:
            if p.owner is not None:
                raise ValueError(f"parameter {p.name!r} is already packed in another flat buffer")
        self.dtype = dtypes.pop()
        self.parameters = tuple(params)

        align = max(1, _ALIGN_BYTES // self.dtype.itemsize)
        layout = sorted(params, key=lambda p: not p.decay)  # stable: decayed first, order kept
        self._slices: dict[int, slice] = {}
        end = 0
        for p in layout:
            start = -(-end // align) * align
            end = start + p.size
            self._slices[id(p)] = slice(start, end)
        self.decay_size = max((self._slices[id(p)].stop for p in params if p.decay), default=0)
        self.size = end

        self.values = _aligned_zeros(self.size, self.dtype)
        self.grads = _aligned_zeros(self.size, self.dtype)
        for p in params:
            part = self._slices[id(p)]
            value = self.values[part].reshape(p.shape)
            grad = self.grads[part].reshape(p.shape)
            value[...] = p.value
            grad[...] = p.grad
            p.value, p.grad, p.owner = value, grad, self

    @classmethod
    def of(cls, parameters: Iterable[Parameter] | FlatParameters) -> FlatParameters:
        """The flat buffers holding exactly these parameters: reused if they exist, else packed."""
        if isinstance(parameters, FlatParameters):
            return parameters
        params = list(parameters)
        owner = params[0].owner if params else None
        if owner is not None and len(params) == len(owner.parameters) and all(p.owner is owner for p in params):
            return owner
        return cls(params)

    def slice_of(self, parameter: Parameter) -> slice:
        """Where the parameter lives in `values` and `grads`."""
        return self._slices[id(parameter)]


def _aligned_zeros(size: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed 1-D array whose first element is on a 64-byte boundary."""
    extra = _ALIGN_BYTES // dtype.itemsize
    raw = np.zeros(size + extra, dtype)
    offset = (-raw.ctypes.data % _ALIGN_BYTES) // dtype.itemsize
    return raw[offset : offset + size]


class _Buffers:
    """Scratch arrays reused from call to call: one per name and shape."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, np.ndarray] = {}

    def _buffer(self, name: str, rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
        """A (rows, cols) array owned by this object; its content is whatever was left there."""
        key = (name, rows, cols, dtype)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 64:  # many batch sizes came by (e.g. predict on varied inputs)
                self._buffers.clear()
            buf = self._buffers[key] = np.empty((rows, cols), dtype)
        return buf


class Layer(_Buffers):
    """A step of the network: forward(x, train) and backward(dout), plus the parameters it owns."""

    def parameters(self) -> list[Parameter]:
        """The layer's parameters (weights first); empty for layers without any."""
        return []

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


class Affine(Layer):
    """y = x W + b.

    Args:
        weight: (fan_in, fan_out) initial weights; weight decay applies to them.
        bias: (fan_out,) initial biases, or None for none: batch norm right after the layer
            subtracts the batch mean, which cancels any bias, so the network leaves it out.
        input_grad: False for the first layer, whose input is the data: its backward then
            skips the (batch, fan_out) @ (fan_out, fan_in) product that nobody needs and
            returns None.
        name: prefix of the parameter names.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, input_grad: bool = True, name: str = "affine"):
        super().__init__()
        if weight.ndim != 2 or (bias is not None and (bias.shape != (weight.shape[1],) or bias.dtype != weight.dtype)):
            raise ValueError(f"Affine needs weight (fan_in, fan_out) and bias (fan_out,) or None, of one dtype; "
                             f"got weight {weight.dtype} {weight.shape} and bias "
                             f"{'None' if bias is None else f'{bias.dtype} {bias.shape}'}")
        self.weight = Parameter(f"{name}.weight", weight, decay=True)
        self.bias = None if bias is None else Parameter(f"{name}.bias", bias)
        self.input_grad = input_grad
        self._x: np.ndarray | None = None

    def parameters(self) -> list[Parameter]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        w = self.weight.value
        out = self._buffer("out", len(x), w.shape[1], w.dtype)
        np.matmul(x, w, out=out)  # (batch, fan_in) @ (fan_in, fan_out) -> (batch, fan_out)
        if self.bias is not None:
            out += self.bias.value
        self._x = x
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        w = self.weight.value
        np.matmul(self._x.T, dout, out=self.weight.grad)  # (fan_in, batch) @ (batch, fan_out)
        if self.bias is not None:
            np.matmul(_filled(len(dout), 1, dout.dtype), dout, out=self.bias.grad)  # sum over the batch: (fan_out,)
        if not self.input_grad:
            return None
        dx = self._buffer("dx", len(dout), w.shape[0], w.dtype)
        np.matmul(dout, w.T, out=dx)  # (batch, fan_out) @ (fan_out, fan_in) -> (batch, fan_in)
        return dx


class ReLU(Layer):
    """y = max(x, 0); the gradient passes where the unit was active (x > 0)."""

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out = self._buffer("out", *x.shape, x.dtype)
        np.maximum(x, 0, out=out)
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._buffer("dx", *dout.shape, dout.dtype)
        np.greater(self._out, 0, out=dx)  # 1.0 where active, 0.0 elsewhere
        dx *= dout
        return dx


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2: no overflow for very negative x."""

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out = self._buffer("out", *x.shape, x.dtype)
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        y = self._out
        dx = self._buffer("dx", *dout.shape, dout.dtype)
        np.subtract(1, y, out=dx)
        dx *= y  # y (1 - y)
        dx *= dout
        return dx


class Tanh(Layer):
    """y = tanh(x); dy/dx = 1 - y^2."""

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out = self._buffer("out", *x.shape, x.dtype)
        np.tanh(x, out=out)
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        y = self._out
        dx = self._buffer("dx", *dout.shape, dout.dtype)
        np.multiply(y, y, out=dx)
        np.subtract(1, dx, out=dx)
        dx *= dout
        return dx


class BatchNorm(Layer):
    """Batch normalization per feature, with a learned scale gamma and shift beta.

    Training: x_hat = (x - mean) / sqrt(var + eps) with the batch's mean and (biased)
    variance, y = gamma * x_hat + beta, and the running estimates move towards the batch's:
    running = momentum * running + (1 - momentum) * batch. Inference uses the running mean
    and variance instead of the batch's.

    Args:
        size: number of features.
        dtype: of gamma, beta and the running estimates.
        momentum: weight of the old running estimate at each training step.
        eps: added to the variance so that a constant feature does not divide by zero.
        name: prefix of the parameter names.
    """

    def __init__(self, size: int, dtype: str | np.dtype = "float32", momentum: float = 0.9,
                 eps: float = 1e-5, name: str = "batchnorm"):
        super().__init__()
        self.gamma = Parameter(f"{name}.gamma", np.ones(size, dtype))
        self.beta = Parameter(f"{name}.beta", np.zeros(size, dtype))
        self.momentum, self.eps = momentum, eps
        # Mean and variance side by side, so that one update moves both running estimates.
        self._running = np.array([np.zeros(size, dtype), np.ones(size, dtype)])  # (2, features)
        self._batch = np.empty_like(self._running)
        self.running_mean, self.running_var = self._running

    def parameters(self) -> list[Parameter]:
        return [self.gamma, self.beta]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out = self._buffer("out", *x.shape, x.dtype)
        gamma, beta = self.gamma.value, self.beta.value
        if not train:
            scale, shift = self.inference_scale_shift()
            np.multiply(x, scale, out=out)
            out += shift
            return out

        # Only the centred input x_c = x - mean is kept; x_hat = x_c / std never is, its
        # factor 1/std is folded into per-feature vectors here and in backward.
        average = _filled(len(x), 1 / len(x), x.dtype)
        centred = self._buffer("centred", *x.shape, x.dtype)
        squares = self._buffer("tmp", *x.shape, x.dtype)
        mean, var = self._batch
        np.matmul(average, x, out=mean)  # (batch,) @ (batch, features) -> (features,)
        np.subtract(x, mean, out=centred)
        np.multiply(centred, centred, out=squares)
        np.matmul(average, squares, out=var)  # two passes: no cancellation as in E[x^2] - mean^2
        self._inv_std = inv_std = 1 / np.sqrt(var + self.eps)
        self._scale = scale = gamma * inv_std  # (features,)
        self._centred = centred
        np.multiply(centred, scale, out=out)
        out += beta

        self._running *= self.momentum
        self._running += (1 - self.momentum) * self._batch
        return out

    def inference_scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Inference as one multiply-add per feature: y = x * scale + shift, both (features,)."""
        scale = self.gamma.value / np.sqrt(self.running_var + self.eps)
        return scale, self.beta.value - self.running_mean * scale

    def backward(self, dout: np.ndarray) -> np.ndarray:
        centred, inv_std, scale = self._centred, self._inv_std, self._scale
        tmp = self._buffer("tmp", *dout.shape, dout.dtype)
        ones = _filled(len(dout), 1, dout.dtype)
        dbeta = np.matmul(ones, dout, out=self.beta.grad)  # sum over the batch: (features,)
        np.multiply(dout, centred, out=tmp)
        dgamma = np.multiply(ones @ tmp, inv_std, out=self.gamma.grad)  # sum of dout * x_hat
        # The batch mean and variance depend on every row, hence the two correction terms:
        # dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat)).
        per_row = scale / len(dout)
        dx = self._buffer("dx", *dout.shape, dout.dtype)
        np.multiply(dout, scale, out=dx)
        np.multiply(centred, per_row * inv_std * dgamma, out=tmp)
        dx -= tmp
        dx -= per_row * dbeta
        return dx


class Dropout(Layer):
    """Inverted dropout: in training each unit is dropped with probability p and the kept
    units are scaled by 1 / (1 - p), so that inference is the identity (no rescaling then).

    A fresh mask is drawn on every training forward pass from the layer's own Generator.
    For speed the mask compares 16-bit random integers (four per 64-bit draw of the bit
    generator) with a threshold, so the drop probability is p rounded to a multiple of
    2^-16; the scale uses the rounded value, so the expected output equals the input.

    Args:
        p: drop probability, in [0, 1).
        rng: the layer's Generator.

    Attributes:
        fixed_mask: None, or a boolean keep-mask (batch, features) used instead of a fresh
            draw on every training pass (for gradient checks).
    """

    def __init__(self, p: float, rng: np.random.Generator):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1); got {p!r}")
        self.p, self.rng = p, rng
        self.fixed_mask: np.ndarray | None = None
        self._threshold = min(round(p * 65536), 65535)  # drop where the 16-bit draw is below
        self._scale = 65536 / (65536 - self._threshold)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if not train:
            return x
        mask = self._buffer("mask", *x.shape, x.dtype)  # 0 or 1/(1-p)
        if self.fixed_mask is not None:
            np.multiply(self.fixed_mask, self._scale, out=mask)
        else:
            draws = self.rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[: x.size]
            np.greater_equal(draws.reshape(x.shape), self._threshold, out=mask)
            mask *= self._scale
        self._mask = mask
        out = self._buffer("out", *x.shape, x.dtype)
        np.multiply(x, mask, out=out)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._buffer("dx", *dout.shape, dout.dtype)
        np.multiply(dout, self._mask, out=dx)
        return dx


class SoftmaxCrossEntropy(_Buffers):
    """Softmax of the scores and the mean cross-entropy against integer labels, as one layer.

    Numerically stable: the row maximum is subtracted before exp, and the loss is
    log-sum-exp of the shifted scores minus the shifted score of the label, never log(0).
    The gradient of the mean loss is (softmax - one_hot(labels)) / batch.

    The work is done on a transposed copy, (classes, batch): NumPy reduces over the outer
    axis of an array far faster than over a short inner one (a row maximum of a
    (1000, 10) array is ~10x slower than the column maximum of its (10, 1000) transpose).
    """

    def forward(self, scores: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy of the batch; scores (batch, classes), labels int (batch,)."""
        n, classes = scores.shape
        shifted = self._buffer("shifted", classes, n, scores.dtype)
        exps = self._buffer("exps", classes, n, scores.dtype)
        np.copyto(shifted, scores.T)  # (classes, batch)
        shifted -= shifted.max(axis=0)
        np.exp(shifted, out=exps)
        total = _filled(classes, 1, scores.dtype) @ exps  # (batch,), each >= 1
        columns = _arange(n)
        self._exps, self._total, self._columns, self._labels = exps, total, columns, labels
        return float(np.log(total).sum() - shifted[labels, columns].sum()) / n

    def backward(self) -> np.ndarray:
        """Gradient of the mean loss with respect to the scores, (batch, classes)."""
        exps = self._exps  # (classes, batch)
        dx = self._buffer("dx", exps.shape[1], exps.shape[0], exps.dtype)
        np.divide(exps.T, self._total[:, None], out=dx)  # softmax, (batch, classes)
        dx[self._columns, self._labels] -= 1
        dx *= 1 / len(dx)
        return dx


@functools.lru_cache(maxsize=64)
def _arange(n: int) -> np.ndarray:
    """A read-only np.arange(n), for picking one element per row."""
    indices = np.arange(n)
    indices.flags.writeable = False
    return indices


@functools.lru_cache(maxsize=64)
def _filled(n: int, value: float, dtype: np.dtype) -> np.ndarray:
    """A read-only (n,) array of `value`.

    Sums over the batch are written as `ones @ a` (a BLAS matrix-vector product), about 3x
    faster than `a.sum(axis=0)` for the (100, 100) arrays of a typical hidden layer.
    """
    filled = np.full(n, value, dtype)
    filled.flags.writeable = False
    return filled
