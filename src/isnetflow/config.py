"""Typed configuration: the single home of every default.

Each stage has a pydantic model; :class:`Settings` groups them so one YAML file can configure a whole
pipeline run. The CLI, the kfp components, the local pipeline run and the tests all build their
configuration from these classes (tests shrink them with ``model_copy(update=...)``).

YAML layout (any section or key may be omitted; unknown keys are an error, so typos are caught)::

    synth:
      n: 400
      shortcut: {strength: 0.95}
    validate:
      min_pass_rate: 0.9
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    """Base for all config objects: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = None) -> Self:
        """Load from a YAML file; ``section`` picks a top-level key (e.g. ``"synth"``) when present."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{p}: cannot read configuration: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{p}: configuration must be a mapping, got {type(data).__name__}")
        if section is not None and section in data:
            data = data[section] or {}
        return cls.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Synthetic multi-hospital cohort
# --------------------------------------------------------------------------------------------------

Photometric = Literal["MONOCHROME1", "MONOCHROME2"]
SiteRole = Literal["internal", "external"]
ShortcutMode = Literal["correlated", "anti", "random", "absent"]


class SiteProfile(StrictModel):
    """One hospital's acquisition signature and its relation to the planted shortcut."""

    name: str = Field(description="InstitutionName written into every DICOM of this site")
    role: SiteRole
    shortcut_mode: ShortcutMode = Field(
        description="correlated: cue marks positives at `shortcut.strength`; anti: cue marks negatives; "
        "random: cue independent of label (p=0.5); absent: never drawn"
    )
    weight: float = Field(1.0, gt=0, description="relative share of the cohort's images")
    prevalence: float = Field(0.5, gt=0, lt=1, description="fraction of images with the positive class")
    modality: Literal["CR", "DX"] = "CR"
    photometric: Photometric = "MONOCHROME2"
    bits_stored: Literal[8, 10, 12, 16] = 12
    size_scale: float = Field(1.0, gt=0.2, le=4.0, description="rows = round(size * size_scale)")
    aspect: float = Field(1.0, gt=0.5, lt=2.0, description="rows / columns")
    pixel_spacing_mm: float = Field(0.16, gt=0.01, lt=2.0, description="at the nominal 2048-px detector")
    gamma: float = Field(1.0, gt=0.2, lt=5.0, description="tone curve exponent applied to attenuation")
    contrast: float = Field(1.0, gt=0.1, lt=3.0)
    brightness: float = Field(0.0, ge=-0.5, le=0.5)
    value_range: tuple[float, float] = Field(
        (0.02, 0.98), description="fraction of the stored range actually used by the detector"
    )
    noise_sigma: float = Field(0.02, ge=0, lt=0.5)
    noise_grain: float = Field(0.6, ge=0, lt=8, description="noise correlation length in pixels")
    ap_fraction: float = Field(0.3, ge=0, le=1, description="share of AP (portable) views; the rest PA")
    cues: list[str] = Field(
        default_factory=lambda: ["text", "laterality"],
        description="site-specific background cues (names from isnetflow.synth.cues.CUES)",
    )
    text: str = Field("", description="burned-in text; defaults to an abbreviation of the site name")
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0

    @field_validator("value_range")
    @classmethod
    def _range_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"value_range must satisfy 0 <= low < high <= 1, got {v}")
        return v


class ShortcutConfig(StrictModel):
    """The planted background cue that a standard classifier will learn instead of the disease."""

    kind: Literal["tag", "marker", "text", "border"] = "tag"
    strength: float = Field(
        0.95,
        ge=0.5,
        le=1.0,
        description="P(cue | positive) = P(no cue | negative) at 'correlated' sites (0.95 -> phi 0.9)",
    )
    anti_strength: float = Field(0.9, ge=0.5, le=1.0, description="same, inverted, at 'anti' sites")
    text: str = "PORTABLE"


def _default_sites() -> list[SiteProfile]:
    return [
        SiteProfile(
            name="St Aurelia General Hospital",
            role="internal",
            shortcut_mode="correlated",
            prevalence=0.55,
            modality="CR",
            photometric="MONOCHROME1",
            bits_stored=10,
            size_scale=1.0,
            aspect=1.0,
            pixel_spacing_mm=0.175,
            gamma=1.1,
            contrast=1.0,
            brightness=0.02,
            noise_sigma=0.025,
            noise_grain=1.0,
            ap_fraction=0.5,
            cues=["text", "laterality", "collimator"],
            text="ST AURELIA CR",
        ),
        SiteProfile(
            name="Northfield University Hospital",
            role="internal",
            shortcut_mode="correlated",
            prevalence=0.5,
            modality="DX",
            photometric="MONOCHROME2",
            bits_stored=12,
            size_scale=1.25,
            aspect=1.2,
            pixel_spacing_mm=0.143,
            gamma=0.9,
            contrast=1.15,
            brightness=-0.03,
            value_range=(0.05, 0.85),
            noise_sigma=0.015,
            noise_grain=0.5,
            ap_fraction=0.2,
            cues=["text", "laterality", "ruler"],
            text="NUH DX-3 CHEST",
        ),
        SiteProfile(
            name="Riverside Community Hospital",
            role="internal",
            shortcut_mode="correlated",
            prevalence=0.45,
            modality="CR",
            photometric="MONOCHROME2",
            bits_stored=8,
            size_scale=0.9,
            aspect=0.9,
            pixel_spacing_mm=0.2,
            gamma=1.3,
            contrast=0.9,
            brightness=0.05,
            noise_sigma=0.035,
            noise_grain=1.6,
            ap_fraction=0.4,
            cues=["text", "border", "device"],
            text="RIVERSIDE",
        ),
        SiteProfile(
            name="Lakeshore Regional Medical Center",
            role="external",
            shortcut_mode="anti",
            prevalence=0.5,
            modality="DX",
            photometric="MONOCHROME2",
            bits_stored=16,
            size_scale=1.1,
            aspect=1.0,
            pixel_spacing_mm=0.139,
            gamma=0.8,
            contrast=1.25,
            brightness=-0.05,
            value_range=(0.1, 0.7),
            noise_sigma=0.012,
            noise_grain=0.3,
            ap_fraction=0.3,
            cues=["text", "laterality", "device"],
            text="LRMC 16BIT",
            rescale_slope=1.0,
            rescale_intercept=-1024.0,
        ),
        SiteProfile(
            name="Mount Verity Clinic",
            role="external",
            shortcut_mode="absent",
            prevalence=0.5,
            modality="CR",
            photometric="MONOCHROME1",
            bits_stored=12,
            size_scale=1.0,
            aspect=1.15,
            pixel_spacing_mm=0.1,
            gamma=1.2,
            contrast=0.85,
            brightness=0.0,
            noise_sigma=0.03,
            noise_grain=2.0,
            ap_fraction=0.6,
            cues=["laterality", "ruler", "collimator"],
            text="MVC",
        ),
        SiteProfile(
            name="Harbor Point Hospital",
            role="external",
            shortcut_mode="random",
            prevalence=0.5,
            modality="DX",
            photometric="MONOCHROME2",
            bits_stored=10,
            size_scale=0.8,
            aspect=0.95,
            pixel_spacing_mm=0.15,
            gamma=1.0,
            contrast=1.05,
            brightness=0.03,
            noise_sigma=0.02,
            noise_grain=0.8,
            ap_fraction=0.3,
            cues=["text", "border"],
            text="HARBOR PT",
        ),
    ]


class SynthConfig(StrictModel):
    """Settings for ``isnetflow synth``: a synthetic multi-hospital chest-radiograph DICOM cohort."""

    n: int = Field(400, ge=1, le=1_000_000, description="number of images")
    seed: int = Field(0, ge=0)
    size: int = Field(256, ge=64, le=4096, description="nominal image height in pixels (sites scale it)")
    classes: list[str] = Field(
        default_factory=lambda: ["normal", "covid"],
        description="class names; the first is the negative class. Painters: isnetflow.synth.disease",
    )
    difficulty: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="0: lesions obvious; 1: faint and few (a good model still beats chance)",
    )
    repeat_patient_fraction: float = Field(
        0.2, ge=0, le=0.9, description="share of patients with a second (follow-up) image"
    )
    shortcut: ShortcutConfig = Field(default_factory=ShortcutConfig)
    sites: list[SiteProfile] = Field(default_factory=_default_sites)
    workers: int = Field(1, ge=0, description="processes for generation; 0 = all cores")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be >= 2 distinct names, got {self.classes}")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        if not any(s.role == "internal" for s in self.sites):
            raise ValueError("at least one internal site is required")
        return self


# --------------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------------


class Settings(StrictModel):
    """All stage settings; a YAML file passed with ``--config`` may set any subset."""

    synth: SynthConfig = Field(default_factory=SynthConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        base = cls() if path is None else cls.from_yaml(path)
        return base.model_copy(update=overrides) if overrides else base
