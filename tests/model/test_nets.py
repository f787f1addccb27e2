"""Model blocks against numeric oracles, and every registered model's output shape."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.encoder import Encoded, FeatureEncoder
from model.export import model_batch
from model.nets import REGISTRY, build_model, model_spec
from model.nets.blocks import FactorizationMachine, FieldEmbedding, InnerProduct, OuterProduct


def test_fm_equals_brute_force_pairwise_sum() -> None:
    torch.manual_seed(0)
    embedded = torch.randn(8, 7, 5, dtype=torch.float64)
    brute = torch.zeros(8, dtype=torch.float64)
    for i, j in itertools.combinations(range(7), 2):
        brute += (embedded[:, i] * embedded[:, j]).sum(dim=1)
    torch.testing.assert_close(FactorizationMachine()(embedded), brute)


def test_inner_product_lists_every_pair_once() -> None:
    embedded = torch.randn(3, 4, 2)
    pairs = InnerProduct(4)(embedded)
    expected = torch.stack(
        [(embedded[:, i] * embedded[:, j]).sum(-1) for i, j in itertools.combinations(range(4), 2)], 1
    )
    torch.testing.assert_close(pairs, expected)


def test_outer_product_is_the_outer_product_of_the_pooled_embedding() -> None:
    embedded = torch.randn(4, 5, 3)
    pooled = embedded.sum(dim=1)
    expected = torch.stack([torch.outer(row, row).flatten() for row in pooled])
    torch.testing.assert_close(OuterProduct()(embedded), expected)


def test_field_embedding_pools_bags_and_scales_values(
    mixed_encoder: FeatureEncoder, mixed_rows: Encoded
) -> None:
    torch.manual_seed(0)
    embedding = FieldEmbedding(mixed_encoder.layout, 4, init_std=1.0)
    batch = model_batch(mixed_rows, mixed_encoder.layout)
    out = embedding(batch)
    assert out.shape == (512, 7, 4)
    # fields are ordered index (user, device, hour, item), value (price, size), bag (installed)
    table, starts = embedding.table.weight, embedding.value_rows
    torch.testing.assert_close(out[:, 5], batch.val[:, 1:2] * table[starts[1]])
    bag, offset = batch.bags[0], int(embedding.bag_offsets[0])
    row = int(torch.nonzero((bag > 0).sum(1) == 2)[0])
    entries = bag[row][bag[row] > 0]
    torch.testing.assert_close(out[row, 6], table[entries + offset].mean(0))
    empty = int(torch.nonzero((bag > 0).sum(1) == 0)[0])
    torch.testing.assert_close(out[empty, 6], table[offset])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_returns_one_logit_per_row(
    name: str, mixed_encoder: FeatureEncoder, mixed_rows: Encoded
) -> None:
    model = build_model(name, mixed_encoder.layout)
    logits = model(model_batch(mixed_rows, mixed_encoder.layout))
    assert logits.shape == (512,)
    assert torch.isfinite(logits).all()


def test_unknown_model_and_bad_params_are_refused(mixed_encoder: FeatureEncoder) -> None:
    with pytest.raises(ValueError, match="unknown model 'deepfn'; known: lr, fm"):
        model_spec("deepfn")
    with pytest.raises(ValueError, match="hidden_unit"):
        build_model("deepfm", mixed_encoder.layout, {"hidden_unit": [10]})


def test_platt_scaling_recovers_known_parameters() -> None:
    from model.nets.calibration import fit_platt

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200_000, generator=generator) * 2.0
    labels = torch.bernoulli(torch.sigmoid(0.6 * logits - 1.2), generator=generator)
    scale, shift = fit_platt(logits, labels)
    assert scale == pytest.approx(0.6, abs=0.02) and shift == pytest.approx(-1.2, abs=0.02)
    assert fit_platt(logits, torch.ones_like(logits)) == (1.0, 0.0)


def test_platt_scaling_over_several_chunks_is_the_maximum_likelihood_fit() -> None:
    """The chunked Newton sums reach the exact logistic fit on a split of several chunks."""
    from sklearn.linear_model import LogisticRegression

    from model.nets.calibration import CHUNK, fit_platt

    generator = torch.Generator().manual_seed(1)
    rows = 2 * CHUNK + 12_345  # three chunks, the last one partial
    logits = torch.randn(rows, generator=generator) * 3.0
    labels = torch.bernoulli(torch.sigmoid(0.4 * logits + 0.3), generator=generator)
    scale, shift = fit_platt(logits, labels)
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=1000)
    reference.fit(logits.double().numpy().reshape(-1, 1), labels.numpy())
    assert scale == pytest.approx(float(reference.coef_[0, 0]), abs=1e-6)
    assert shift == pytest.approx(float(reference.intercept_[0]), abs=1e-6)
