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
    audit:              # one section for two stages: model selection (train) and the evaluation
      gamma: 0.25
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from isnetflow.names import REGISTERED_MODEL, SEGMENTER_MODEL


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """A ``workers`` setting as a process count: ``0`` means every core this process may use
    (:func:`available_cores`)."""
    return workers or available_cores()


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
        """These settings as YAML (JSON-compatible values, field order kept)."""
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

    kind: Literal["tag", "marker", "text", "border", "device", "laterality", "band", "exposure"] = Field(
        "tag",
        description="what the cue is (painters: isnetflow.synth.cues.SHORTCUTS): 'tag' a bright 'PORTABLE' "
        "badge; 'marker' a coin-like disc; 'text' the bare word; 'border' a thin bright frame; 'device' "
        "ECG electrode pads with lead wires; 'laterality' a boxed lead L/R marker; 'band' a bright "
        "collimation band with a dark shutter edge; 'exposure' a tone curve and noise texture of its own "
        "on the background. All are drawn outside the dilated lung mask",
    )
    placement: Literal["far", "near"] = Field(
        "far",
        description="where the cue goes: 'far' at the image corners and edges; 'near' just outside the "
        "dilated lung mask (beside a lung's lateral border, above an apex or below a base)",
    )
    strength: float = Field(
        0.95,
        ge=0.5,
        le=1.0,
        description="P(cue | positive) = P(no cue | negative) at 'correlated' sites (0.95 -> phi 0.9)",
    )
    anti_strength: float = Field(0.9, ge=0.5, le=1.0, description="same, inverted, at 'anti' sites")
    text: str = "PORTABLE"


#: The demo cohort's six hospitals, as data beside the synthetic cohort's code (read by path, so the settings
#: never import the synth package).
DEFAULT_SITES_FILE = Path(__file__).parent / "synth" / "sites.yaml"


@functools.cache
def _default_site_data() -> tuple[dict[str, Any], ...]:
    """``synth/sites.yaml`` as parsed, read once per process."""
    return tuple(yaml.safe_load(DEFAULT_SITES_FILE.read_text()))


def _default_sites() -> list[SiteProfile]:
    """The demo cohort's hospitals (``synth/sites.yaml``), a fresh list of profiles on every call."""
    return [SiteProfile.model_validate(site) for site in _default_site_data()]


class SynthConfig(StrictModel):
    """Settings for ``isnetflow synth``: a synthetic multi-hospital chest-radiograph DICOM cohort."""

    n: int = Field(1200, ge=1, le=1_000_000, description="number of images")
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
    workers: int = Field(
        0,
        ge=0,
        description="processes for generation; 0 (default) = all cores this process may use (the images do "
        "not depend on it: each is drawn from its own seed)",
    )

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
# Validation and normalization of the DICOM input
# --------------------------------------------------------------------------------------------------

_PHI_ATTRIBUTES = [
    "PatientName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "OtherPatientNames",
    "OtherPatientIDs",
    "MilitaryRank",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
]


class ValidateConfig(StrictModel):
    """Settings for ``isnetflow validate``: per-file checks, pixel normalization, dataset expectations."""

    min_pass_rate: float = Field(
        0.9, ge=0, le=1, description="the run fails when valid files / all files is below this"
    )
    classes: list[str] = Field(
        default_factory=lambda: ["normal", "covid"],
        description="allowed label values (the first is the negative class); checked with great-expectations",
    )
    modalities: list[str] = Field(
        default_factory=lambda: ["CR", "DX"], description="accepted DICOM Modality values"
    )
    frontal_views: list[str] = Field(
        default_factory=lambda: ["PA", "AP"],
        description="accepted ViewPosition values; a missing/empty ViewPosition is only a warning",
    )
    photometric: list[str] = Field(
        default_factory=lambda: ["MONOCHROME1", "MONOCHROME2"],
        description="accepted PhotometricInterpretation values",
    )
    required_identifiers: list[str] = Field(
        default_factory=lambda: ["SOPInstanceUID", "StudyInstanceUID", "PatientID"],
        description="DICOM keywords that must be non-empty (PatientID may come from labels.csv instead)",
    )
    require_site: bool = Field(
        True, description="quarantine files whose site is unknown (no InstitutionName and no site in labels)"
    )
    bits_stored_range: tuple[int, int] = Field(
        (8, 16), description="plausible BitsStored for a radiograph (inclusive)"
    )
    min_gray_levels: int = Field(
        32,
        ge=2,
        description="quarantine images whose robust value range spans fewer stored levels (near-constant)",
    )
    max_pixels: int = Field(
        8192 * 8192,
        ge=1,
        description="decompression-bomb limit: Rows x Columns x frames, checked from the header "
        "before decoding",
    )
    max_file_bytes: int = Field(1 << 30, ge=1, description="larger files are quarantined without reading")
    burned_in_annotation: Literal["warn", "quarantine"] = Field(
        "warn",
        description="BurnedInAnnotation=YES: 'warn' keeps the image (ISNet is meant to ignore such text) "
        "and records a warning; 'quarantine' rejects it",
    )
    require_deidentified: bool = Field(
        True, description="quarantine files with a non-empty PHI attribute (see phi_attributes)"
    )
    phi_attributes: list[str] = Field(
        default_factory=lambda: list(_PHI_ATTRIBUTES),
        description="DICOM keywords that must be absent, empty or a placeholder when require_deidentified",
    )
    deid_placeholders: list[str] = Field(
        default_factory=lambda: ["ANONYMIZED", "ANONYMOUS", "ANON", "REMOVED", "DEIDENTIFIED", "UNKNOWN"],
        description="values (case-insensitive) that count as removed PHI",
    )
    allow_pseudonym_name: bool = Field(
        True, description="a PatientName equal to the (pseudonymous) PatientID counts as de-identified"
    )
    window: Literal["percentile", "dicom"] = Field(
        "percentile",
        description="intensity window after the modality LUT: 'percentile' (robust, comparable across "
        "sites) or 'dicom' (the file's WindowCenter/Width, falling back to percentile when absent)",
    )
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="low/high percentiles of the modality values mapped to 0 and 1"
    )
    image_size: int = Field(256, ge=16, le=4096, description="side of the square normalized images")
    image_format: Literal["npy", "png"] = Field(
        "npy",
        description="normalized image storage, uint16 0..65535 = 0..1: .npy (default: ~0.02 ms to write "
        "vs ~4 ms for a 256 px 16-bit PNG, and PNG saves <20% on noisy 16-bit data) or 16-bit PNG",
    )
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level for PNG (1: fast, ~same size)")
    min_images_per_site: int = Field(10, ge=0, description="expectation: valid images per site")
    min_class_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="each class's share of a site's valid images (needs labels): a site where a class falls "
        "below it (a single-class site: the site/label confound) is a warning or a failure (confound); "
        "0 = never",
    )
    confound: Literal["warn", "fail"] = Field(
        "warn",
        description="a site below min_class_fraction (the site and the label confounded, as in the ISNet "
        "papers' data): 'warn' reports it in validation.json/.html and the run's table and goes on; 'fail' "
        "makes it a failed great-expectations expectation (the validation fails)",
    )
    leakage_action: Literal["quarantine", "fail"] = Field(
        "quarantine",
        description="a patient in two sites or in both internal and external sets: 'quarantine' all of "
        "that patient's images, or keep them and let the expectation suite fail",
    )
    duplicate_images: Literal["quarantine", "keep"] = Field(
        "quarantine",
        description="the same radiograph twice (pixel-identical, or near-identical by perceptual hash: "
        "isnetflow.validation.duplicates): 'quarantine' each copy but the first by path, or 'keep' them all",
    )
    internal_sites: list[str] = Field(default_factory=list, description="site names with role 'internal'")
    external_sites: list[str] = Field(default_factory=list, description="site names with role 'external'")
    min_internal_images: int = Field(
        20, ge=0, description="a run needs this many valid images at internal sites (train, val, test)"
    )
    min_external_images: int = Field(
        10, ge=0, description="a run needs this many valid images at external sites (0: allow none)"
    )
    exclude: list[str] = Field(
        default_factory=lambda: [".*/"],
        description="glob patterns; input files with any path component matching one are not read: they "
        "are listed in the manifest as ignored (reason_code 'excluded', the reason names the pattern). A "
        "pattern ending in '/' matches folders only (default: hidden folders such as .git; hidden files "
        "such as .DS_Store are read, and ignored as not_dicom)",
    )
    workers: int = Field(0, ge=0, description="processes for the per-file work; 0 = all cores")

    @model_validator(mode="after")
    def _check(self) -> ValidateConfig:
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        blo, bhi = self.bits_stored_range
        if not 1 <= blo <= bhi <= 32:
            raise ValueError(f"bits_stored_range must satisfy 1 <= low <= high <= 32, got {(blo, bhi)}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be >= 2 distinct names, got {self.classes}")
        both = set(self.internal_sites) & set(self.external_sites)
        if both:
            raise ValueError(f"sites cannot be both internal and external: {sorted(both)}")
        return self


# --------------------------------------------------------------------------------------------------
# The shortcut audit's yardstick (model selection and the evaluation's background-share gate)
# --------------------------------------------------------------------------------------------------

AuditComposite = Literal["epsilon_gamma_box", "epsilon_plus_flat", "epsilon"]


class AuditConfig(StrictModel):
    """How the shortcut audit measures a background share (see :mod:`isnetflow.audit.explain`).

    One yardstick for two readers: model selection's per-epoch validation background share (the
    selection limit, ``train.audit_samples`` images) and the evaluation's audit (``evaluate.audit_per_site``
    images per site), whose pooled mean the background-share promotion gate judges. It is one section of
    the settings file, ``audit:``; :class:`Settings` hands the same values to ``train`` and ``evaluate``.
    """

    composite: AuditComposite = Field(
        "epsilon_gamma_box",
        description="zennit composite (isnetflow.audit.explain.COMPOSITES); 'epsilon', the training's own "
        "LRP rule, reads less background relevance than 'epsilon_gamma_box' on the same model "
        "(docs/training.md)",
    )
    epsilon: float = Field(1e-6, gt=0.0, description="epsilon of the zennit Epsilon rule")
    gamma: float = Field(0.25, ge=0.0, description="gamma of the zennit Gamma rule (epsilon_gamma_box)")
    target: Literal["label", "predicted"] = Field(
        "label", description="class whose logit is explained: the true label or the predicted class"
    )


#: the sections' flat audit keys, read as ``audit.<name>`` with a ``FutureWarning`` so that settings files
#: and settings JSON written with them still load
LEGACY_AUDIT_KEYS: dict[str, dict[str, str]] = {
    "train": {"audit_composite": "composite"},
    "evaluate": {
        "audit_composite": "composite",
        "audit_epsilon": "epsilon",
        "audit_gamma": "gamma",
        "audit_target": "target",
    },
}


def _given_audit(value: Any) -> dict[str, object]:
    """The fields an audit setting states explicitly (a mapping or an :class:`AuditConfig`), validated."""
    audit = value if isinstance(value, AuditConfig) else AuditConfig.model_validate(value)
    return audit.model_dump(include=set(audit.model_fields_set))


def _upgrade_audit_keys(section: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (the ``section`` settings as a mapping) with its old flat audit keys
    (``audit_composite``, ...: :data:`LEGACY_AUDIT_KEYS`) moved into its ``audit``, with a ``FutureWarning``.

    An old key that contradicts the same setting in ``audit`` is an error.
    """
    legacy = {old: new for old, new in LEGACY_AUDIT_KEYS[section].items() if old in data}
    if not legacy:
        return data
    warnings.warn(
        f"{section}: {', '.join(f'{old} is audit.{new}' for old, new in legacy.items())} (the top-level "
        "`audit` section of the settings file); the old keys will stop being read",
        FutureWarning,
        stacklevel=2,
    )
    out = {k: v for k, v in data.items() if k not in legacy}
    audit = _given_audit(out["audit"]) if out.get("audit") is not None else {}
    for new, value in _given_audit({new: data[old] for old, new in legacy.items()}).items():
        if new in audit and audit[new] != value:
            raise ValueError(
                f"{section}: the old audit key for {new} ({value!r}) contradicts audit.{new} ({audit[new]!r})"
            )
        audit[new] = value
    out["audit"] = audit
    return out


# --------------------------------------------------------------------------------------------------
# Classifier training (ISNet and the standard baseline)
# --------------------------------------------------------------------------------------------------


class HeatmapLossConfig(StrictModel):
    """The ISNet objective: (1 - P)·CE + P·(A·L_bg + B·L_fg) on LRP heatmaps (see isnetflow.isnet).

    The one set of the objective's settings and defaults: :class:`isnetflow.isnet.ISNetLossConfig` is
    these settings with the foreground range resolved. The variant name is checked against the variant
    registry when the objective is built (:func:`isnetflow.isnet.loss_config_from_settings`): at the start
    of a training, before its first step (as the network's name is).
    """

    variant: str = Field(
        "selective",
        description="which heatmaps, a name in isnetflow.isnet.VARIANTS other than 'standard': one per "
        "sample (selective/stochastic) or one per class (all)",
    )
    P: float = Field(0.7, ge=0.0, lt=1.0, description="weight of the heatmap loss vs cross-entropy")
    A: float = Field(1.0, ge=0.0, description="weight of the background term")
    B: float = Field(3.0, ge=0.0, description="weight of the foreground term")
    d: float = Field(
        0.999,
        ge=0.0,
        le=1.0,
        description="GWRP decay (0 = max, 1 = mean) of the background relevance; 0.999 weighs the largest "
        "~1000 of the ~12,000 background positions of a 128 px map (the authors use 0.9 for small maps; the "
        "choice is measured in docs/robustness.md)",
    )
    E: float = Field(1.0, gt=0.0, description="background saturation constant: -log(1 - b/(b+E))")
    epsilon: float = Field(0.01, gt=0.0, description="LRP-epsilon stabilizer")
    first_layer: Literal["zbox", "epsilon"] = Field("zbox", description="LRP rule of the first layer")
    low: float = Field(0.0, description="lowest input value, the z^B rule's lower bound")
    high: float = Field(1.0, description="highest input value, the z^B rule's upper bound")
    selective_eps: float = Field(
        0.01, ge=0.0, description="selective variant: stabilizer of log(p + eps) - log(1 - p + eps)"
    )
    stochastic_anchor: Literal["label", "highest"] = Field(
        "label", description="stochastic variant: the anchor class, the label or the arg-max logit"
    )
    stochastic_anchor_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="stochastic variant: probability of explaining the anchor class"
    )
    bn_stats_grad: bool = Field(
        False,
        description="let the gradient flow through the batch variance of the batch-norm LRP rule (exact "
        "total derivative); off: a constant, as the authors do (cheaper)",
    )
    C1: float | None = Field(
        1.0,
        gt=0.0,
        description="lower bound of the in-lung absolute relevance S (in the explained log-odds' units); "
        "None = from the warm-up's heatmaps as the authors do. The default wide range [1, 1000] only stops "
        "relevance from collapsing (docs/robustness.md compares it with the warm-up's range)",
    )
    C2: float | None = Field(
        1000.0, gt=0.0, description="upper bound of the in-lung absolute relevance S; None = from the warm-up"
    )
    grad_balance: float | None = Field(
        1.0,
        gt=0.0,
        description="cap the norm of the heatmap-term gradient P·∇(A·L_bg + B·L_fg) at this multiple of the "
        "cross-entropy gradient's norm (1-P)·∇CE, per step; None = plain sum (the authors). Uncapped, the "
        "heatmap gradient, many times the CE gradient at the start of the ISNet phase, makes the ISNet "
        "forget the disease (docs/training.md)",
    )
    ramp_epochs: int = Field(
        0,
        ge=0,
        description="the heatmap gradient grows linearly over the first this many ISNet epochs (1/n of it in "
        "the first, all of it from the n-th on), after the cap; 0: all of it from the start",
    )
    grad_projection: bool = Field(
        False,
        description="when the heatmap-term gradient points against the cross-entropy gradient (negative dot "
        "product), remove that component first (PCGrad), so a step never trades the classifier away to "
        "first order",
    )
    norm: Literal["abs", "signed"] = Field(
        "abs",
        description="background-term normalization: 'abs' divides |R| by the in-lung mean of |R| (the "
        "authors' absRoIMean); 'signed' takes |R / in-lung mean of R| (their RoIMean), so cancelling +/- "
        "relevance in the lungs cannot lower the background term",
    )
    fg_region: Literal["image", "mask"] = Field(
        "image",
        description="warm-up statistics behind automatic C1/C2: relevance mass over the whole image (the "
        "authors' code) or inside the lung mask only (S itself: lower C1/C2)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.low >= self.high:
            raise ValueError(f"heatmap.low ({self.low}) must be below heatmap.high ({self.high})")
        if self.C1 is not None and self.C2 is not None and self.C1 > self.C2:
            raise ValueError(f"heatmap.C1 ({self.C1}) must not exceed heatmap.C2 ({self.C2})")
        return self


class AugmentConfig(StrictModel):
    """MONAI augmentations applied jointly to image and mask (seeded per sample and epoch)."""

    prob: float = Field(0.8, ge=0.0, le=1.0)
    rotate_deg: float = Field(7.0, ge=0.0, le=45.0)
    scale: float = Field(0.08, ge=0.0, le=0.5, description="relative zoom range (±)")
    translate: float = Field(0.04, ge=0.0, le=0.3, description="relative shift range (±)")
    gamma: tuple[float, float] = (0.75, 1.4)
    noise_std: float = Field(0.015, ge=0.0, le=0.2)


TEACHER_EPOCH_SHARE = 0.4
"""Default length of the lungs-only teacher, as a share of ``train.epochs``."""


class DistillConfig(StrictModel):
    """Distillation from a lungs-only teacher (on by default; ``teacher_epochs: 0`` turns it off).

    Before the ISNet trains, a teacher of the same network trains ``teacher_epochs`` of cross-entropy on
    lung-masked images (the lungs-only reference, which learns a subtle disease fast). The ISNet then
    starts from the teacher's weights (``init_from_teacher``) and every step adds the classifier part
    ``distillation``: the network must predict from the whole image (or the background-swapped composite)
    what the teacher predicts from the lungs alone (``target: logits``, ``weight * T^2 * KL(p_teacher^T ||
    p^T)``), or compute the same head features (``target: features``). The masks are needed only at
    training time, like the relevance loss's.
    """

    teacher_epochs: int | None = Field(
        None,
        ge=0,
        description="epochs of the lungs-only teacher; None (default): 40 % of `train.epochs`, at least 1 "
        "(16 of the default 40); 0: no distillation (the authors' ISNet)",
    )
    weight: float = Field(1.0, ge=0.0, description="weight of the distillation part")
    init_from_teacher: bool = Field(True, description="start the ISNet from the teacher's weights")
    lr_warmup_epochs: int = Field(
        0,
        ge=0,
        description="with init_from_teacher: the ISNet's learning rate rises linearly from 1/n to the "
        "schedule's over its first this many epochs (a fresh AdamW's first steps at the peak rate move "
        "every weight by about the rate, whatever the teacher learned); 0: the peak rate from the start",
    )
    target: Literal["features", "logits"] = Field(
        "logits",
        description="what the student matches: the teacher's class probabilities at `temperature` ('logits', "
        "Kullback-Leibler; default) or the features the classifier head reads ('features')",
    )
    temperature: float = Field(2.0, gt=0.0, description="softmax temperature of the 'logits' target")
    map_weight: float = Field(
        1.0,
        ge=0.0,
        description="weight of the spatial part: the student's feature map at `map_layer` on the whole image "
        "(or the composite) must equal the teacher's on the lungs alone at every position, the background's "
        "included (where the teacher saw black); 0: off (the recipe before it)",
    )
    map_layer: str | None = Field(
        None,
        description="the spatial part's layer, a module name of the network (its output); None: the net's "
        "middle feature map (isnetflow.nets.MIDDLE_LAYERS: 'features.transition2' of the DenseNets), or "
        "its last one for a net registered without it",
    )
    context_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of each teacher batch shown as the ISNet sees it when swapping (its lungs with "
        "another training image's background, `background_swap`) instead of lungs on black, so that the "
        "teacher's weights also read the lungs beside a chest wall and the student, which starts from them, "
        "does not start at chance; the teacher's validation, selection and targets stay on the lungs alone. "
        "0 (default): lungs on black only",
    )
    map_region: Literal["image", "lungs"] = Field(
        "image",
        description="where the spatial part compares the maps: every position ('image': the student must "
        "make the background look black, which it can only do by reading it) or the lungs ('lungs': each "
        "position weighted by the share of its cell inside the mask; the background is the relevance "
        "loss's)",
    )

    def epochs_for(self, train_epochs: int) -> int:
        """The teacher's epochs for an ISNet of ``train_epochs`` epochs (0: distillation off)."""
        if self.teacher_epochs is not None:
            return self.teacher_epochs
        return max(1, round(TEACHER_EPOCH_SHARE * train_epochs))


class TrainConfig(StrictModel):
    """Settings for ``isnetflow train`` (the same network and schedule serve both modes)."""

    mode: Literal["isnet", "standard"] = "isnet"
    model: str = Field("densenet-small", description="name in isnetflow.nets.NETS")
    image_size: int = Field(128, ge=32, le=1024, description="square training resolution")
    batch_size: int = Field(16, ge=2)
    epochs: int = Field(40, ge=1, description="training epochs, warm-up included")
    warmup_epochs: int = Field(
        4, ge=0, description="standard-training epochs before the heatmap loss; they also set C1/C2"
    )
    warmup_patience: int | None = Field(
        None,
        ge=1,
        description="end the ISNet's warm-up once its validation AUC has not improved for this many epochs "
        "(after at least `warmup_epochs`, at most `warmup_max_epochs`); None: exactly `warmup_epochs`",
    )
    warmup_max_epochs: int | None = Field(
        None, ge=1, description="longest warm-up with `warmup_patience`; None: half of `epochs`"
    )
    warmup_inputs: Literal["raw", "background_swap", "masked"] = Field(
        "background_swap",
        description="what the ISNet's standard warm-up sees: 'background_swap' (default: each image's lungs "
        "on another image's background, the union-of-masks composite of the counterfactual test, so the "
        "background carries no label information), 'raw' images (the authors) or 'masked' (lungs only). A "
        "deviation from the authors' recipe: the warm-up never learns the shortcut",
    )
    isnet_swap_fraction: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of each ISNet-phase batch shown with another image's background (the warm-up's "
        "background swap). 1 (default): the cross-entropy never sees a background that predicts the label, "
        "so it stops pulling towards the shortcut while the heatmap loss pulls relevance into the lungs; 0 = "
        "the authors' ISNet. A deviation from their recipe (docs/training.md); a fraction below 1 leaves "
        "the tag learnable on the raw rest of the batch",
    )
    background_fade_epochs: int = Field(
        0,
        ge=0,
        description="curriculum of the background-swapped inputs (warm-up and ISNet batches): the donor "
        "background is scaled by min(1, epoch / N), from the lungs alone at epoch 0 to the full composite at "
        "epoch N, so the network learns the disease on uncluttered lungs first (the lungs-only reference "
        "learns the subtle disease fast) and meets real backgrounds while the relevance loss is on. 0 "
        "(default): off; it did not help on a tuning cohort (docs/robustness.md)",
    )
    relevance_loss: bool = Field(
        True,
        description="False trains an ISNet's schedule, inputs (warm-up inputs, background-swapped batches) "
        "and selection with cross-entropy only, no heatmap term: the 'swap' comparison arm of `isnetflow "
        "bench seeds`, which shows what the relevance loss adds over background swapping alone",
    )
    warmup_restart: bool = Field(
        False,
        description="after the warm-up, start the ISNet again from the initial weights with a new optimizer "
        "and LR schedule (the authors' cut tuning discards their raw warm-up network, which has learned the "
        "shortcut); False (default) keeps the warm-up as the ISNet's initialization, which with the "
        "background-swap warm-up already reads the lungs",
    )
    optimizer: Literal["sgd", "adamw"] = Field(
        "adamw",
        description="adamw (default: the ISNet kept less relevance outside the lungs and generalized "
        "better than with SGD, docs/robustness.md) or sgd with `momentum`",
    )
    lr: float = Field(0.002, gt=0.0, description="peak learning rate (AdamW 0.002; SGD ~0.01)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0, description="decoupled for AdamW, L2 for SGD")
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0.0, description="max global grad norm; None disables")
    amp: Literal["auto", "off", "bf16"] = Field(
        "auto",
        description="auto = bf16 autocast for cross-entropy-only steps on CUDA, off on CPU; the LRP "
        "heatmap pass always runs in float32, as autocast is not numerically safe for its gradient "
        "(`isnetflow bench amp`, docs/training.md)",
    )
    class_weighting: bool = Field(True, description="inverse-frequency class weights in cross-entropy")
    patience: int | None = Field(
        None,
        ge=1,
        description="early stopping after this many epochs without a better selection score; None (default) "
        "trains the whole schedule, as the authors do: validation AUC swings widely between ISNet epochs, "
        "so early stopping ends runs that are still learning (docs/training.md)",
    )
    selection: Literal["auc_within_background", "objective"] = Field(
        "auc_within_background",
        description="ISNet model selection over the heatmap-loss epochs: the best validation AUC minus 5x "
        "the excess of the validation background share and background-swap score change over their limits; "
        "an epoch with validation AUC < 0.5 ranks below every other, so an inverted classifier is never "
        "kept; 'objective' = the validation ISNet loss, which can keep an inverted classifier "
        "(docs/training.md)",
    )
    selection_auc_tolerance: float | None = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="with selection='auc_within_background': keep only epochs whose validation AUC is within "
        "this much of the best epoch's, then take the best selection score among them (chosen at the end of "
        "the schedule from the epochs no other epoch beats on both AUC and score). None: the best score over "
        "all epochs, which, when every epoch is over the background limit (the swap arm), ranks epochs by "
        "background share and can keep a near-chance one (docs/robustness.md)",
    )
    selection_max_background: float = Field(
        0.35, gt=0.0, le=1.0, description="background share limit for selection='auc_within_background'"
    )
    selection_max_swap_change: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="second limit of selection='auc_within_background': mean |score change| when validation "
        "images get another internal site's background (opposite label); ignored when no such donor exists",
    )
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="of internal patients")
    test_fraction: float = Field(0.2, ge=0.0, lt=0.5, description="of internal patients (held out)")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    checkpoint_dir: str | None = Field(None, description="local path or s3://bucket/prefix")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")
    audit_samples: int = Field(
        48,
        ge=0,
        description="validation images whose background share (measured with the `audit` settings) the "
        "selection limit reads; 0: none",
    )
    audit_every: int = Field(
        5,
        ge=1,
        description="epochs whose selection does not read the background share (the standard model's, an "
        "ISNet's warm-up) measure it for the learning curves every this many epochs and at the last; the "
        "ISNet phase's epochs every epoch (the selection reads it). 1: every epoch (about 1.5 s each on 2 "
        "cores, a third of a standard epoch's time at the defaults)",
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig,
        description="how the validation background share is measured: the top-level `audit` section, the "
        "same yardstick as the evaluation's background-share gate (set there, not here)",
    )
    heatmap: HeatmapLossConfig = Field(default_factory=HeatmapLossConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="before")
    @classmethod
    def _old_audit_keys(cls, data: Any) -> Any:
        return _upgrade_audit_keys("train", data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_selection(self) -> TrainConfig:
        if not self.relevance_loss and self.selection == "objective":
            raise ValueError(
                "train.selection 'objective' needs the ISNet objective: it is not computed with "
                "train.relevance_loss false (use auc_within_background)"
            )
        if self.mode == "isnet" and self.relevance_loss and self.heatmap.P == 0:
            raise ValueError(
                "train.heatmap.P is 0: the ISNet phase would have no relevance loss; for the ISNet's "
                "schedule and inputs without it set train.relevance_loss: false (the 'swap' arm), or mode: "
                "standard"
            )
        return self


# --------------------------------------------------------------------------------------------------
# Lung masks: the MONAI segmenter (training) and the mask stage (inference + QC)
# --------------------------------------------------------------------------------------------------


class SegmenterTrainConfig(StrictModel):
    """Settings for ``isnetflow train-segmenter``: a MONAI 2-D lung segmenter (see isnetflow.masks)."""

    architecture: Literal["unet", "segresnet", "basicunet", "attentionunet"] = Field(
        "unet", description="MONAI network family; 'unet' was the best speed/quality trade-off on CPU"
    )
    channels: tuple[int, ...] = Field(
        (16, 32, 64, 128, 256), description="encoder widths (UNet/AttentionUnet; SegResNet uses the first)"
    )
    num_res_units: int = Field(2, ge=0, le=4, description="residual units per UNet level")
    image_size: int = Field(256, ge=32, le=1024, description="side of the square letterboxed network input")
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="per-image intensity percentiles mapped to 0 and 1 (as at inference)"
    )
    init_from: str | None = Field(
        None,
        description="fine-tune: start from these weights ('shipped': the package's segmenter, or a spec "
        "JSON / weights file / folder) instead of random ones; the architecture settings must match them. "
        "Keep the earlier model's held-out images held out (the manifest's `split` column) so its Dice "
        "stays a held-out figure",
    )
    epochs: int = Field(150, ge=1, description="maximum epochs (early stopping usually ends sooner)")
    patience: int = Field(
        30, ge=1, description="stop after this many epochs without a better monitored validation Dice"
    )
    monitor: Literal["val_dice", "val_dice_perturbed", "val_dice_mean"] = Field(
        "val_dice_mean",
        description="early-stopping metric: clean held-out Dice, Dice under fixed strong perturbations "
        "(a proxy for other hospitals), or their mean",
    )
    batch_size: int = Field(8, ge=1, description="images per optimizer step")
    learning_rate: float = Field(2e-3, gt=0, description="AdamW peak learning rate (cosine decay)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    val_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of patients held out for validation (grouped by patient id); 0 trains on "
        "everything for exactly `epochs` epochs and keeps the last weights",
    )
    seed: int = Field(0, ge=0, description="seed of the split, augmentation and initialization")
    real_repeats: int = Field(2, ge=1, description="times each real training image is drawn per epoch")
    synthetic_n: int = Field(
        160, ge=0, description="synthetic phantoms (isnetflow.synth) rendered for training; 0 disables them"
    )
    synthetic_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of each epoch's samples drawn from the synthetic phantoms"
    )
    synthetic_heart: Literal["ignore", "background"] = Field(
        "ignore",
        description="phantom masks cut the heart out of the lung, real (v7labs) masks include the lung "
        "behind it: 'ignore' excludes that region from the loss so the real convention wins",
    )
    augmentation: Literal["none", "light", "strong"] = Field(
        "strong", description="augmentation strength (photometric, zoom-out, affine, collimation; no flips)"
    )
    dice_weight: float = Field(1.0, ge=0, description="weight of the masked Dice loss")
    bce_weight: float = Field(1.0, ge=0, description="weight of the masked binary cross-entropy")
    threads: int = Field(2, ge=0, description="torch CPU threads (0 = torch default)")
    workers: int = Field(1, ge=0, description="DataLoader worker processes for augmentation")
    eval_synthetic_n: int = Field(
        60, ge=0, description="phantoms (default cohort, seed 0) scored after training; 0 skips them"
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///<out>/mlflow.db",
    )
    experiment: str = Field(SEGMENTER_MODEL, description="MLflow experiment name")
    registered_model: str | None = Field(
        None, description="also register the trained model under this name (e.g. 'lung-segmenter')"
    )


class MaskConfig(StrictModel):
    """Settings for ``isnetflow segment`` and the mask stage: inference, post-processing and QC."""

    model: str | None = Field(
        None,
        description="None: the weights shipped in isnetflow/masks/weights; else a spec JSON / .pt / folder "
        "or an MLflow URI (models:/lung-segmenter/3, runs:/<id>/model)",
    )
    batch_size: int = Field(16, ge=1, description="images per forward pass")
    threads: int = Field(2, ge=0, description="torch CPU threads (0 = torch default)")
    use_provided: bool = Field(
        True, description="ground-truth masks (e.g. the synthetic cohort's masks/<SOPInstanceUID>.png) win"
    )
    qc_provided: bool = Field(True, description="also apply the geometric QC checks to provided masks")
    min_area_fraction: float = Field(
        0.04, ge=0, le=1, description="QC: minimum lung area / image area (real masks: 0.22-0.61)"
    )
    max_area_fraction: float = Field(0.72, ge=0, le=1, description="QC: maximum lung area / image area")
    min_lung_balance: float = Field(
        0.3, ge=0, le=1, description="QC: smaller / larger lung area (real masks >= 0.62, phantoms >= 0.44)"
    )
    max_fragment_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="QC: share of the predicted area dropped by post-processing near the kept lungs (a lung "
        "split in pieces); blobs farther than 5 % of the image side from their box do not count",
    )
    min_confidence: float = Field(
        0.8,
        ge=0,
        le=1,
        description="QC: mean probability margin |2p-1| around the predicted lungs (held-out masks with "
        "Dice >= 0.9: 1st percentile 0.85; phantoms >= 0.86)",
    )
    min_mirror_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="QC: Dice between the mask and the mask of the image mirrored left-right (mirrored "
        "back); below it the segmenter is guessing (an arm, the neck, a lung it half sees). Doubles the "
        "segmenter's work; None: not measured",
    )
    overlays: bool = Field(False, description="write an overlay preview PNG per image")
    gallery_max: int = Field(48, ge=0, description="images in the overlay gallery PNG (QC failures first)")
    gallery_columns: int = Field(8, ge=1, description="gallery grid columns")

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.min_area_fraction >= self.max_area_fraction:
            raise ValueError(
                f"min_area_fraction ({self.min_area_fraction}) must be < max_area_fraction "
                f"({self.max_area_fraction})"
            )
        return self


# --------------------------------------------------------------------------------------------------
# Evaluation (external hospitals + shortcut audit) and promotion (MLflow registry gates)
# --------------------------------------------------------------------------------------------------


class EvaluateConfig(StrictModel):
    """Settings for ``isnetflow evaluate``: metrics per split and site, shortcut audit, figures."""

    sites: list[str] = Field(
        default_factory=list,
        description="sites to report and pool (empty = all); the threshold always uses all internal "
        "validation images",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="operating threshold on the positive score (1 - P(first class)); None = Youden's J "
        "on the internal validation split",
    )
    n_boot: int = Field(1000, ge=0, description="patient-level bootstrap replicates for AUC CIs (0 = none)")
    ci_level: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    ece_bins: int = Field(10, ge=2, le=100, description="equal-width bins of the expected calibration error")
    batch_size: int = Field(32, ge=1, description="images per forward pass")
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = leave torch's default")
    audit_per_site: int = Field(
        24, ge=0, description="images per site explained with zennit for the background share (0 = no audit)"
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig,
        description="how the background share is measured: the top-level `audit` section, the same yardstick "
        "as model selection's (set there, not here)",
    )
    counterfactual_max: int = Field(
        400, ge=0, description="recipient images of the background-swap test (0 = no test)"
    )
    counterfactual_pairing: Literal["opposite_label", "random"] = Field(
        "opposite_label", description="donor choice: another site, with the other label when possible"
    )
    gallery_per_group: int = Field(
        4, ge=0, le=16, description="heatmaps per group (internal/external x correct/incorrect)"
    )
    seed: int = Field(0, ge=0, description="seed of the bootstrap, the audit sample and the donor choice")
    recompute_split: bool = Field(
        False,
        description="evaluate a model that has no stored held-out patient list (splits.csv: trained before "
        "it existed) on a split recomputed from its seed and fractions; the report says so. False: refuse",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_audit_keys(cls, data: Any) -> Any:
        return _upgrade_audit_keys("evaluate", data) if isinstance(data, dict) else data


class PromotionPolicy(StrictModel):
    """Gates a candidate must pass to become ``champion`` (a threshold of ``None`` disables that gate)."""

    registered_model: str = Field(REGISTERED_MODEL, description="MLflow registered model name")
    min_external_auc_ci_low: float | None = Field(
        0.70, ge=0.0, le=1.0, description="lower 95% bound of the pooled external AUC must reach this"
    )
    max_auc_gap: float | None = Field(
        0.10, ge=0.0, le=1.0, description="internal test AUC minus pooled external AUC may not exceed this"
    )
    max_background_share: float | None = Field(
        0.40, ge=0.0, le=1.0, description="mean share of positive relevance outside the lungs (audit)"
    )
    max_flip_rate: float | None = Field(
        0.10, ge=0.0, le=1.0, description="share of predictions flipped by the counterfactual background swap"
    )
    min_site_auc: float | None = Field(
        0.65,
        ge=0.0,
        le=1.0,
        description="every external site's AUC must reach this (single-class sites skip)",
    )
    max_auc_drop_vs_champion: float | None = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="pooled external AUC may be at most this much below the current champion's on the "
        "same data (the champion is re-evaluated; no champion = pass)",
    )
    max_auc_drop_vs_standard: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="do no harm: pooled external AUC may be at most this much below the standard model "
        "trained beside it in the same run (no standard model, e.g. a standalone promote = not applicable)",
    )
    lock_ttl_seconds: float = Field(
        900.0, gt=0, description="promotion lock lease; an older lock is considered abandoned"
    )
    lock_wait_seconds: float = Field(300.0, ge=0, description="how long to wait for another promotion")


# --------------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------------


# ``Settings.validate`` (the validate stage section) shadows pydantic's deprecated v1 ``BaseModel.validate``.
warnings.filterwarnings("ignore", message='Field name "validate" in "Settings" shadows', category=UserWarning)


#: the sections whose stage reads the audit settings (each carries a copy of ``Settings.audit``)
AUDIT_READERS: tuple[str, ...] = ("train", "evaluate")


class Settings(StrictModel):
    """All stage settings; a YAML file passed with ``--config`` may set any subset.

    ``audit`` is the one setting of the shortcut audit's yardstick: the train and evaluate stages receive
    only their own section, so each section carries a copy of it (``train.audit``, ``evaluate.audit``),
    which this class fills in and keeps equal. A section's ``audit`` (or its flat keys of
    :data:`LEGACY_AUDIT_KEYS`) is read as the same setting: every place that states an audit field must
    state the same value, and what one states holds for both stages.
    """

    synth: SynthConfig = Field(default_factory=SynthConfig)
    validate: ValidateConfig = Field(default_factory=ValidateConfig)  # type: ignore[assignment]
    audit: AuditConfig = Field(
        default_factory=AuditConfig,
        description="the shortcut audit's yardstick, for model selection (train) and the evaluation's "
        "background-share gate (evaluate) alike",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    segmenter: SegmenterTrainConfig = Field(default_factory=SegmenterTrainConfig)
    masks: MaskConfig = Field(default_factory=MaskConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromotionPolicy = Field(default_factory=PromotionPolicy)

    @model_validator(mode="before")
    @classmethod
    def _one_audit(cls, data: Any) -> Any:
        """Merge the audit settings stated at the top and in the sections; hand the result to both."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        stated: dict[str, dict[str, object]] = {}
        if data.get("audit") is not None:
            stated["audit"] = _given_audit(data["audit"])
        for name in AUDIT_READERS:
            section = data.get(name)
            if isinstance(section, dict):
                section = data[name] = _upgrade_audit_keys(name, section)
                if section.get("audit") is not None:
                    stated[f"{name}.audit"] = _given_audit(section["audit"])
            elif isinstance(section, TrainConfig | EvaluateConfig) and "audit" in section.model_fields_set:
                stated[f"{name}.audit"] = _given_audit(section.audit)
        merged: dict[str, object] = {}
        where: dict[str, str] = {}
        for place, fields in stated.items():
            for key, value in fields.items():
                if key in merged and merged[key] != value:
                    raise ValueError(
                        f"{where[key]}.{key} ({merged[key]!r}) and {place}.{key} ({value!r}) differ: the "
                        "audit is one yardstick for model selection and the evaluation; set it once, in the "
                        "top-level `audit` section"
                    )
                merged.setdefault(key, value)
                where.setdefault(key, place)
        audit = AuditConfig.model_validate(merged)
        data["audit"] = audit
        for name in AUDIT_READERS:
            section = data.get(name)
            if isinstance(section, BaseModel):
                data[name] = section.model_copy(update={"audit": audit})
            else:
                data[name] = {**(section or {}), "audit": audit}
        return data

    @model_validator(mode="after")
    def _audit_shared(self) -> Settings:
        """Refuse sections whose audit differs from ``audit`` (an assignment that bypassed the merge)."""
        differ = [name for name in AUDIT_READERS if getattr(self, name).audit != self.audit]
        if differ:
            raise ValueError(
                f"{', '.join(f'{n}.audit' for n in differ)} differ(s) from audit: the audit is one "
                "yardstick for model selection and the evaluation"
            )
        return self

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """The defaults, or the YAML file ``path``, with top-level sections replaced by ``overrides``
        (validated together, so an override's audit settings hold for every stage)."""
        base = cls() if path is None else cls.from_yaml(path)
        return cls.model_validate({**dict(base), **overrides}) if overrides else base
