"""Patient-grouped split assignment shared by training and evaluation.

Internal-site patients go to ``train`` / ``val`` / ``test`` by a stable hash of (seed, patient id), so a
patient's images never straddle splits and adding patients never reshuffles existing ones. External
sites are never trained on: every image there is ``external``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["SPLITS", "assign_splits", "patient_unit"]

SPLITS = ("train", "val", "test", "external")


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
