"""Function-preserving widening of a trained U-Net (Net2WiderNet; Chen, Goodfellow & Shlens, ICLR 2016).

A network of ``2 x base_filters`` starts from a trained network of ``base_filters`` with the same depth and layer
names: every feature channel is duplicated (the wide tensor is ``tile(narrow, 2)``), weights that read a
duplicated tensor are halved per copy, and the input (one CT channel) and the softmax output keep their size. With
exact duplicates the layer normalisations see the same mean and variance over channels, so the wide network
computes the narrow network's function; a little noise on the duplicated kernels then lets the two copies of each
channel learn different features. Why not copy the narrow weights into half of the channels and start the rest
from zero: layer normalisation over channels would see other statistics and the function would be lost.

Layout of a widened tensor of ``2f`` channels: ``[c_0 .. c_{f-1}, c_0 .. c_{f-1}]``. A decoder block reads the
concatenation ``[upsampled (2f), skip (2f)]`` of two widened tensors; its first convolution and projection map
their inputs accordingly. Keras kernel layouts: Conv3D ``(kz, ky, kx, in, out)``, Conv3DTranspose
``(kz, ky, kx, out, in)``.
"""

from __future__ import annotations

import keras
import numpy as np


def _input_map(n_target: int, n_source: int, concat_parts: int) -> np.ndarray:
    """For each input channel of the wide layer, the narrow layer's input channel it copies."""
    if n_target == n_source:
        return np.arange(n_source)
    if n_target != 2 * n_source:
        raise ValueError(f"input channels {n_source} -> {n_target} is not a doubling")
    part_s, part_t = n_source // concat_parts, n_target // concat_parts
    idx = np.arange(n_target)
    return (idx // part_t) * part_s + (idx % part_t) % part_s


def _output_map(n_target: int, n_source: int) -> np.ndarray:
    if n_target == n_source:
        return np.arange(n_source)
    if n_target != 2 * n_source:
        raise ValueError(f"output channels {n_source} -> {n_target} is not a doubling")
    return np.arange(n_target) % n_source


def _widen_kernel(
    kernel: np.ndarray, shape: tuple[int, ...], in_axis: int, out_axis: int, concat_parts: int
) -> np.ndarray:
    in_map = _input_map(shape[in_axis], kernel.shape[in_axis], concat_parts)
    out_map = _output_map(shape[out_axis], kernel.shape[out_axis])
    wide = np.take(np.take(kernel, in_map, axis=in_axis), out_map, axis=out_axis)
    copies = np.bincount(in_map, minlength=kernel.shape[in_axis])[in_map]  # how often each source input appears
    scale_shape = [1] * kernel.ndim
    scale_shape[in_axis] = -1
    return wide / copies.reshape(scale_shape).astype(wide.dtype)


def widen_weights(
    source: keras.Model, target: keras.Model, noise: float = 0.0, rng: np.random.Generator | None = None
) -> int:
    """Copy ``source`` into the twice-as-wide ``target`` (same architecture, depth and layer names).

    ``noise``: standard deviation of Gaussian noise added to each widened kernel, relative to that kernel's own
    standard deviation (0 keeps the function exactly). Returns the number of layers copied; raises ``ValueError``
    naming a layer whose shapes are not a doubling of the source's.
    """
    rng = rng or np.random.default_rng(0)
    copied = 0
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            dst = target.get_layer(layer.name)
        except ValueError as exc:
            raise ValueError(f"layer {layer.name!r} of {source.name} has no counterpart in {target.name}") from exc
        shapes = [tuple(w.shape) for w in dst.get_weights()]
        if len(shapes) != len(weights):
            raise ValueError(f"layer {layer.name!r}: {len(weights)} weights in the source, {len(shapes)} in target")
        concat_parts = 2 if layer.name.startswith("dec") and layer.name.endswith(("_c1", "_proj")) else 1
        new: list[np.ndarray] = []
        try:
            for w, shape in zip(weights, shapes, strict=True):
                if w.ndim == 5:
                    transposed = isinstance(layer, keras.layers.Conv3DTranspose)
                    in_axis, out_axis = (4, 3) if transposed else (3, 4)
                    k = _widen_kernel(w, shape, in_axis, out_axis, concat_parts)
                    if noise > 0 and k.shape != w.shape:
                        k = k + rng.normal(0.0, noise * float(w.std()) + 1e-12, k.shape).astype(k.dtype)
                    new.append(k)
                elif w.ndim == 1:  # bias, layer-norm gamma / beta: one value per output channel
                    new.append(w[_output_map(shape[0], w.shape[0])])
                else:
                    raise ValueError(f"unexpected weight of shape {w.shape}")
        except ValueError as exc:
            raise ValueError(f"layer {layer.name!r}: {exc}") from exc
        dst.set_weights(new)
        copied += 1
    return copied
