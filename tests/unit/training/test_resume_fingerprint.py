"""A checkpoint written before the audit settings moved into ``train.audit`` still resumes."""

from __future__ import annotations

import json

from isnetflow.config import AuditConfig, TrainConfig
from isnetflow.training.loop import _config_fingerprint, _same_settings


def _old_fingerprint(cfg: TrainConfig) -> str:
    """The fingerprint as the settings' older layout wrote it (flat ``audit_composite``)."""
    d = json.loads(_config_fingerprint(cfg))
    d["audit_composite"] = d.pop("audit")["composite"]
    return json.dumps(d, sort_keys=True)


def test_an_old_checkpoint_fingerprint_matches_the_same_settings() -> None:
    cfg = TrainConfig(lr=0.01, audit=AuditConfig(composite="epsilon"))
    now = _config_fingerprint(cfg)
    assert _same_settings(now, now)
    assert _same_settings(_old_fingerprint(cfg), now)
    assert not _same_settings(_old_fingerprint(cfg.model_copy(update={"lr": 0.02})), now)
    assert not _same_settings(_old_fingerprint(TrainConfig(lr=0.01)), now)  # another composite
    assert not _same_settings("not json", now)
