"""Residual 3D U-Net and its CBAM-attention variant (Keras 3, ``keras.ops`` only: any backend).

Custom layers live in ``service.pipeline.model_layers`` (registered serialisable) so that serving, which never
imports training, can load a bundle in safe mode.
"""

from __future__ import annotations

from typing import Literal

import keras
from keras import layers

from service.pipeline.model_layers import CBAM3D

Architecture = Literal["residual", "attention"]


def _res_block(x, filters: int, attention: bool, name: str):
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv3D(filters, 1, padding="same", name=f"{name}_proj")(x)
    y = layers.Conv3D(filters, 3, padding="same", name=f"{name}_c1")(x)
    y = layers.LayerNormalization(axis=-1, epsilon=1e-5, name=f"{name}_n1")(y)
    y = layers.Activation("relu", name=f"{name}_a1")(y)
    y = layers.Conv3D(filters, 3, padding="same", name=f"{name}_c2")(y)
    y = layers.LayerNormalization(axis=-1, epsilon=1e-5, name=f"{name}_n2")(y)
    if attention:
        y = CBAM3D(reduction=4, name=f"{name}_cbam")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_unet(
    architecture: Architecture = "residual",
    base_filters: int = 8,
    depth: int = 4,
    n_classes: int = 3,
    max_filters: int = 128,
    name: str | None = None,
) -> keras.Model:
    """A fully convolutional 3D U-Net on (z, y, x, 1) inputs whose sizes are divisible by ``2 ** depth``.

    Encoder: residual blocks (conv-LN-ReLU-conv-LN + shortcut), strided-conv downsampling; decoder: transposed
    conv upsampling, skip concatenation, residual blocks; softmax over ``n_classes`` (float32 output).
    ``attention`` adds a CBAM block (channel then spatial attention) inside every residual block.
    """
    attention = architecture == "attention"
    inp = keras.Input(shape=(None, None, None, 1), name="ct")
    x = inp
    skips = []
    filters = [min(base_filters * 2**i, max_filters) for i in range(depth + 1)]
    for lvl in range(depth):
        x = _res_block(x, filters[lvl], attention, f"enc{lvl}")
        skips.append(x)
        x = layers.Conv3D(filters[lvl + 1], 2, strides=2, padding="same", name=f"down{lvl}")(x)
    x = _res_block(x, filters[depth], attention, "bottleneck")
    for lvl in reversed(range(depth)):
        x = layers.Conv3DTranspose(filters[lvl], 2, strides=2, padding="same", name=f"up{lvl}")(x)
        x = layers.Concatenate(axis=-1, name=f"cat{lvl}")([x, skips[lvl]])
        x = _res_block(x, filters[lvl], attention, f"dec{lvl}")
    logits = layers.Conv3D(n_classes, 1, padding="same", name="logits")(x)
    out = layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(inp, out, name=name or f"parotid_unet3d_{architecture}")


def average_models(members: list[keras.Model], name: str = "parotid_unet3d_ensemble") -> keras.Model:
    """One model whose output is the mean of the members' softmax outputs (members need distinct names)."""
    inp = keras.Input(shape=(None, None, None, 1), name="ct")
    outs = [m(inp) for m in members]
    out = layers.Average(dtype="float32", name="mean_probs")(outs)
    return keras.Model(inp, out, name=name)


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Warm start: copy every weighted layer of ``source`` into the layer of ``target`` with the same name.

    ``source`` must be contained in ``target`` (same names, same weight shapes): a network of the same architecture,
    or a residual network into its attention variant (same layer names; the CBAM blocks are extra). A layer of the
    source with no counterpart raises ``ValueError`` naming it. CBAM blocks left fresh start with their gates open
    (zero kernels, positive biases: about 0.95 x identity), so the copied network's function is kept at the start
    and the attention is learnt from there. Returns the names of the target's layers that were not copied.
    """
    by_name = {layer.name: layer for layer in target.layers}
    copied: set[str] = set()
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        dst = by_name.get(layer.name)
        if dst is None or [w.shape for w in dst.get_weights()] != [w.shape for w in weights]:
            raise ValueError(f"layer {layer.name!r} of {source.name} has no counterpart of the same shape")
        dst.set_weights(weights)
        copied.add(layer.name)
    fresh = [layer.name for layer in target.layers if layer.get_weights() and layer.name not in copied]
    for name in fresh:
        if isinstance(by_name[name], CBAM3D):
            _open_gates(by_name[name])
    return fresh


def _open_gates(cbam: CBAM3D, logit: float = 3.0) -> None:
    """sigmoid(logit) ~ 0.95 for both gates, independent of the input (the channel MLP's bias counts twice)."""
    for dense_or_conv, bias in ((cbam.mlp2, logit / 2), (cbam.spatial, logit)):
        kernel, b = dense_or_conv.get_weights()
        dense_or_conv.set_weights([kernel * 0.0, b * 0.0 + bias])
