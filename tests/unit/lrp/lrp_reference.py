"""Slow, explicit float64 reference implementation of the LRP rules documented in ``isnetflow.lrp``.

Every affine layer (Conv2d, Linear, BatchNorm2d, AvgPool2d, AdaptiveAvgPool2d) is turned into an explicit
matrix ``M`` and bias vector ``b`` built with plain Python loops from the layer's parameters (no torch
convolution or pooling routines), the network is evaluated with these matrices in NumPy, and relevance is
propagated layer by layer straight from the textbook definitions:

* affine, epsilon rule:  ``R_in = x * (M^T (R_out / stab(z)))`` with ``z = M x + b``
* affine, z^B rule:      ``R_in = x * M^T s - l * M+^T s - h * M-^T s``,
  ``s = R_out / stab(M x - M+ l - M- h)``
* ReLU / flatten:        ``R_in = R_out``
* max pooling:           ``R_in[argmax] += R_out`` (winner takes all)
* concatenation:         relevance split along the channel axis
* a tensor consumed several times receives the sum of the relevances sent back to it.

``stab(z) = z + eps * (+1 if z >= 0 else -1)``.
Batch norm: ``a = gamma / sqrt(var + eps_bn)``, ``c = beta - a * mean`` with the batch's biased statistics
(training mode) or the running statistics (eval mode).

The interpreter knows ``nn.Sequential`` and MONAI's ``DenseNet`` / ``_DenseLayer`` (``cat([x, layers(x)])``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.networks.nets.densenet import DenseNet, _DenseLayer
from torch import nn


def _stab(z: np.ndarray, eps: float) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def conv2d_matrix(weight: np.ndarray, in_shape: tuple[int, int, int], stride, padding, dilation):
    c_out, c_in, kh, kw = weight.shape
    _, h, w = in_shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    m = np.zeros((c_out, oh, ow, c_in, h, w))
    for o in range(c_out):
        for c in range(c_in):
            for y in range(oh):
                for x in range(ow):
                    for ky in range(kh):
                        iy = y * stride[0] - padding[0] + ky * dilation[0]
                        if not 0 <= iy < h:
                            continue
                        for kx in range(kw):
                            ix = x * stride[1] - padding[1] + kx * dilation[1]
                            if 0 <= ix < w:
                                m[o, y, x, c, iy, ix] += weight[o, c, ky, kx]
    return m.reshape(c_out * oh * ow, c_in * h * w), (c_out, oh, ow)


def avgpool2d_matrix(in_shape, kernel, stride, padding, count_include_pad):
    c, h, w = in_shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    m = np.zeros((c, oh, ow, c, h, w))
    for ch in range(c):
        for y in range(oh):
            for x in range(ow):
                cells = [
                    (y * stride[0] - padding[0] + ky, x * stride[1] - padding[1] + kx)
                    for ky in range(kernel[0])
                    for kx in range(kernel[1])
                ]
                inside = [(iy, ix) for iy, ix in cells if 0 <= iy < h and 0 <= ix < w]
                n = len(cells) if count_include_pad else len(inside)
                for iy, ix in inside:
                    m[ch, y, x, ch, iy, ix] += 1.0 / n
    return m.reshape(c * oh * ow, c * h * w), (c, oh, ow)


def adaptive_avgpool2d_matrix(in_shape, out_size):
    c, h, w = in_shape
    oh, ow = out_size
    m = np.zeros((c, oh, ow, c, h, w))
    for ch in range(c):
        for y in range(oh):
            y0, y1 = (y * h) // oh, math.ceil((y + 1) * h / oh)
            for x in range(ow):
                x0, x1 = (x * w) // ow, math.ceil((x + 1) * w / ow)
                n = (y1 - y0) * (x1 - x0)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        m[ch, y, x, ch, iy, ix] = 1.0 / n
    return m.reshape(c * oh * ow, c * h * w), (c, oh, ow)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass
class _Tape:
    values: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (B, *shape)
    ops: list[tuple] = field(default_factory=list)

    def new(self, value: np.ndarray) -> int:
        key = len(self.values)
        self.values[key] = value
        return key


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


def _affine(tape: _Tape, src: int, m: np.ndarray, b: np.ndarray, out_shape, weighted: bool) -> int:
    x = tape.values[src]
    batch = x.shape[0]
    z = x.reshape(batch, -1) @ m.T + b
    out = tape.new(z.reshape((batch, *out_shape)))
    tape.ops.append(("affine", src, out, m, b, weighted))
    return out


def _run(module: nn.Module, tape: _Tape, src: int) -> int:
    x = tape.values[src]
    shape = x.shape[1:]
    if isinstance(module, DenseNet):
        return _run(module.class_layers, tape, _run(module.features, tape, src))
    if isinstance(module, _DenseLayer):
        new = _run(module.layers, tape, src)
        out = tape.new(np.concatenate([x, tape.values[new]], axis=1))
        tape.ops.append(("cat", (src, new), out))
        return out
    if isinstance(module, nn.Sequential):
        for child in module:
            src = _run(child, tape, src)
        return src
    if isinstance(module, nn.Conv2d):
        assert module.groups == 1 and module.padding_mode == "zeros"
        m, out_shape = conv2d_matrix(
            _np(module.weight), shape, module.stride, _pair(module.padding), module.dilation
        )
        bias = _np(module.bias)
        b = np.zeros(m.shape[0]) if bias is None else np.repeat(bias, out_shape[1] * out_shape[2])
        return _affine(tape, src, m, b, out_shape, True)
    if isinstance(module, nn.Linear):
        bias = _np(module.bias)
        b = np.zeros(module.out_features) if bias is None else bias
        return _affine(tape, src, _np(module.weight), b, (module.out_features,), True)
    if isinstance(module, nn.BatchNorm2d):
        if module.training or module.running_var is None:
            mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        else:
            mean, var = _np(module.running_mean), _np(module.running_var)
        a = 1.0 / np.sqrt(var + module.eps)
        if module.weight is not None:
            a = a * _np(module.weight)
        c = -a * mean
        if module.bias is not None:
            c = c + _np(module.bias)
        hw = shape[1] * shape[2]
        return _affine(tape, src, np.diag(np.repeat(a, hw)), np.repeat(c, hw), shape, False)
    if isinstance(module, nn.AvgPool2d):
        assert not module.ceil_mode and module.divisor_override is None
        m, out_shape = avgpool2d_matrix(
            shape,
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
            module.count_include_pad,
        )
        return _affine(tape, src, m, np.zeros(m.shape[0]), out_shape, False)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        out_size = _pair(size) if not isinstance(size, tuple) else (size[0] or shape[1], size[1] or shape[2])
        m, out_shape = adaptive_avgpool2d_matrix(shape, out_size)
        return _affine(tape, src, m, np.zeros(m.shape[0]), out_shape, False)
    if isinstance(module, nn.ReLU):
        out = tape.new(np.maximum(x, 0.0))
        tape.ops.append(("pass", src, out))
        return out
    if isinstance(module, nn.Flatten):
        assert module.start_dim == 1 and module.end_dim == -1
        out = tape.new(x.reshape(x.shape[0], -1))
        tape.ops.append(("pass", src, out))
        return out
    if isinstance(module, nn.MaxPool2d):
        return _maxpool(module, tape, src)
    raise TypeError(f"reference has no rule for {type(module).__name__}")


def _maxpool(module: nn.MaxPool2d, tape: _Tape, src: int) -> int:
    assert not module.ceil_mode and module.dilation == 1
    x = tape.values[src]
    batch, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((batch, c, oh, ow))
    winner = np.zeros((batch, c, oh, ow), dtype=np.int64)  # flat index into (c, h, w)
    for n in range(batch):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    best, best_idx = -np.inf, -1
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = y * sh - ph + ky, xx * sw - pw + kx
                            if 0 <= iy < h and 0 <= ix < w and x[n, ch, iy, ix] > best:
                                best, best_idx = x[n, ch, iy, ix], (ch * h + iy) * w + ix
                    out[n, ch, y, xx], winner[n, ch, y, xx] = best, best_idx
    key = tape.new(out)
    tape.ops.append(("maxpool", src, key, winner))
    return key


def reference_relevance(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    epsilon: float,
    first_layer: str,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(logits, relevance)``: the explicit-matrix forward pass (to check the reference itself
    against the model) and the relevance of ``images`` for ``logits[i, targets[i]]`` following the rules
    in the module docstring."""
    tape = _Tape()
    inp = tape.new(_np(images))
    out = _run(model, tape, inp)
    logits = tape.values[out]
    onehot = np.eye(logits.shape[1])[targets.cpu().numpy()]
    rel: dict[int, np.ndarray] = {out: logits * onehot}
    first_weighted = next(op for op in tape.ops if op[0] == "affine" and op[5])
    for op in reversed(tape.ops):
        kind, src, dst = op[0], op[1], op[2]
        r_out = rel.pop(dst, None)
        if r_out is None:
            continue
        if kind == "cat":
            a, b = src
            ca = tape.values[a].shape[1]
            for key, part in ((a, r_out[:, :ca]), (b, r_out[:, ca:])):
                rel[key] = rel.get(key, 0.0) + part
            continue
        x = tape.values[src]
        batch = x.shape[0]
        if kind == "pass":
            contrib = r_out.reshape(x.shape)
        elif kind == "maxpool":
            winner = op[3]
            flat = np.zeros((batch, x[0].size))
            for n in range(batch):
                np.add.at(flat[n], winner[n].reshape(-1), r_out[n].reshape(-1))
            contrib = flat.reshape(x.shape)
        else:
            m, b = op[3], op[4]
            xf, rf = x.reshape(batch, -1), r_out.reshape(batch, -1)
            if op is first_weighted and first_layer == "zbox":
                mp, mn = np.clip(m, 0, None), np.clip(m, None, 0)
                lo, hi = np.full_like(xf, low), np.full_like(xf, high)
                s = rf / _stab(xf @ m.T - lo @ mp.T - hi @ mn.T, epsilon)
                contrib = (xf * (s @ m) - lo * (s @ mp) - hi * (s @ mn)).reshape(x.shape)
            else:
                s = rf / _stab(xf @ m.T + b, epsilon)
                contrib = (xf * (s @ m)).reshape(x.shape)
        rel[src] = rel.get(src, 0.0) + contrib
    return logits, rel[inp]
