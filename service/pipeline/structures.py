"""The structure template: the one place that says what each output calls a gland and which colour it has.

The model's labels (``plan.labels``: ``Parotid_L``, ``Parotid_R``) are internal keys. Every output (the RTSTRUCT's
(3006,0026) ROI Name and (3006,002A) ROI Display Color, the preview's outlines and legend, the QA JSON's
``roi_name``/``display_color_rgb``) takes the name and the colour from one :class:`StructureTemplate`, so the left
gland can never be blue in the planning system and orange in the preview.

Configurable (``service.config.Settings.structures``, env ``PAROTID_STRUCTURES__SUFFIX=_AI``,
``PAROTID_STRUCTURES__NAMES='{"Parotid_L": "Parotid_Lt"}'``, ``PAROTID_STRUCTURES__COLORS='{"Parotid_L":
[255, 0, 0]}'``): a suffix such as ``_AI`` keeps automatic structures from colliding with manual ones of the same
name in the planning system (TG-263 allows a suffix after the standard name); names and colours per label.
Defaults: TG-263 names, Parotid_L blue (0, 170, 255), Parotid_R orange (255, 120, 0) (the colours the RTSTRUCT
writer has always used); labels without a configured colour get distinct colours from a fixed palette.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RGB = tuple[int, int, int]
T = TypeVar("T")

DEFAULT_COLORS: dict[str, RGB] = {"Parotid_L": (0, 170, 255), "Parotid_R": (255, 120, 0)}
PALETTE: tuple[RGB, ...] = (
    (0, 200, 80),
    (230, 40, 160),
    (240, 220, 0),
    (140, 90, 255),
    (0, 220, 220),
    (200, 30, 30),
)


def _check_roi_name(name: str) -> str:
    """A (3006,0026) ROI Name: LO, 1-64 characters, no backslash or control characters."""
    if not name.strip() or len(name) > 64 or "\\" in name or any(ord(c) < 32 for c in name):
        raise ValueError(f"ROI name {name!r} must be 1-64 characters without backslash or control characters")
    return name


class StructureTemplate(BaseModel):
    """Output ROI names and display colours for the model's labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suffix: str = Field(default="", max_length=16, description="appended to every ROI name, e.g. '_AI'")
    names: dict[str, str] = Field(default_factory=dict, description="model label -> ROI name (before the suffix)")
    colors: dict[str, RGB] = Field(default_factory=dict, description="model label -> (R, G, B), 0-255")

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if "\\" in v or any(ord(c) < 32 for c in v) or v != v.strip():
            raise ValueError("suffix must not hold a backslash, control characters or leading/trailing spaces")
        return v

    @field_validator("colors")
    @classmethod
    def _rgb(cls, v: dict[str, RGB]) -> dict[str, RGB]:
        for label, rgb in v.items():
            if not all(0 <= int(c) <= 255 for c in rgb):
                raise ValueError(f"colour of {label}: {rgb} is not three integers 0-255")
        return v

    @model_validator(mode="after")
    def _names(self) -> StructureTemplate:
        for label in self.names:
            _check_roi_name(self.roi_name(label))
        out = [self.roi_name(label) for label in self.names]
        if len(set(out)) != len(out):
            raise ValueError(f"names: two labels would get the same ROI name ({out})")
        return self

    def roi_name(self, label: str) -> str:
        """The ROI name every output uses for the model label ``label``."""
        return _check_roi_name(self.names.get(label, label) + self.suffix)

    def colors_for(self, labels: Sequence[str]) -> dict[str, RGB]:
        """Label -> colour for ``labels``: configured, else the default, else a palette colour not yet used."""
        chosen: dict[str, RGB] = {}
        for label in labels:
            if label in self.colors:
                chosen[label] = tuple(int(c) for c in self.colors[label])  # type: ignore[assignment]
            elif label in DEFAULT_COLORS and DEFAULT_COLORS[label] not in chosen.values():
                chosen[label] = DEFAULT_COLORS[label]
        spare = [c for c in PALETTE if c not in chosen.values()] or list(PALETTE)
        for i, label in enumerate(label for label in labels if label not in chosen):
            chosen[label] = spare[i % len(spare)]
        return {label: chosen[label] for label in labels}

    def rename(self, by_label: Mapping[str, T]) -> dict[str, T]:
        """``{label: x}`` -> ``{ROI name: x}`` in the same order; refuses two labels mapping to one name."""
        out = {self.roi_name(label): x for label, x in by_label.items()}
        if len(out) != len(by_label):
            raise ValueError(f"two labels of {list(by_label)} map to the same ROI name")
        return out


def hex_color(rgb: Sequence[int]) -> str:
    """``(255, 120, 0)`` -> ``"#ff7800"`` (matplotlib's colour form)."""
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


DEFAULT_TEMPLATE = StructureTemplate()
