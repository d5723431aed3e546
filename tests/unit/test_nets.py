"""The one prediction of a classifier (training's validation, the evaluation, the served model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isnetflow.nets import build_model, predict_proba


@pytest.mark.usefixtures("one_thread")
def test_predict_proba_is_the_float32_softmax_of_each_batch() -> None:
    torch.manual_seed(0)
    model = build_model("cnn-small", 3).train()
    x = torch.rand(10, 1, 16, 16)
    got = predict_proba(model, x, batch_size=4)
    assert not model.training and got.dtype == np.float32 and got.shape == (10, 3)
    with torch.no_grad():
        expected = torch.cat([torch.softmax(model(x[i : i + 4]).float(), dim=1) for i in (0, 4, 8)]).numpy()
    assert np.array_equal(got, expected)
    assert np.array_equal(predict_proba(model, x.numpy(), batch_size=4), got)  # numpy input, same numbers


def test_predict_proba_of_nothing_has_the_class_columns() -> None:
    model = build_model("cnn-small", 2)
    empty = predict_proba(model, torch.zeros(0, 1, 16, 16), batch_size=8)
    assert empty.shape == (0, 2) and empty.dtype == np.float32
