"""The settings: the audit is one section that model selection (train) and the evaluation both read."""

from __future__ import annotations

import os
import warnings

import pytest
from pydantic import ValidationError

from isnetflow.config import (
    AuditConfig,
    EvaluateConfig,
    Settings,
    SynthConfig,
    TrainConfig,
    available_cores,
    resolve_workers,
)


def test_the_audit_section_reaches_both_stages() -> None:
    s = Settings.model_validate({"audit": {"composite": "epsilon_plus_flat", "gamma": 0.5}})
    assert s.train.audit == s.evaluate.audit == s.audit
    assert (s.audit.composite, s.audit.gamma, s.audit.epsilon) == ("epsilon_plus_flat", 0.5, 1e-6)
    assert Settings().train.audit == Settings().evaluate.audit == AuditConfig()


def test_what_one_section_states_holds_for_both() -> None:
    s = Settings(train=TrainConfig(audit=AuditConfig(gamma=0.7)), evaluate=EvaluateConfig(n_boot=3))
    assert s.audit.gamma == s.evaluate.audit.gamma == 0.7 and s.evaluate.n_boot == 3
    loaded = Settings.load(None, evaluate=EvaluateConfig(audit=AuditConfig(target="predicted")))
    assert loaded.train.audit.target == "predicted"


def test_two_audits_are_refused() -> None:
    with pytest.raises(ValidationError, match="one yardstick"):
        Settings.model_validate({"audit": {"gamma": 0.5}, "evaluate": {"audit": {"gamma": 0.3}}})
    # a copy that bypassed validation, serialized for a pipeline, is refused where it is read back
    split = Settings().model_copy(update={"train": TrainConfig(audit=AuditConfig(gamma=0.7))})
    with pytest.raises(ValidationError, match="one yardstick"):
        Settings.model_validate_json(split.model_dump_json())


def test_settings_json_round_trips() -> None:
    s = Settings.model_validate({"audit": {"epsilon": 1e-4, "target": "predicted"}})
    assert Settings.model_validate_json(s.model_dump_json()) == s
    assert Settings.model_validate_json(Settings().model_dump_json()) == Settings()


def test_the_old_flat_keys_still_load_with_a_warning() -> None:
    old = {
        "train": {"audit_composite": "epsilon"},
        "evaluate": {"audit_composite": "epsilon", "audit_gamma": 0.5, "audit_target": "predicted"},
    }
    with pytest.warns(FutureWarning) as caught:
        s = Settings.model_validate(old)
    assert any("audit_gamma is audit.gamma" in str(w.message) for w in caught)
    assert s.audit == AuditConfig(composite="epsilon", gamma=0.5, target="predicted")
    assert s.train.audit == s.evaluate.audit == s.audit
    with pytest.warns(FutureWarning):
        alone = TrainConfig.model_validate({"audit_composite": "epsilon_plus_flat", "lr": 0.01})
    assert alone.audit.composite == "epsilon_plus_flat" and alone.lr == 0.01
    with pytest.warns(FutureWarning):
        ev = EvaluateConfig.model_validate({"audit_epsilon": 1e-3})
    assert ev.audit == AuditConfig(epsilon=1e-3)


def test_old_keys_that_contradict_are_refused() -> None:
    two = {"train": {"audit_composite": "epsilon"}, "evaluate": {"audit_composite": "epsilon_plus_flat"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValidationError, match="one yardstick"):
            Settings.model_validate(two)
        with pytest.raises(ValidationError, match="contradicts"):
            EvaluateConfig.model_validate({"audit_gamma": 0.5, "audit": {"gamma": 0.3}})


def test_an_isnet_with_a_zero_heatmap_weight_is_refused_with_the_setting_that_means_it() -> None:
    from isnetflow.config import TrainConfig

    with pytest.raises(ValueError, match=r"train.heatmap.P is 0.*relevance_loss: false"):
        TrainConfig(heatmap={"P": 0.0})
    TrainConfig(heatmap={"P": 0.0}, relevance_loss=False)  # the swap arm: no relevance loss, said so
    TrainConfig(heatmap={"P": 0.0}, mode="standard")  # the standard model never reads it


#: sha256 of the demo cohort's six hospitals as settings (JSON, sorted keys): every bench table of the demo
#: cohort rests on them, so a change must be deliberate (and this digest updated with it).
DEMO_SITES_SHA256 = "7d91d17d1a0a9412f11ac5d5f27abeae5b025a013657f8490d8518c7d4a2ca71"


def test_the_demo_hospitals_are_data_beside_the_synth_code() -> None:
    """The default ``synth.sites`` come from ``synth/sites.yaml`` (not code in the settings module), equal
    the hospitals every bench table used, and each Settings gets its own copies."""
    import hashlib
    import json

    from isnetflow.config import DEFAULT_SITES_FILE

    assert DEFAULT_SITES_FILE.parent.name == "synth" and DEFAULT_SITES_FILE.is_file()
    sites = Settings().synth.sites
    dump = json.dumps([s.model_dump(mode="json") for s in sites], sort_keys=True)
    assert hashlib.sha256(dump.encode()).hexdigest() == DEMO_SITES_SHA256
    assert [s.role for s in sites].count("internal") == 3 and len(sites) == 6
    a, b = Settings(), Settings()
    a.synth.sites[0].prevalence = 0.9
    assert b.synth.sites[0].prevalence == sites[0].prevalence != 0.9


def test_workers_zero_means_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert available_cores() == 3  # the affinity set (a container's cpuset), not the host's core count
    assert resolve_workers(0) == 3
    assert resolve_workers(1) == 1 and resolve_workers(7) == 7
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # not on Linux
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert resolve_workers(0) == 6
    assert SynthConfig().workers == 0  # the demo cohort uses every core; its images do not depend on it
