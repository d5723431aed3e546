"""Distillation from the lungs-only teacher (``train.distill``): features, the part, the training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isnetflow.config import DistillConfig, HeatmapLossConfig, TrainConfig
from isnetflow.isnet import CLASSIFIER_PARTS, ISNetOutput, loss_config_from_settings, step_gradients
from isnetflow.nets import build_model
from isnetflow.training.data import TrainData
from isnetflow.training.distill import Distiller, StudentCapture, feature_maps, head_features
from isnetflow.training.loop import train


def _data(n: int = 32, size: int = 32) -> TrainData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g) * 0.5
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, 8:24, 4:14] = 1
    masks[:, :, 8:24, 18:28] = 1
    labels = torch.arange(n) % 2
    images[labels == 1, :, 12:18, 6:12] += 0.3
    splits = ["train"] * 24 + ["val"] * 8
    return TrainData(
        images, masks, labels, ["normal", "covid"], [f"p{i}" for i in range(n)], ["A"] * n, splits
    )


def test_head_features_are_what_the_classifier_reads() -> None:
    torch.manual_seed(0)
    model = build_model("densenet-small", 2).eval()
    x = torch.rand(3, 1, 32, 32)
    with head_features(model) as captured:
        logits = model(x)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert len(captured) == 1 and captured[0].shape == (3, head.in_features)
    torch.testing.assert_close(head(captured[0]), logits)
    model(x)
    assert len(captured) == 1  # the hook is gone after the block


def _teacher_and_copy() -> tuple[nn.Module, nn.Module]:
    """A seeded ``cnn-small`` teacher and a student with its weights, in eval mode."""
    torch.manual_seed(0)
    teacher = build_model("cnn-small", 2)
    student = build_model("cnn-small", 2)
    student.load_state_dict(teacher.state_dict())
    return teacher, student.eval()


def test_the_part_is_zero_for_the_teacher_on_lungs_only_inputs_and_trains_only_the_student() -> None:
    teacher, student = _teacher_and_copy()
    distiller = Distiller(teacher, weight=2.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    x, m = torch.rand(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    m[:, :, 4:12, 4:12] = 1
    with head_features(student) as f:
        logits = student(x * m)  # nothing but lungs
    assert float(distiller.part(StudentCapture(features=f), logits, x * m, m).detach()) == pytest.approx(
        0.0, abs=1e-10
    )
    with head_features(student) as f:
        logits = student(x)  # the background is there: the student's features differ from the teacher's
    part = distiller.part(StudentCapture(features=f), logits, x, m)
    assert float(part.detach()) > 0
    part.backward()
    head = [m for m in student.modules() if isinstance(m, nn.Linear)][-1]
    below_head = [p for p in student.parameters() if all(p is not q for q in head.parameters())]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in below_head)  # the features train
    assert all(p.grad is None for p in head.parameters())  # the head reads them
    assert all(p.grad is None for p in teacher.parameters())


def test_the_distillation_part_trains_the_classifier_uncapped() -> None:
    """``distillation`` is a classifier part: the cap of ``heatmap.grad_balance`` never scales it."""
    assert "distillation" in CLASSIFIER_PARTS
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.rand(5, 3)

    def parts() -> dict[str, torch.Tensor]:
        out = model(x)
        return {"cross_entropy": out[:, 0].mean() * 1e-3, "distillation": out[:, 1].pow(2).mean(),
                "heatmap": out.sum() * 100.0}  # fmt: skip

    cfg = loss_config_from_settings(HeatmapLossConfig(grad_balance=1e-6), 1.0, 2.0)
    diag = step_gradients(model, ISNetOutput(parts=parts(), terms={}), cfg)
    assert diag.heatmap_grad_scale < 1e-3  # the heatmap part is capped ...
    fresh = parts()
    params = list(model.parameters())
    classifier = torch.autograd.grad(
        fresh["cross_entropy"] + fresh["distillation"], params, retain_graph=True
    )
    heatmap = torch.autograd.grad(fresh["heatmap"], params)
    for p, c, h in zip(params, classifier, heatmap, strict=True):  # ... the classifier parts are whole
        torch.testing.assert_close(p.grad, c + diag.heatmap_grad_scale * h, rtol=1e-5, atol=1e-8)


def test_an_isnet_with_distillation_trains_its_teacher_first_and_reports_the_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import isnetflow.training.loop as loop

    teachers: list[tuple[TrainConfig, torch.Tensor]] = []
    real = loop._train

    def spy(cfg, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cfg.mode == "standard":
            teachers.append((cfg, data.images.clone()))
        return real(cfg, data, *args, **kwargs)

    monkeypatch.setattr(loop, "_train", spy)
    data = _data()
    cfg = TrainConfig(
        model="cnn-small", image_size=32, batch_size=8, epochs=3, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0), distill=DistillConfig(teacher_epochs=2),
    )  # fmt: skip
    result = train(cfg, data, progress=False)
    assert len(teachers) == 1
    teacher_cfg, seen = teachers[0]
    assert teacher_cfg.epochs == 2 and teacher_cfg.distill.teacher_epochs == 0
    assert torch.equal(seen, data.images * data.masks)  # the teacher sees the lungs only
    assert all("train_distillation" in h and h["train_distillation"] >= 0 for h in result.history)
    plain = train(cfg.model_copy(update={"distill": DistillConfig(teacher_epochs=0)}), data, progress=False)
    assert "train_distillation" not in plain.history[-1]


def test_the_teacher_is_on_by_default_for_40_percent_of_the_epochs_and_0_turns_it_off() -> None:
    assert TrainConfig().distill.epochs_for(TrainConfig().epochs) == 16  # on by default
    assert TrainConfig().distill.target == "logits"
    assert DistillConfig(teacher_epochs=None).epochs_for(40) == 16
    assert (
        DistillConfig(teacher_epochs=None).epochs_for(3) == 1
    )  # never 0 by rounding: that would turn it off
    assert DistillConfig(teacher_epochs=0).epochs_for(40) == 0
    assert DistillConfig(teacher_epochs=7).epochs_for(40) == 7


def test_the_logits_target_is_the_tempered_kl_to_the_teacher_and_zero_on_its_own_inputs() -> None:
    teacher, student = _teacher_and_copy()
    distiller = Distiller(teacher, weight=0.5, target="logits", temperature=3.0)
    x, m = torch.rand(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    m[:, :, 4:12, 4:12] = 1
    with head_features(student) as f:
        logits = student(x * m)
    assert float(distiller.part(StudentCapture(features=f), logits, x * m, m).detach()) == pytest.approx(
        0.0, abs=1e-7
    )
    with head_features(student) as f:
        logits = student(x)
    part = distiller.part(StudentCapture(features=f), logits, x, m)
    with torch.no_grad():
        p_t = torch.softmax(teacher(x * m) / 3.0, 1)
    p_s = torch.softmax(logits.detach() / 3.0, 1)
    expected = 0.5 * 9.0 * float((p_t * (p_t.log() - p_s.log())).sum(1).mean())
    assert float(part.detach()) == pytest.approx(expected, rel=1e-4) and float(part.detach()) > 0
    with pytest.raises(ValueError, match="unknown distillation target"):
        Distiller(teacher, 1.0, target="pixels")


def test_the_lr_warmup_ramps_the_rate_over_its_steps_and_zero_keeps_the_schedule() -> None:
    from isnetflow.training.loop import _lr_factor

    cfg = TrainConfig()  # cosine
    assert _lr_factor(cfg, 0, 100, 0) == _lr_factor(cfg, 0, 100) == 1.0
    assert _lr_factor(cfg, 0, 100, 10) == pytest.approx(0.1)
    assert _lr_factor(cfg, 4, 100, 10) == pytest.approx(0.5 * _lr_factor(cfg, 4, 100))
    for step in (9, 10, 50, 99):  # the ramp is over: the schedule alone
        assert _lr_factor(cfg, step, 100, 10) == _lr_factor(cfg, step, 100)
    constant = cfg.model_copy(update={"schedule": "constant"})
    assert _lr_factor(constant, 1, 100, 4) == pytest.approx(0.5)


def test_the_student_from_the_teacher_starts_at_a_low_rate_the_teacher_and_a_plain_isnet_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import isnetflow.training.loop as loop

    rates: dict[str, list[float]] = {}
    real = loop._make_optimizer

    def spy(cfg, model):  # type: ignore[no-untyped-def]
        opt = real(cfg, model)
        step = opt.step
        seen = rates.setdefault(f"{cfg.mode}-{len(rates)}", [])

        def record(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(opt.param_groups[0]["lr"])
            return step(*args, **kwargs)

        opt.step = record
        return opt

    monkeypatch.setattr(loop, "_make_optimizer", spy)
    cfg = TrainConfig(
        model="cnn-small", image_size=32, batch_size=8, epochs=3, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", schedule="constant", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0),
        distill=DistillConfig(teacher_epochs=1, lr_warmup_epochs=1),
    )  # fmt: skip
    train(cfg, _data(), progress=False)
    (isnet, isnet_rates), (teacher, teacher_rates) = rates.items()  # the ISNet's optimizer is made first
    assert isnet.startswith("isnet") and teacher.startswith("standard")
    assert teacher_rates == [cfg.lr] * 3  # the teacher trains from scratch at the schedule's rate
    # 3 steps per epoch: 1/3, 2/3, then the full rate for the rest
    assert isnet_rates == pytest.approx([cfg.lr / 3, 2 * cfg.lr / 3] + [cfg.lr] * 7)


def test_the_map_part_matches_the_teachers_map_everywhere_the_background_included() -> None:
    teacher, student = _teacher_and_copy()
    distiller = Distiller(teacher, weight=0.0, target="logits", map_weight=2.0, map_layer="3")
    x, m = torch.rand(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    m[:, :, 4:12, 4:12] = 1
    with distiller.capture(student) as got:
        logits = student(x * m)
    assert got.maps[-1].shape == (4, 16, 8, 8)  # the output of layer "3", the first max-pool
    assert float(distiller.part(got, logits, x * m, m).detach()) == pytest.approx(0.0, abs=1e-10)
    background_only = x * m + (1 - m) * 0.5  # the lungs are the teacher's; only the background differs
    with distiller.capture(student) as got:
        logits = student(background_only)
    part = distiller.part(got, logits, background_only, m)
    with torch.no_grad(), feature_maps(teacher, "3") as t_maps, feature_maps(student, "3") as s_maps:
        teacher(x * m), student(background_only)
    expected = 2.0 * float((s_maps[-1] - t_maps[-1]).pow(2).mean() / t_maps[-1].pow(2).mean())
    assert float(part.detach()) == pytest.approx(expected, rel=1e-5) and expected > 0
    part.backward()
    first_conv = next(p for p in student.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_the_map_layer_defaults_to_the_last_feature_map_and_an_unknown_one_is_refused() -> None:
    teacher, student = _teacher_and_copy()
    with feature_maps(student, None) as maps:
        student(torch.rand(2, 1, 16, 16))
    assert maps[-1].shape == (2, 64, 4, 4)  # the global pooling's input
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        Distiller(teacher, 1.0, map_weight=1.0, map_layer="nope")
    Distiller(teacher, 1.0, map_layer="nope")  # the spatial part off: the layer is not looked up


def test_an_isnet_with_the_map_part_trains_and_reports_it() -> None:
    cfg = TrainConfig(
        model="densenet-small", image_size=32, batch_size=8, epochs=2, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0),
        distill=DistillConfig(teacher_epochs=1, map_weight=1.0, map_layer="features.transition1"),
    )  # fmt: skip
    with_map = train(cfg, _data(), progress=False)
    without = train(cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"map_weight": 0.0})}),
                    _data(), progress=False)  # fmt: skip
    for a, b in zip(with_map.history, without.history, strict=True):
        assert a["train_distillation"] > b["train_distillation"]  # the map part is in the reported part


def test_the_map_part_on_the_lungs_ignores_the_background_and_weighs_the_lung_cells() -> None:
    teacher, student = _teacher_and_copy()
    distiller = Distiller(teacher, 0.0, "logits", map_weight=1.0, map_layer="3", map_region="lungs")
    x, m = torch.rand(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    m[:, :, 4:12, 4:12] = 1  # whole 2x2 cells of the 8x8 map after the first max-pool
    far_background = x * m + (1 - m) * 0.5
    far_background[:, :, 3:13, 3:13] = (x * m)[
        :, :, 3:13, 3:13
    ]  # the lungs' neighbourhood as the teacher saw it
    with distiller.capture(student) as got:
        logits = student(far_background)
    lungs_only = float(distiller.part(got, logits, far_background, m).detach())
    everywhere = Distiller(teacher, 0.0, "logits", map_weight=1.0, map_layer="3").part(
        got, logits, far_background, m
    )
    assert float(everywhere.detach()) > 0  # the image region sees the far background ...
    assert lungs_only == pytest.approx(0.0, abs=1e-10)  # ... the lungs region does not
    with pytest.raises(ValueError, match="unknown distillation map region"):
        Distiller(teacher, 1.0, map_region="edges")


@pytest.mark.parametrize("name", ["densenet-small", "densenet-medium", "densenet121", "cnn-small"])
def test_every_net_names_a_middle_feature_map_for_the_default_spatial_part(name: str) -> None:
    from isnetflow.nets import MIDDLE_LAYERS, NETS

    assert set(NETS) >= {name} and MIDDLE_LAYERS.get(name) is not None
    model = build_model(name, 2).eval()
    with torch.no_grad(), feature_maps(model, MIDDLE_LAYERS[name]) as maps:
        model(torch.rand(1, 1, 128, 128))
    side = maps[-1].shape[-1]
    assert maps[-1].dim() == 4 and 4 <= side <= 32  # a spatial map between the input and the last one


def test_the_spatial_part_is_on_by_default_at_the_nets_middle_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    import isnetflow.training.loop as loop

    assert DistillConfig().map_weight == 1.0 and DistillConfig().map_layer is None
    made: list[Distiller] = []
    real = loop.Distiller

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "Distiller", spy)
    cfg = TrainConfig(
        model="densenet-small", image_size=32, batch_size=8, epochs=2, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0), distill=DistillConfig(teacher_epochs=1),
    )  # fmt: skip
    train(cfg, _data(), progress=False)
    assert made[-1].map_weight == 1.0 and made[-1].map_layer == "features.transition2"


class _Recording:
    """Stands in for the standard step behind a :class:`TeacherStep`: records the inputs it is given."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(
        self, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, global_step: int
    ) -> dict[str, float]:
        self.inputs.append(x.clone())
        return {"loss": 0.0, "ce": 0.0}


def test_a_teacher_with_context_sees_lungs_on_black_and_a_share_with_another_images_background() -> None:
    from isnetflow.training.steps import TeacherStep
    from isnetflow.training.streams import RandomStreams

    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 16, 16, generator=g) + 1.0  # every pixel > 0: black can only come from the mask
    m = torch.zeros(8, 1, 16, 16)
    for i in range(8):  # a different lung field per image: the union of two masks is larger than either
        m[i, :, 3:13, 1 + i % 3 : 7 + i % 3] = 1
    recorded = _Recording()
    step = TeacherStep(recorded, 0.5, RandomStreams(0))  # type: ignore[arg-type]
    step(x, m, torch.zeros(8, dtype=torch.long), 5)
    inputs = recorded.inputs[0]
    lungs = x * m
    on_black = [i for i in range(8) if torch.equal(inputs[i], lungs[i])]
    context = [i for i in range(8) if i not in on_black]
    assert len(on_black) == 4 and len(context) == 4
    for i in context:
        inside = m[i] > 0.5
        assert torch.equal(inputs[i][inside], x[i][inside])  # its own lungs
        outside = ~inside & (inputs[i] != x[i])  # the rest: its own pixels only inside the donor's lungs
        donors = [j for j in context if j != i and torch.equal(inputs[i][outside], x[j][outside])]
        assert len(donors) == 1 and bool(outside.any())  # another context image's background, not black
    step(x, m, torch.zeros(8, dtype=torch.long), 5)
    assert torch.equal(recorded.inputs[1], inputs)  # a function of the seed and the step
    step(x, m, torch.zeros(8, dtype=torch.long), 6)
    assert not torch.equal(recorded.inputs[2], inputs)


def test_a_teacher_with_context_trains_on_raw_images_and_validates_on_the_lungs_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import isnetflow.training.loop as loop

    validated: list[torch.Tensor] = []
    real = loop.validate_epoch

    def spy(cfg, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if cfg.mode == "standard":
            validated.append(data.images.clone())
        return real(cfg, data, *args, **kwargs)

    monkeypatch.setattr(loop, "validate_epoch", spy)
    data = _data()
    cfg = TrainConfig(
        model="cnn-small", image_size=32, batch_size=8, epochs=2, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0), distill=DistillConfig(teacher_epochs=2, context_share=0.5),
    )  # fmt: skip
    teacher_context = loop.train_teacher(cfg, data, torch.device("cpu"), progress=False)
    assert len(validated) == 2 and all(torch.equal(v, data.images * data.masks) for v in validated)
    plain = loop.train_teacher(
        cfg.model_copy(update={"distill": DistillConfig(teacher_epochs=2)}),
        data,
        torch.device("cpu"),
        progress=False,
    )
    assert len(validated) == 4 and torch.equal(validated[-1], data.images * data.masks)
    differs = [
        not torch.equal(a, b) for a, b in zip(teacher_context.parameters(), plain.parameters(), strict=True)
    ]
    assert any(differs)  # the backgrounds changed what it learned
    with pytest.raises(ValueError):
        DistillConfig(context_share=1.5)
