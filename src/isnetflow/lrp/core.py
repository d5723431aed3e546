"""Differentiable LRP-epsilon / z^B relevance as a single modified backward pass.

Formulation
-----------
Write the relevance of every activation tensor ``a`` as ``R_a = a * c_a``. For an affine layer
``z = W x + b`` the epsilon rule ``R_x = x * W^T (R_z / stab(z))`` then reads
``c_x = W^T (c_z * z / stab(z))``: the ordinary backward pass of the layer applied to the incoming
"gradient" ``c_z`` multiplied by the *stabilised ratio* ``z / stab(z)``, with zennit's stabiliser
``stab(z) = z + epsilon * (sign(z) + (z == 0))`` (zeros count as positive). For ReLU (relevance passed
unchanged), max pooling (winner-takes-all), concatenation, flatten, dropout and reshaping the LRP rule
coincides exactly with the ordinary gradient in this formulation. Hence the input relevance is
``x * g`` where ``g`` is the gradient of ``sum(logits * seed)`` computed with one modification: at the
output of every affine layer (Conv, Linear, batch norm, average pooling) the incoming gradient is
multiplied by ``z / stab(z)``.

Implementation
--------------
Temporary forward hooks wrap each affine layer's output in a small custom autograd node (``_Ratio``)
that is the identity in the forward pass and in ordinary backward passes. Only while
:meth:`LRPTrace.relevance` runs ``torch.autograd.grad`` (a per-trace switch is on) do these nodes apply
the LRP factor. With ``create_graph=True`` that backward pass is recorded by autograd, so the relevance
is an ordinary differentiable function of the parameters and of the input; a training step uses the
*same* forward pass for the classification loss, one recorded relevance pass, and one final backward
pass. The factor itself (``_LRPScale``) has a hand-written derivative to keep the number of passes over
large activation tensors small. When an affine layer or batch norm is directly followed by a ReLU in a
plain ``nn.Sequential``, the node sits on the ReLU output and uses ``relu(y) / (relu(y) + eps)``, which
equals "ReLU backward, then the layer's factor" exactly and saves passes (pure implementation detail;
the rules are unchanged).

Batch norm
----------
Batch norm is its own affine layer ``y = a * x + c`` with ``a = gamma / sqrt(var + eps)`` and
``c = beta - a * mean``, using the statistics the forward pass normalised with (the current batch's
biased mean/var in training mode, the running statistics in eval mode): ``R_x = x * a * R_y / stab(y)``.
The statistics are constants of the propagation rule (no relevance flows between samples), as in the
ISNet authors' LRP block; BN is not fused into neighbouring convolutions (in DenseNet it follows a
concatenation). ``gamma`` keeps its autograd graph; in training mode the batch variance inside ``a`` is
detached for the gradient as well (the authors' choice, cheaper) unless ``bn_stats_grad=True`` is passed
to :func:`lrp_forward`, which makes the gradient the exact total derivative. Biases are never detached.

Input layer
-----------
The z^B (box) rule uses ``zbox = W x - W^+ l - W^- h`` (zennit's ``ZBox``: the bias cancels in its
three-way difference) and ``R_x = x * W^T s - l * W^+^T s - h * W^-^T s`` with ``s = R_z / stab(zbox)``,
evaluated as ``(x - l) * W^+^T s + (x - h) * W^-^T s`` by one explicit transposed convolution (the
relevance pass stops at the input layer's output).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

__all__ = [
    "LRPTrace",
    "UnsupportedLayerError",
    "lrp_forward",
    "relevance",
    "stabilize",
]

FirstLayerRule = Literal["zbox", "epsilon"]

_AFFINE_WEIGHTED: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_AFFINE_POOLS: tuple[type[nn.Module], ...] = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
# Layers whose ordinary gradient *is* the LRP rule in the x * c formulation.
_GRADIENT_RULE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


class UnsupportedLayerError(TypeError):
    """Raised when a model contains a leaf layer without a defined LRP rule."""


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """Return zennit's stabilised denominator ``z + epsilon * (sign(z) + (z == 0))``.

    Zeros are treated as positive, so the result never vanishes for ``epsilon > 0``.
    The gradient with respect to ``z`` is one everywhere.
    """
    eps = z.new_tensor(epsilon)
    return z + torch.where(z >= 0, eps, -eps)


class _Mode:
    """Switch shared by the custom autograd nodes of one traced forward pass."""

    __slots__ = ("lrp",)

    def __init__(self) -> None:
        self.lrp = False


class _LRPScale(torch.autograd.Function):
    """``out = g * scale * |ref| / (|ref| + epsilon)`` -- the LRP-epsilon factor ``ref / stab(ref)``.

    ``|ref| / (|ref| + eps)`` equals zennit's ``ref / (ref + eps * sign(ref))`` exactly (IEEE negation is
    exact). It is evaluated inside the LRP backward pass; its own backward (the "double backward" of a
    training step) is written out by hand to keep the number of passes over large activations small:
    ``d/dg = gg * scale * r``, ``d/dscale = sum(gg * g * r)``,
    ``d/dref = gg * g * scale * sign(ref) * (1 - r)**2 / eps``.
    """

    @staticmethod
    def forward(
        ctx: Any, grad: Tensor, ref: Tensor, scale: Tensor | None, epsilon: float, nonneg: bool
    ) -> Tensor:
        if nonneg:
            ratio = ref + epsilon
            ratio = torch.div(ref, ratio, out=ratio)
        else:
            ratio = ref.abs()
            ratio = ratio.div_(ratio + epsilon)
        out = grad * ratio
        if scale is not None:
            out = out.mul_(scale)
        ctx.save_for_backward(grad, ref, ratio, scale)
        ctx.epsilon = epsilon
        ctx.nonneg = nonneg
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        grad, ref, ratio, scale = ctx.saved_tensors
        need_grad, need_ref, need_scale = ctx.needs_input_grad[:3]
        d_grad = d_ref = d_scale = None
        if need_grad:
            d_grad = gg * ratio
            if scale is not None:
                d_grad = d_grad.mul_(scale)
        if need_ref or need_scale:
            gg_g = gg * grad
            if need_scale:
                assert scale is not None
                d_scale = (gg_g * ratio).sum_to_size(scale.shape)
            if need_ref:
                d_ref = torch.rsub(ratio, 1.0).square_()
                if not ctx.nonneg:
                    d_ref = d_ref.copysign_(ref)
                d_ref = d_ref.mul_(gg_g)
                d_ref = d_ref.mul_(scale / ctx.epsilon) if scale is not None else d_ref.div_(ctx.epsilon)
        return d_grad, d_ref, d_scale, None, None


class _Ratio(torch.autograd.Function):
    """Identity on ``out``; in LRP mode the incoming gradient ``g`` is replaced by
    ``g * scale * ref / stab(ref)`` and sent to ``target`` instead of ``out``.

    Unfused affine layer: ``out = target = ref = z`` (layer output). Batch norm: ``out = ref = y``,
    ``target = x`` (BN input), ``scale = gamma / sqrt(var + eps)``. Affine layer or batch norm directly
    followed by a ReLU: ``out = ref = relu output``, ``target`` = affine output or BN input -- this
    equals the ReLU backward followed by the layer's rule exactly (``relu(y) / stab(relu(y))`` vanishes
    where the ReLU is off) and saves a pass.
    """

    @staticmethod
    def forward(
        ctx: Any,
        out: Tensor,
        target: Tensor,
        ref: Tensor,
        scale: Tensor | None,
        mode: _Mode,
        epsilon: float,
        nonneg: bool,
    ) -> Tensor:
        ctx.save_for_backward(ref, scale)
        ctx.mode = mode
        ctx.epsilon = epsilon
        ctx.nonneg = nonneg
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.mode.lrp:
            return grad, None, None, None, None, None, None
        ref, scale = ctx.saved_tensors
        scaled = _LRPScale.apply(grad, ref, scale, ctx.epsilon, ctx.nonneg)
        return None, scaled, None, None, None, None, None


_BN_BACKWARD_NODES = ("NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0")
_VALIDATED_BN_NODES: set[tuple[str, str]] = set()


def _saved_inverse_std(output: Tensor, x: Tensor, num_features: int, eps: float) -> Tensor | None:
    """The batch ``1 / sqrt(var + eps)`` saved by PyTorch's batch-norm autograd node, if available.

    Saves recomputing the variance (a full pass over ``x``). The meaning of the saved tensor is
    validated against a direct computation (channel 0) the first time a node type is seen on a device
    type; ``None`` is returned (and the caller recomputes) if it is missing or does not match.
    """
    node = output.grad_fn
    if node is None or type(node).__name__ not in _BN_BACKWARD_NODES:
        return None
    name = type(node).__name__
    invstd = getattr(node, "_saved_result2", None)
    if not isinstance(invstd, Tensor) or invstd.shape != (num_features,) or not invstd.is_floating_point():
        return None
    key = (name, x.device.type)
    if key not in _VALIDATED_BN_NODES:
        check = torch.rsqrt(x[:, 0].detach().double().var(unbiased=False) + eps)
        if not torch.allclose(invstd[0].double(), check, rtol=1e-3, atol=0.0):
            return None
        _VALIDATED_BN_NODES.add(key)
    return invstd.to(x.dtype)


def _bn_scale(module: _BatchNorm, x: Tensor, output: Tensor, stats_grad: bool) -> Tensor:
    """Per-channel factor ``gamma / sqrt(var + eps)`` broadcastable to ``x`` (statistics as in forward).

    In training mode the batch variance is detached unless ``stats_grad``.
    """
    use_batch_stats = module.training or (module.running_mean is None and module.running_var is None)
    if use_batch_stats:
        dims = [0, *range(2, x.dim())]
        if stats_grad:
            invstd = torch.rsqrt(torch.var(x, dim=dims, unbiased=False) + module.eps)
        else:
            saved = _saved_inverse_std(output, x, module.num_features, module.eps)
            if saved is None:
                with torch.no_grad():
                    saved = torch.rsqrt(torch.var(x, dim=dims, unbiased=False) + module.eps)
            invstd = saved
    else:
        assert module.running_var is not None
        invstd = torch.rsqrt(module.running_var + module.eps)
    scale = module.weight * invstd if module.weight is not None else invstd
    return scale.reshape((1, -1) + (1,) * (x.dim() - 2))


def _bound_tensor(value: float | Tensor, images: Tensor) -> Tensor:
    """Bound as a constant tensor broadcastable to ``images`` (batch dimension kept at 1 if possible)."""
    bound = torch.as_tensor(value, dtype=images.dtype, device=images.device).detach()
    if bound.dim() > images.dim():
        raise ValueError(f"bound of shape {tuple(bound.shape)} does not broadcast to the images")
    bound = bound.reshape((1,) * (images.dim() - bound.dim()) + tuple(bound.shape))
    shape = (bound.shape[0], *images.shape[1:])
    return torch.broadcast_to(bound, shape).contiguous()


def _conv_transpose(module: nn.Module, s: Tensor, weight: Tensor, in_shape: torch.Size) -> Tensor:
    """``W^T s`` for a Conv/Linear ``module`` (the input-gradient of the layer), differentiable."""
    if isinstance(module, nn.Linear):
        return s @ weight
    conv: Any = module
    if conv.padding_mode != "zeros":
        raise ValueError("first_layer='zbox' supports only zero-padded convolutions")
    if isinstance(conv.padding, str):
        if conv.padding != "valid":
            raise ValueError("first_layer='zbox' does not support padding='same'")
        padding = (0,) * (s.dim() - 2)
    else:
        padding = tuple(conv.padding)
    kernel = weight.shape[2:]
    output_padding = tuple(
        in_shape[2 + d]
        - ((s.shape[2 + d] - 1) * conv.stride[d] - 2 * padding[d] + conv.dilation[d] * (kernel[d] - 1) + 1)
        for d in range(s.dim() - 2)
    )
    transpose = {3: F.conv_transpose1d, 4: F.conv_transpose2d, 5: F.conv_transpose3d}[s.dim()]
    return transpose(s, weight, None, conv.stride, padding, output_padding, conv.groups, conv.dilation)


@dataclass
class _InputLayer:
    """What the z^B rule at the input layer needs after the forward pass."""

    module: nn.Module
    x: Tensor
    z: Tensor
    zbox: Tensor
    low: Tensor
    high: Tensor


class _Instrumenter:
    """Installs the temporary hooks for one forward pass and records what the trace needs."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        epsilon: float,
        first_layer: FirstLayerRule,
        low: float | Tensor,
        high: float | Tensor,
        bn_stats_grad: bool,
    ) -> None:
        self.model = model
        self.images = images
        self.epsilon = epsilon
        self.first_layer = first_layer
        self.low = low
        self.high = high
        self.bn_stats_grad = bn_stats_grad
        self.mode = _Mode()
        self.seen_weighted = False
        self.input_layer: _InputLayer | None = None
        self.last_raw: Tensor | None = None
        self.last_out: Tensor | None = None
        self.fuse_sources: set[int] = set()
        self.fuse_targets: set[int] = set()
        self.inplace_ok: set[int] = set()
        self.pending: tuple[Tensor, Tensor, Tensor | None] | None = None

    def _wrap(self, out: Tensor, target: Tensor, ref: Tensor, scale: Tensor | None, nonneg: bool) -> Tensor:
        if self.pending is not None:
            raise RuntimeError("LRP instrumentation: a fused layer output was not consumed by its ReLU")
        return _Ratio.apply(out, target, ref, scale, self.mode, self.epsilon, nonneg)

    def _emit(self, module: nn.Module, output: Tensor, target: Tensor, scale: Tensor | None) -> Tensor | None:
        """Either wrap ``output`` now or defer to the directly following ReLU."""
        if id(module) in self.fuse_sources:
            if self.pending is not None:
                raise RuntimeError("LRP instrumentation: unexpected layer order for ReLU fusion")
            self.pending = (output, target, scale)
            self.last_raw, self.last_out = None, output
            return None
        wrapped = self._wrap(output, target, output, scale, nonneg=False)
        self.last_out = wrapped
        return wrapped

    # -- hooks -------------------------------------------------------------------------------------
    def _weighted_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        first = not self.seen_weighted
        self.seen_weighted = True
        if first and self.first_layer == "zbox":
            self._record_input_layer(module, inputs[0], output)
            self.last_raw, self.last_out = None, output
            return None
        wrapped = self._emit(module, output, output, None)
        self.last_raw = output if wrapped is not None else None
        return wrapped

    def _pool_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        wrapped = self._emit(module, output, output, None)
        self.last_raw = None
        return wrapped

    def _bn_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        assert isinstance(module, _BatchNorm)
        x = inputs[0]
        wrapped = self._emit(module, output, x, _bn_scale(module, x, output, self.bn_stats_grad))
        self.last_raw = None
        return wrapped

    def _relu_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if self.pending is None:
            self.last_raw, self.last_out = None, output
            return None
        source_out, target, scale = self.pending
        if inputs[0] is not source_out:
            raise RuntimeError("LRP instrumentation: ReLU fusion expected the preceding layer's output")
        self.pending = None
        wrapped = self._wrap(output, target, output, scale, nonneg=True)
        self.last_raw, self.last_out = None, wrapped
        return wrapped

    def _other_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if self.pending is not None:
            raise RuntimeError("LRP instrumentation: a fused layer output was not consumed by its ReLU")
        self.last_raw, self.last_out = None, output

    def _record_input_layer(self, module: nn.Module, x: Tensor, z: Tensor) -> None:
        images = self.images
        if x.numel() != images.numel() or x.data_ptr() != images.data_ptr():
            raise ValueError(
                "first_layer='zbox' needs the first Conv/Linear layer to receive the input images "
                f"(possibly reshaped); {type(module).__name__} received a tensor of shape {tuple(x.shape)}"
            )
        low = _bound_tensor(self.low, images)
        high = _bound_tensor(self.high, images)
        weight = module.weight
        assert isinstance(weight, Tensor)
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        low_x = low.reshape((low.shape[0], *x.shape[1:]))
        high_x = high.reshape((high.shape[0], *x.shape[1:]))
        if isinstance(module, nn.Linear):
            z_low, z_high = F.linear(low_x, w_pos), F.linear(high_x, w_neg)
        else:
            conv: Any = module
            z_low, z_high = conv._conv_forward(low_x, w_pos, None), conv._conv_forward(high_x, w_neg, None)
        zbox = z - z_low - z_high
        bias = module.bias
        if isinstance(bias, Tensor):
            zbox = zbox - bias.reshape((1, -1) + (1,) * (z.dim() - 2))
        self.input_layer = _InputLayer(module=module, x=x, z=z, zbox=zbox, low=low_x, high=high_x)

    # -- installation ------------------------------------------------------------------------------
    def _plan_fusion(self) -> None:
        """Find ``(affine layer, ReLU)`` pairs that are adjacent in a plain ``nn.Sequential``."""
        sources = (*_AFFINE_WEIGHTED, *_AFFINE_POOLS, _BatchNorm)
        for container in self.model.modules():
            plain = isinstance(container, nn.Sequential) and type(container).forward is nn.Sequential.forward
            if not plain:
                continue
            children: list[nn.Module] = list(container.children())
            for prev, nxt in itertools.pairwise(children):
                if isinstance(prev, sources) and type(nxt) is nn.ReLU:
                    self.fuse_sources.add(id(prev))
                    self.fuse_targets.add(id(nxt))
                    if isinstance(prev, _BatchNorm):
                        # The fused node routes LRP to the BN *input*; an in-place ReLU on the BN output is
                        # harmless (the BN backward does not use its output), so keep it and save a copy.
                        self.inplace_ok.add(id(nxt))

    @contextmanager
    def installed(self) -> Iterator[None]:
        handles: list[RemovableHandle] = []
        inplace: list[tuple[nn.Module, bool]] = []
        self._plan_fusion()
        try:
            for name, module in self.model.named_modules():
                flag = getattr(module, "inplace", None)
                if isinstance(flag, bool) and id(module) not in self.inplace_ok:
                    inplace.append((module, flag))
                    setattr(module, "inplace", False)  # noqa: B010
                if isinstance(module, _AFFINE_WEIGHTED):
                    handles.append(module.register_forward_hook(self._weighted_hook))
                elif isinstance(module, _BatchNorm):
                    handles.append(module.register_forward_hook(self._bn_hook))
                elif isinstance(module, _AFFINE_POOLS):
                    handles.append(module.register_forward_hook(self._pool_hook))
                elif id(module) in self.fuse_targets:
                    handles.append(module.register_forward_hook(self._relu_hook))
                elif isinstance(module, _GRADIENT_RULE):
                    handles.append(module.register_forward_hook(self._other_hook))
                elif not any(True for _ in module.children()):
                    raise UnsupportedLayerError(
                        f"layer {name or '<root>'!r} of type {type(module).__name__} has no LRP rule; "
                        "supported leaves: Conv, Linear, BatchNorm, ReLU, Max/Avg(Adaptive)Pool, Flatten, "
                        "Identity, Dropout"
                    )
            yield
            if self.pending is not None:
                raise RuntimeError("LRP instrumentation: a fused layer output was not consumed by its ReLU")
        finally:
            for handle in handles:
                handle.remove()
            for module, flag in inplace:
                setattr(module, "inplace", flag)  # noqa: B010


@contextmanager
def _preserved_bn_buffers(model: nn.Module) -> Iterator[None]:
    """Let the forward pass update *copies* of the BN running statistics, then put the originals back.

    The originals are swapped back by attribute assignment (no in-place write), so the tensors saved by
    autograd for the batch-norm backward keep their version and the graph stays usable.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved: list[tuple[nn.Module, str, Tensor]] = []
    try:
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.training:
                for name in names:
                    buf = getattr(module, name)
                    if isinstance(buf, Tensor):
                        saved.append((module, name, buf))
                        setattr(module, name, buf.clone())
        yield
    finally:
        for module, name, buf in saved:
            setattr(module, name, buf)


@dataclass
class LRPTrace:
    """Result of :func:`lrp_forward`: the logits plus what is needed to compute relevance maps.

    Attributes
    ----------
    logits
        The model output of the traced forward pass, with its ordinary autograd graph (a loss on it,
        e.g. cross-entropy, back-propagates exactly as for an uninstrumented forward pass).
    raw_logits
        The output of the final Linear/Conv layer *before* its LRP stabiliser (same values as ``logits``),
        or ``None`` when the model does not end with such a layer. Seeding relevance here skips the
        epsilon rule of the output layer (used by the selective ISNet variant).
    """

    logits: Tensor
    raw_logits: Tensor | None
    _images: Tensor
    _input_layer: _InputLayer | None
    _mode: _Mode
    _epsilon: float

    def relevance(
        self,
        seed: Tensor,
        *,
        at: Literal["output", "raw"] = "output",
        create_graph: bool = False,
    ) -> Tensor:
        """Relevance of the input pixels for the output relevance ``logits * seed``.

        Parameters
        ----------
        seed
            ``(batch, classes)`` tensor. With ``at="output"`` the output relevance is ``logits * seed``
            (e.g. a one-hot ``seed`` explains the target logit), which is then propagated with the epsilon
            rule through the output layer as through every other layer. With ``at="raw"`` ``seed`` is the
            relevance-per-unit-activation ``c`` at the output layer's *unstabilised* output: the
            relevance reaching the output layer's input is ``x * W^T seed``.
            ``seed`` may carry an autograd graph (it is then differentiated through).
        at
            Where the seed is injected, see above.
        create_graph
            Record the propagation so that the returned relevance can be differentiated (training).

        Returns
        -------
        torch.Tensor
            Relevance with the input images' shape. The autograd graph of the forward pass is kept, so
            this may be called several times and followed by a backward pass through ``logits``.
        """
        if at == "output":
            outputs = self.logits
        elif at == "raw":
            if self.raw_logits is None:
                raise ValueError("the model does not end with an unfused Linear/Conv layer; use at='output'")
            outputs = self.raw_logits
        else:
            raise ValueError(f"unknown seed position {at!r}")
        if seed.shape != outputs.shape:
            raise ValueError(f"seed shape {tuple(seed.shape)} != output shape {tuple(outputs.shape)}")
        layer = self._input_layer
        target = self._images if layer is None else layer.z
        self._mode.lrp = True
        try:
            (grad,) = torch.autograd.grad(
                outputs, target, grad_outputs=seed, retain_graph=True, create_graph=create_graph
            )
        finally:
            self._mode.lrp = False
        with torch.set_grad_enabled(create_graph):
            return self._finish(grad)

    def _finish(self, grad: Tensor) -> Tensor:
        """Input relevance from the gradient at the images (epsilon) or at the input layer's output."""
        layer = self._input_layer
        if layer is None:
            return self._images * grad
        # z^B rule at the input layer: s = c_z * z / stab(zbox) and
        # R = x W^T s - l (W+)^T s - h (W-)^T s = (x - l) (W+)^T s + (x - h) (W-)^T s  (W = W+ + W-),
        # both products from one transposed op with the stacked weights [W+, W-].
        s = grad * layer.z / stabilize(layer.zbox, self._epsilon)
        weight = layer.module.weight
        assert isinstance(weight, Tensor)
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        x = layer.x
        if getattr(layer.module, "groups", 1) == 1:
            stacked = _conv_transpose(layer.module, s, torch.cat([w_pos, w_neg], dim=1), x.shape)
            back_pos, back_neg = stacked.split(weight.shape[1], dim=1)
        else:
            back_pos = _conv_transpose(layer.module, s, w_pos, x.shape)
            back_neg = _conv_transpose(layer.module, s, w_neg, x.shape)
        rel = (x - layer.low) * back_pos + (x - layer.high) * back_neg
        return rel.reshape(self._images.shape)


def lrp_forward(
    model: nn.Module,
    images: Tensor,
    *,
    epsilon: float = 0.01,
    first_layer: FirstLayerRule = "zbox",
    low: float | Tensor = 0.0,
    high: float | Tensor = 1.0,
    preserve_buffers: bool = False,
    bn_stats_grad: bool = False,
) -> LRPTrace:
    """Run one forward pass of ``model`` prepared for LRP and return an :class:`LRPTrace`.

    The model is instrumented only for the duration of the forward pass (temporary forward hooks;
    ``inplace`` flags switched off where an in-place activation would overwrite a tensor the relevance
    pass needs) and restored exactly afterwards. The returned logits
    have their ordinary autograd graph, so a training step can use the same forward pass for the
    classification loss and for the relevance maps (see :mod:`isnetflow.isnet`).

    Parameters
    ----------
    model
        Network built from Conv/Linear/BatchNorm/ReLU/max- and average-pooling/Flatten/Dropout layers
        composed by containers (concatenations, reshapes and sums in ``forward`` are fine: their
        gradient is their LRP rule). Output: ``(batch, classes)`` logits.
    images
        Input batch. If it requires grad, the relevance is differentiable with respect to it as well.
    epsilon, first_layer, low, high
        See :func:`relevance`.
    preserve_buffers
        Restore batch-norm running statistics after the forward pass (no side effect on the model).
        A training step leaves this ``False`` so that the one forward pass updates them as usual.
    bn_stats_grad
        Training-mode batch norm only: if ``True`` the BN factor ``gamma / sqrt(var + eps)`` of the
        propagation rule keeps its autograd graph to the batch variance, so gradients of a loss on the
        relevance are the exact total derivative (also through the batch statistics). The default
        ``False`` treats the batch statistics in the rule as constants for the gradient as well, as the
        ISNet authors do (cheaper). The relevance values are identical; eval-mode BN is unaffected.

    Raises
    ------
    UnsupportedLayerError
        If the model contains a leaf layer without an LRP rule.
    ValueError
        For ``epsilon <= 0``, an unknown ``first_layer``, non-``(batch, classes)`` output, or
        ``first_layer="zbox"`` when the first Conv/Linear layer does not see the input images.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if first_layer not in ("zbox", "epsilon"):
        raise ValueError(f"first_layer must be 'zbox' or 'epsilon', got {first_layer!r}")
    x = images if images.requires_grad else images.detach().requires_grad_(True)
    inst = _Instrumenter(model, x, epsilon, first_layer, low, high, bn_stats_grad)
    with torch.enable_grad(), inst.installed():
        if preserve_buffers:
            with _preserved_bn_buffers(model):
                out = model(x)
        else:
            out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model output must be a (batch, classes) tensor, got {shape}")
    if first_layer == "zbox" and inst.input_layer is None:
        raise ValueError("first_layer='zbox' but the model has no Conv/Linear layer")
    raw = inst.last_raw if out is inst.last_out else None
    return LRPTrace(
        logits=out,
        raw_logits=raw,
        _images=x,
        _input_layer=inst.input_layer,
        _mode=inst.mode,
        _epsilon=epsilon,
    )


def relevance(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    epsilon: float = 0.01,
    first_layer: FirstLayerRule = "zbox",
    low: float | Tensor = 0.0,
    high: float | Tensor = 1.0,
    create_graph: bool = False,
) -> Tensor:
    """LRP relevance maps of the target logits, differentiable with respect to the weights.

    Rules
    -----
    * Output: relevance ``logits * one_hot(targets)`` (the target logit of each sample).
    * Conv / Linear / average pooling / adaptive average pooling: LRP-epsilon,
      ``R_in = x * W^T (R_out / stab(z))`` with ``stab(z) = z + epsilon * (sign(z) + (z == 0))`` and
      ``z`` the layer output including its bias (identical to zennit 0.5.1's ``Epsilon`` rule).
    * Batch norm: its own affine layer ``y = a x + c`` (``a = gamma / sqrt(var + eps)``,
      ``c = beta - a mean``) under the epsilon rule, with the statistics used by the forward pass
      (batch statistics in training mode, running statistics in eval mode) treated as constants of the
      rule (no relevance flows between samples). BN is not fused into neighbouring convolutions. With
      ``create_graph=True`` in training mode the gradient does not flow through the batch variance
      inside ``a`` (the ISNet authors' choice); use :func:`lrp_forward` with ``bn_stats_grad=True`` for
      the exact total derivative.
    * ReLU, dropout, flatten, concatenation: relevance passed unchanged.
    * Max pooling: winner-takes-all (relevance of each pooled value goes to its arg-max input).
    * Input layer with ``first_layer="zbox"``: z^B rule with bounds ``low``/``high``, stabiliser
      ``epsilon`` (zennit's ``ZBox(low, high, stabilizer=epsilon)``); with ``"epsilon"`` the epsilon rule.

    Parameters
    ----------
    model
        Classifier (see :func:`lrp_forward` for the supported layers). Its training/eval mode is
        respected; it is not modified (hooks, in-place flags and BN running statistics are restored).
    images
        ``(batch, channels, *spatial)`` input batch.
    targets
        ``(batch,)`` integer class indices whose logits are explained.
    epsilon
        LRP-epsilon stabiliser (``> 0``).
    first_layer
        ``"zbox"`` or ``"epsilon"``: rule at the first Conv/Linear layer.
    low, high
        Lowest/highest possible input values for the z^B rule; scalars or tensors broadcastable to
        ``images``.
    create_graph
        If ``True`` the result carries an autograd graph to the parameters (and to ``images`` if it
        requires grad), for use in a training loss. Otherwise the result is detached.

    Returns
    -------
    torch.Tensor
        Relevance map with the shape of ``images``.
    """
    if targets.dim() != 1 or targets.shape[0] != images.shape[0] or targets.dtype != torch.long:
        raise ValueError("targets must be a LongTensor of shape (batch,)")
    trace = lrp_forward(
        model, images, epsilon=epsilon, first_layer=first_layer, low=low, high=high, preserve_buffers=True
    )
    num_classes = trace.logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes})")
    seed = F.one_hot(targets.to(trace.logits.device), num_classes).to(trace.logits.dtype)
    rel = trace.relevance(seed, create_graph=create_graph)
    return rel if create_graph else rel.detach()
