"""Patient-grouped split assignment shared by training and evaluation.

Internal-site patients go to ``train`` / ``val`` / ``test`` by a stable hash of (seed, patient id), so a
patient's images never straddle splits and adding patients never reshuffles existing ones. External
sites are never trained on: every image there is ``external``.

The evaluation does not recompute the split: it reads the training run's own list (``splits.csv``,
:mod:`isnetflow.training.splitfile`) and applies it with :func:`apply_held_out`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["SPLITS", "UNLISTED", "apply_held_out", "assign_splits", "patient_unit"]

SPLITS = ("train", "val", "test", "external")
#: an internal image whose patient the training run's list does not name (data added since): neither
#: trained on nor held out, so no internal metric uses it
UNLISTED = "unlisted"


def patient_unit(seed: int, patient_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, patient id)."""
    h = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_splits(
    patient_ids: Sequence[str],
    roles: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
) -> list[str]:
    """Split label per image. ``roles`` is ``internal`` or ``external`` per image.

    Raises ``ValueError`` if a patient appears at both an internal and an external site (leakage).
    """
    if len(patient_ids) != len(roles):
        raise ValueError("patient_ids and roles differ in length")
    role_of: dict[str, str] = {}
    for pid, role in zip(patient_ids, roles, strict=True):
        if role not in ("internal", "external"):
            raise ValueError(f"role must be internal or external, got {role!r}")
        if role_of.setdefault(pid, role) != role:
            raise ValueError(f"patient {pid!r} appears at internal and external sites")
    out = []
    for pid, role in zip(patient_ids, roles, strict=True):
        if role == "external":
            out.append("external")
            continue
        u = patient_unit(seed, pid)
        out.append("test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train")
    return out


def apply_held_out(
    patient_ids: Sequence[str], roles: Sequence[str], held_out: Mapping[str, str]
) -> list[str]:
    """Split label per image from a stored ``{patient_id: split}`` (the training run's ``splits.csv``).

    External images are ``external``; an internal image takes its patient's stored split, or
    :data:`UNLISTED` when the list does not name the patient. Raises ``ValueError`` if a patient the list
    names appears at an external site (the model saw that patient, or the site roles changed), or at
    internal and external sites.
    """
    if len(patient_ids) != len(roles):
        raise ValueError("patient_ids and roles differ in length")
    role_of: dict[str, str] = {}
    out = []
    for pid, role in zip(patient_ids, roles, strict=True):
        if role not in ("internal", "external"):
            raise ValueError(f"role must be internal or external, got {role!r}")
        if role_of.setdefault(pid, role) != role:
            raise ValueError(f"patient {pid!r} appears at internal and external sites")
        if role == "external":
            if pid in held_out:
                raise ValueError(
                    f"patient {pid!r} is at an external site but the training run's split lists them in "
                    f"{held_out[pid]}"
                )
            out.append("external")
        else:
            out.append(held_out.get(pid, UNLISTED))
    return out
