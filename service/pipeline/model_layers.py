"""Custom Keras layers of the parotid networks, registered so a bundle loads in safe mode.

Serving imports this module (and nothing from ``training``) before ``keras.saving.load_model``.
Only ``keras.ops`` is used, so the layers run on TensorFlow, PyTorch and JAX backends alike.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="parotid")
class CBAM3D(layers.Layer):
    """Convolutional Block Attention Module (Woo et al., 2018) for 5-D (batch, z, y, x, c) tensors.

    Channel attention: a shared two-layer MLP on global average- and max-pooled features, sigmoid-gated.
    Spatial attention: a 7x7x7 convolution over the channel-wise mean and max maps, sigmoid-gated.
    """

    def __init__(self, reduction: int = 4, spatial_kernel: int = 7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reduction = reduction
        self.spatial_kernel = spatial_kernel

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        hidden = max(channels // self.reduction, 1)
        self.mlp1 = layers.Dense(hidden, activation="relu", name="mlp1")
        self.mlp2 = layers.Dense(channels, name="mlp2")
        self.mlp1.build((None, channels))
        self.mlp2.build((None, hidden))
        self.spatial = layers.Conv3D(1, self.spatial_kernel, padding="same", name="spatial")
        self.spatial.build((None, None, None, None, 2))
        super().build(input_shape)

    def call(self, x: Any) -> Any:
        avg = ops.mean(x, axis=(1, 2, 3))
        mx = ops.max(x, axis=(1, 2, 3))
        ch = ops.sigmoid(self.mlp2(self.mlp1(avg)) + self.mlp2(self.mlp1(mx)))
        x = x * ops.reshape(ch, (-1, 1, 1, 1, ops.shape(ch)[-1]))
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)
        return x * ops.sigmoid(self.spatial(pooled))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"reduction": self.reduction, "spatial_kernel": self.spatial_kernel})
        return cfg
