"""Turn an :class:`~n2n_env.arch.Architecture` into a PyTorch module, inheriting weights.

Inheritance rule (``build_model(arch, teacher)``): every student layer is matched to the
teacher layer it came from (``Layer.origin``; projections through ``Block.origin``).

* Output channels: a producer (conv, linear, projection) as wide as its teacher keeps the
  teacher's channels in order. A narrower one keeps the channels with the largest L1 norm
  of their weights; producers tied by identity shortcuts choose together (norms summed
  over the group), so residual additions stay aligned.
* Input channels: a layer whose input comes from the same teacher channel space as in the
  teacher (same producer, or one tied to it by a shortcut; for a linear layer also the same
  spatial size at the flatten) takes the matching slice of the teacher's weights. A smaller
  kernel takes the centre of the teacher's kernel.
* A depthwise conv keeps the filters of the channels its group keeps (its width is tied
  to its input's); a grouped conv inherits only when it keeps all its input and output
  channels, since a subset would regroup them.
* Anything else (a layer whose input no longer matches, e.g. the conv after a removed conv,
  or one wider than its teacher) is re-initialised with PyTorch's default initialisation.
  A batch norm after such a layer starts fresh too (unit scale, zero shift, fresh running
  statistics): the teacher's per-channel scales belong to features the new layer does not
  compute. On the evaluator benchmark's vgg13 candidates this raised the short budget's
  agreement with the paper's recipe (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
from torch import nn

from n2n_env.arch import Architecture, Layer, Slot

Channels = torch.Tensor | slice
"""Teacher channel indices a student keeps; ``ALL`` keeps every channel, in order."""
ALL = slice(None)


class N2NNet(nn.Module):
    """A network built from an Architecture; ``architecture`` says what it is."""

    def __init__(self, architecture: Architecture, device: torch.device | str = "cpu") -> None:
        super().__init__()
        reason = architecture.degenerate_reason(max_classifier_inputs=2**62)
        if reason is not None:
            raise ValueError(f"cannot build a degenerate architecture: {reason}")
        self.architecture = architecture
        shapes = architecture.input_shapes()
        self.layers = nn.ModuleList(
            _make_layer(layer, shape, device)  # type: ignore[arg-type]
            for layer, shape in zip(architecture.layers, shapes)
        )
        self.projections = nn.ModuleDict()
        for b, block in enumerate(architecture.blocks):
            if block.projection is not None:
                channels_in = _block_input_channels(architecture, b)
                conv = _conv_class(channels_in, 1, block.projection.stride, 0)
                self.projections[str(b)] = nn.Sequential(
                    conv(
                        channels_in,
                        block.projection.out,
                        1,
                        block.projection.stride,
                        bias=False,
                        device=device,
                    ),
                    nn.BatchNorm2d(block.projection.out, device=device),
                )
        self._ops = architecture.execution_order()

    def _shortcut(self, b: int, x: torch.Tensor) -> torch.Tensor:
        key = str(b)
        return self.projections[key](x) if key in self.projections else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x
        for op, index in self._ops:
            if op == "layer":
                x = self.layers[index](x)
            elif op == "open":
                block_input = x
            elif op == "close":
                x = x + self._shortcut(index, block_input)
            else:
                x = self._shortcut(index, x)
        return x


class SubsampledConv2d(nn.Conv2d):
    """A 1x1 convolution with stride s > 1 and no padding, computed as the same 1x1
    convolution at stride 1 on every s-th row and column (the identical function).

    torch 2.14's CPU convolution (oneDNN 3.12) corrupts the heap in the backward pass of a
    strided 1x1 convolution with 2 to 6 input channels (a Python abort, "corrupted
    double-linked list"); narrow imported ResNets have such projection shortcuts. Subsampling
    first avoids that kernel. ``build_model`` uses this class for those convolutions only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.stride[0]
        return nn.functional.conv2d(x[:, :, ::step, ::step], self.weight, self.bias, 1, 0, 1,
                                    self.groups)


def _conv_class(channels_in: int, kernel: int, stride: int, padding: int) -> type[nn.Conv2d]:
    """nn.Conv2d, or :class:`SubsampledConv2d` where torch's own kernel is unsafe."""
    if kernel == 1 and stride > 1 and padding == 0 and channels_in < 8:
        return SubsampledConv2d
    return nn.Conv2d


def _block_input_channels(architecture: Architecture, b: int) -> int:
    slot = architecture.input_slots()[("projection", b)]
    return architecture.slot_width(slot)


def _make_layer(layer: Layer, shape: tuple[int, ...], device: torch.device | str) -> nn.Module:
    if layer.kind == "conv":
        return _conv_class(shape[0], layer.kernel, layer.stride, layer.padding)(
            shape[0],
            layer.out,
            layer.kernel,
            layer.stride,
            layer.padding,
            groups=shape[0] if layer.depthwise else layer.groups,
            bias=layer.bias,
            device=device,
        )
    if layer.kind == "linear":
        return nn.Linear(shape[0], layer.out, bias=layer.bias, device=device)
    if layer.kind == "bn":
        norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return norm(shape[0], device=device)
    if layer.kind == "maxpool":
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding)
    if layer.kind == "avgpool":
        return nn.AvgPool2d(layer.kernel, layer.stride, layer.padding)
    if layer.kind == "dropout":
        return nn.Dropout(layer.p)
    if layer.kind == "flatten":
        return nn.Flatten()
    if layer.kind == "adaptive_avgpool":
        return nn.AdaptiveAvgPool2d(layer.output_size)
    if layer.kind == "relu6":
        return nn.ReLU6()
    return nn.ReLU()


def build_model(
    arch: Architecture, teacher: nn.Module | None = None, device: torch.device | str | None = None
) -> N2NNet:
    """A freshly initialised network for ``arch``, or, with a ``teacher`` built by this
    function, one that inherits the teacher's weights by the rule in this module's
    docstring. The teacher must share ``arch``'s root teacher (``root_signature()``): the
    root itself or another architecture derived from it; any other teacher is refused
    with a ValueError naming both, since its weights would be copied wherever they fit.

    The model is placed on ``device``, else on the teacher's device, else on the CPU.
    """
    if teacher is not None and not isinstance(getattr(teacher, "architecture", None), Architecture):
        raise TypeError("teacher must be a model from build_model (it carries .architecture)")
    if teacher is not None:
        _check_teacher(arch, teacher.architecture)  # type: ignore[arg-type]
    if device is None:
        device = next(teacher.parameters()).device if teacher is not None else "cpu"
    model = N2NNet(arch, device="meta").to_empty(device=device)
    inherited: set[nn.Module] = set()
    if teacher is not None:
        with torch.no_grad():
            inherited = _Inheritance(model, teacher).apply()  # type: ignore[arg-type]
    for module in model.modules():
        if module not in inherited and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def _check_teacher(arch: Architecture, teacher: Architecture) -> None:
    if arch.root_signature() != teacher.root_signature():
        raise ValueError(
            f"teacher {teacher.name or 'unnamed'!r} (root signature "
            f"{teacher.root_signature()}, input {teacher.input_shape}, "
            f"{teacher.num_classes} classes) is not the teacher that "
            f"{arch.name or 'the student'!r} derives from (root signature "
            f"{arch.root_signature()}, input {arch.input_shape}, {arch.num_classes} classes); "
            "allowed: that root teacher or an architecture derived from it, or no teacher "
            "(fresh weights)"
        )


class _Inheritance:
    """Copies teacher weights into a student by the module docstring's rule."""

    def __init__(self, student: N2NNet, teacher: N2NNet) -> None:
        self.student, self.teacher = student, teacher
        self.s_arch, self.t_arch = student.architecture, teacher.architecture
        t_layer = {layer.origin: i for i, layer in enumerate(self.t_arch.layers)}
        t_block = {block.origin: b for b, block in enumerate(self.t_arch.blocks)}
        self.t_groups = {
            slot: g for g, group in enumerate(self.t_arch.width_groups()) for slot in group
        }

        def counterpart(slot: Slot) -> Slot | None:
            name, index = slot
            if name == "input":
                return slot
            if name == "layer":
                found = t_layer.get(self.s_arch.layers[index].origin)
                if (
                    found is None
                    or self.t_arch.layers[found].kind != self.s_arch.layers[index].kind
                ):
                    return None
                return ("layer", found)
            found = t_block.get(self.s_arch.blocks[index].origin)
            if found is None or self.t_arch.blocks[found].projection is None:
                return None
            return ("projection", found)

        self.counterpart = counterpart
        self.kept: dict[Slot, Channels | None] = {}

    def _weight(self, arch_module: N2NNet, slot: Slot) -> torch.Tensor:
        name, index = slot
        if name == "layer":
            return arch_module.layers[index].weight
        return arch_module.projections[str(index)][0].weight

    def _norms(self, t_slot: Slot) -> torch.Tensor:
        """L1 norm of each output channel of a teacher producer, cached on the teacher
        (keyed by the weight's version, so training the teacher invalidates it)."""
        weight = self._weight(self.teacher, t_slot)
        cache = self.teacher.__dict__.setdefault("_n2n_channel_norms", {})
        version, norms = cache.get(t_slot, (-1, None))
        if version != weight._version or norms is None:
            norms = weight.detach().abs().flatten(1).sum(1).float()
            cache[t_slot] = (weight._version, norms)
        return norms

    def _teacher_width(self, t_slot: Slot) -> int:
        return self.t_arch.slot_width(t_slot)

    def _choose_channels(self) -> None:
        """Pick, for every student producer, which teacher output channels it keeps."""
        for group in self.s_arch.width_groups():
            width = self.s_arch.slot_width(group[0])
            partners = [(slot, self.counterpart(slot)) for slot in group]
            selections: dict[int, torch.Tensor] = {}
            for slot, t_slot in partners:
                teacher_width = self._teacher_width(t_slot) if t_slot is not None else 0
                if t_slot is None or teacher_width < width:
                    self.kept[slot] = None
                elif teacher_width == width:
                    self.kept[slot] = ALL
                else:
                    self.kept[slot] = self._group_selection(partners, t_slot, width, selections)

    def _group_selection(self, partners: list[tuple[Slot, Slot | None]], t_slot: Slot,
                         width: int, selections: dict[int, torch.Tensor]) -> torch.Tensor:
        """Channels for ``t_slot``, chosen once for all student partners whose teachers share
        ``t_slot``'s teacher channel space (norms summed), so additions stay aligned."""
        group = self.t_groups[t_slot]
        if group not in selections:
            members = {t for _, t in partners if t is not None and self.t_groups[t] == group}
            norms = torch.stack([self._norms(t) for t in sorted(members)]).sum(0)
            selections[group] = _strongest(norms, width)
        return selections[group]

    def _input_channels(self, s_slot: Slot, t_slot: Slot) -> Channels | None:
        """Teacher input-channel indices for a student consumer, or None if they differ."""
        s_source = self.s_arch.input_slots()[s_slot]
        t_source = self.t_arch.input_slots()[t_slot]
        s_source_in_teacher = self.counterpart(s_source)
        if s_source_in_teacher is None or (
            self.t_groups[s_source_in_teacher] != self.t_groups[t_source]
        ):
            return None
        return self.kept.get(s_source)

    def apply(self) -> set[nn.Module]:
        """Copy what can be inherited; return the modules that were fully inherited."""
        self._choose_channels()
        inherited: set[nn.Module] = set()
        s_inputs = self.s_arch.input_slots()
        s_shapes, t_shapes = self.s_arch.input_shapes(), self.t_arch.input_shapes()
        for i, layer in enumerate(self.s_arch.layers):
            if not layer.has_params:
                continue
            t_slot = self.counterpart(("layer", i))
            if t_slot is None:
                continue
            t_index = t_slot[1]
            inputs = self._input_channels(("layer", i), t_slot)
            if inputs is None:
                continue
            s_module, t_module = self.student.layers[i], self.teacher.layers[t_index]
            if layer.kind == "bn":
                kind, source = s_inputs[("layer", i)]
                fresh_source = kind == "layer" and self.student.layers[source] not in inherited
                if not fresh_source and _copy_norm(s_module, t_module, inputs):
                    inherited.add(s_module)
                continue
            if layer.kind == "linear":
                inputs = _expand_flat(
                    inputs,
                    s_shapes[i][0],
                    t_shapes[t_index][0],  # type: ignore[index]
                    _source_width(self.s_arch, ("layer", i)),
                    _source_width(self.t_arch, t_slot),
                )
                if inputs is None:
                    continue
            outputs = self.kept[("layer", i)]
            if layer.depthwise:
                inputs = ALL  # one input channel per filter: the outputs select it
            elif layer.groups > 1 and not (isinstance(outputs, slice)
                                           and isinstance(inputs, slice)):
                continue  # a channel subset would regroup the filters' inputs
            if outputs is not None and _copy_weights(s_module, t_module, outputs, inputs):
                inherited.add(s_module)
        for b, block in enumerate(self.s_arch.blocks):
            if block.projection is None:
                continue
            t_slot = self.counterpart(("projection", b))
            outputs = self.kept.get(("projection", b))
            if t_slot is None or outputs is None:
                continue
            inputs = self._input_channels(("projection", b), t_slot)
            if inputs is None:
                continue
            s_conv, s_norm = self.student.projections[str(b)]
            t_conv, t_norm = self.teacher.projections[str(t_slot[1])]
            if _copy_weights(s_conv, t_conv, outputs, inputs):
                inherited.add(s_conv)
                if _copy_norm(s_norm, t_norm, outputs):
                    inherited.add(s_norm)
        return inherited


def _source_width(arch: Architecture, slot: Slot) -> int:
    return arch.slot_width(arch.input_slots()[slot])


def _strongest(norms: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width`` channels with the largest norms, in their original order."""
    return torch.topk(norms, width).indices.sort().values


def _expand_flat(
    channels: Channels, s_features: int, t_features: int, s_channels: int, t_channels: int
) -> Channels | None:
    """Indices into a teacher linear layer's flattened inputs for the kept channels, or None
    when the spatial size at the flatten differs from the teacher's."""
    s_spatial, t_spatial = s_features // s_channels, t_features // t_channels
    if s_spatial != t_spatial or s_spatial * s_channels != s_features:
        return None
    if isinstance(channels, slice):
        return channels
    offsets = torch.arange(t_spatial, device=channels.device)
    return (channels[:, None] * t_spatial + offsets).flatten()


def _select(tensor: torch.Tensor, index: Channels, dim: int) -> torch.Tensor:
    if isinstance(index, slice):
        return tensor
    return tensor.index_select(dim, index.to(tensor.device))


def _copy_weights(
    student: nn.Module, teacher: nn.Module, outputs: Channels, inputs: Channels
) -> bool:
    weight = _select(_select(teacher.weight, outputs, 0), inputs, 1)
    if weight.dim() == 4:
        crop = (weight.shape[-1] - student.weight.shape[-1]) // 2
        if crop < 0:
            return False
        weight = weight[
            ..., crop : crop + student.weight.shape[-2], crop : crop + student.weight.shape[-1]
        ]
    if weight.shape != student.weight.shape:
        return False
    student.weight.copy_(weight)
    if student.bias is not None:
        if teacher.bias is None:
            return False
        student.bias.copy_(_select(teacher.bias, outputs, 0))
    return True


def _copy_norm(student: nn.Module, teacher: nn.Module, channels: Channels) -> bool:
    if _select(teacher.weight, channels, 0).shape != student.weight.shape:
        return False
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(student, name).copy_(_select(getattr(teacher, name), channels, 0))
    student.num_batches_tracked.copy_(teacher.num_batches_tracked)
    return True
