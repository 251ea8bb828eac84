import numpy as np
import pytest
import torch

from encoder.pooling import LAYER_COMBINES, POOLING_MODES, feature_dim, pool_layers, pool_positions, resolve_layers

# Two rows, three positions, two dims. Row 0 has one padded position holding a huge value: a mask bug shows up.
HIDDEN = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                       [[-1.0, 0.0], [5.0, 1.0], [2.0, 8.0]]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
EXPECTED = {
    "cls": [[1.0, 2.0], [-1.0, 0.0]],
    "mean": [[2.0, 3.0], [2.0, 3.0]],
    "max": [[3.0, 4.0], [5.0, 8.0]],
    "mean_sqrt_len": [[4.0 / 2 ** 0.5, 6.0 / 2 ** 0.5], [6.0 / 3 ** 0.5, 9.0 / 3 ** 0.5]],
}


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_positions_hand_worked(mode):
    got = pool_positions(HIDDEN, MASK, mode).numpy()
    np.testing.assert_allclose(got, EXPECTED[mode])


def test_unknown_pooling_names_allowed_modes():
    with pytest.raises(ValueError, match="'cls', 'mean', 'max'"):
        pool_positions(HIDDEN, MASK, "maxx")


@pytest.mark.parametrize("combine", LAYER_COMBINES)
def test_pool_layers_combines_layers(combine):
    layer0, layer1 = HIDDEN * 0, HIDDEN
    layer2 = HIDDEN * 3
    out = pool_layers([layer0, layer1, layer2], MASK, layers=(1, 2), mode="mean", combine=combine, normalize=False)
    mean1 = np.array(EXPECTED["mean"])
    if combine == "concat":
        np.testing.assert_allclose(out.numpy(), np.concatenate([mean1, 3 * mean1], axis=1))
    else:
        np.testing.assert_allclose(out.numpy(), 2 * mean1)
    assert out.shape[1] == feature_dim(2, 2, combine)


def test_pool_layers_normalizes_to_unit_length():
    out = pool_layers([HIDDEN, HIDDEN], MASK, layers=(1,), mode="mean", combine="concat", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.numpy()[0], np.array([2.0, 3.0]) / np.sqrt(13), rtol=1e-6)


@pytest.mark.parametrize("layers,expected", [("last", (6,)), ("last4", (3, 4, 5, 6)), ("all", (1, 2, 3, 4, 5, 6)),
                                             ([-1, -2], (6, 5)), ([0, 3], (0, 3))])
def test_resolve_layers(layers, expected):
    assert resolve_layers(layers, 6) == expected


@pytest.mark.parametrize("layers", ["first", [7], [-8], [], [1, 1]])
def test_resolve_layers_rejects(layers):
    with pytest.raises(ValueError):
        resolve_layers(layers, 6)
