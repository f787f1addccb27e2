"""FeatureEncoder: reserved indices, every kind, JSON round trip, purity, and stable hashing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.encoder import FeatureEncoder, InputRole, unknown_counts
from model.fitting import EncoderFitter, fit_encoder
from model.schema import FeatureSchema
from model.vocabulary import MISSING, OOV, hash_buckets


def _schema() -> FeatureSchema:
    return FeatureSchema.model_validate(
        {
            "name": "unit",
            "fields": [
                {"name": "country", "kind": "categorical", "source": "user", "min_count": 2},
                {"name": "device", "kind": "hashed", "source": "user", "num_buckets": 1000},
                {
                    "name": "hour",
                    "kind": "numeric",
                    "source": "context",
                    "transform": "quantile_bucket",
                    "num_buckets": 4,
                },
                {
                    "name": "price",
                    "kind": "numeric",
                    "source": "item",
                    "transform": "standardize",
                    "clip": 3.0,
                },
                {"name": "downloads", "kind": "numeric", "source": "item", "transform": "log_bucket"},
                {"name": "installed", "kind": "multi", "source": "user", "max_len": 3},
            ],
        }
    )


def _columns() -> dict[str, np.ndarray]:
    return {
        "country": np.array(["de", "de", "fr", "fr", "us", ""]),
        "device": np.array(["pixel", "iphone", "", "pixel", "galaxy", "pixel"]),
        "hour": np.array([0.0, 6.0, 12.0, 18.0, 23.0, np.nan]),
        "price": np.array([0.0, 1.0, 2.0, 3.0, np.nan, 100.0]),
        "downloads": np.array([0.0, 1.0, 5.0, 1e6, np.nan, 2.0]),
        "installed": np.array(["games|news", "games", "", "tools|games|news|maps", "news", "games|games"]),
    }


@pytest.fixture()
def encoder() -> FeatureEncoder:
    return fit_encoder(_schema(), _columns())


def test_categorical_reserved_indices_and_frequency_order(encoder: FeatureEncoder) -> None:
    out = encoder.transform({"country": np.array(["de", "fr", "us", "", "xx"])}, 5)["country"]
    # de and fr are seen twice (min_count 2), ordered by count then name; us is seen once -> OOV.
    assert out.tolist() == [2, 3, OOV, MISSING, OOV]


def test_every_kind_has_the_documented_dtype_and_shape(encoder: FeatureEncoder) -> None:
    out = encoder.transform(_columns(), 6)
    assert out["country"].dtype == np.int64 and out["country"].shape == (6,)
    assert out["price"].dtype == np.float32
    assert out["installed"].shape == (6, 3)
    roles = {f.name: f.role for f in encoder.layout.fields}
    assert roles == {
        "country": InputRole.INDEX, "device": InputRole.INDEX, "hour": InputRole.INDEX,
        "price": InputRole.VALUE, "downloads": InputRole.INDEX, "installed": InputRole.BAG,
    }  # fmt: skip


def test_numeric_transforms(encoder: FeatureEncoder) -> None:
    out = encoder.transform(_columns(), 6)
    finite = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    expected = np.clip((np.array([0.0, 1.0, 2.0, 3.0, np.nan, 100.0]) - finite.mean()) / finite.std(), -3, 3)
    np.testing.assert_allclose(out["price"], np.nan_to_num(expected, nan=0.0), rtol=1e-6)
    assert out["hour"][5] == MISSING and out["downloads"][4] == MISSING
    assert out["hour"][:5].tolist() == sorted(out["hour"][:5].tolist())  # buckets follow the order
    assert out["downloads"][0] != out["downloads"][3]


def test_multi_valued_field_pads_truncates_and_marks_missing(encoder: FeatureEncoder) -> None:
    out = encoder.transform(_columns(), 6)["installed"]
    games = out[1, 0]
    assert games >= 2 and out[1, 1:].tolist() == [0, 0]
    assert out[2].tolist() == [0, 0, 0]  # empty -> missing
    assert (out[3] > 0).all()  # four values truncated to max_len 3
    lists = encoder.transform({"installed": np.array([["games", "news"], None], dtype=object)}, 2)[
        "installed"
    ]
    assert lists[0].tolist() == out[0].tolist() and lists[1].tolist() == [0, 0, 0]


def test_missing_column_is_missing_everywhere(encoder: FeatureEncoder) -> None:
    out = encoder.transform({}, 3)
    assert out["country"].tolist() == [MISSING] * 3
    assert out["price"].tolist() == [0.0] * 3


def test_transform_is_pure_and_state_round_trips_through_json(
    encoder: FeatureEncoder, tmp_path: Path
) -> None:
    before = json.dumps(encoder.state_dict(), sort_keys=True)
    first = encoder.transform(_columns(), 6)
    encoder.transform({"country": np.array(["never-seen"] * 6)}, 6)
    assert json.dumps(encoder.state_dict(), sort_keys=True) == before
    encoder.save(tmp_path / "encoder.json")
    loaded = FeatureEncoder.load(_schema(), tmp_path / "encoder.json")
    again = loaded.transform(_columns(), 6)
    for name, values in first.items():
        np.testing.assert_array_equal(values, again[name])


def test_state_of_another_schema_is_refused(encoder: FeatureEncoder) -> None:
    other = FeatureSchema.model_validate(
        {"fields": [{"name": "country", "kind": "categorical", "source": "user"}]}
    )
    with pytest.raises(ValueError, match="schema hash mismatch"):
        FeatureEncoder.from_state(other, encoder.state_dict())


def test_json_scalars_canonicalize_like_file_text(encoder: FeatureEncoder) -> None:
    schema = FeatureSchema.model_validate(
        {"fields": [{"name": "rating", "kind": "categorical", "source": "item"}]}
    )
    text = np.array(["4.5", "5", "381", "true", ""])
    fitted = fit_encoder(schema, {"rating": text})
    mixed = np.array([4.5, 5.0, 381, True, None], dtype=object)
    expected = fitted.transform({"rating": text}, 5)["rating"]
    assert fitted.transform({"rating": mixed}, 5)["rating"].tolist() == expected.tolist()
    assert len(set(expected[:4].tolist())) == 4 and expected[4] == MISSING


def test_text_in_numeric_field_names_field_and_value(encoder: FeatureEncoder) -> None:
    with pytest.raises(ValueError, match=r"price: not a number: 'cheap'"):
        encoder.transform({"price": np.array(["1.0", "cheap"])}, 2)


def test_chunked_fit_equals_one_shot_fit() -> None:
    columns = _columns()
    fitter = EncoderFitter(_schema())
    fitter.update({k: v[:3] for k, v in columns.items()})
    fitter.update({k: v[3:] for k, v in columns.items()})
    chunked, whole = fitter.finish(), fit_encoder(_schema(), columns)
    assert chunked.state_dict()["fields"]["country"] == whole.state_dict()["fields"]["country"]
    assert chunked.state_dict()["fields"]["price"] == pytest.approx(whole.state_dict()["fields"]["price"])


def test_unknown_counts(encoder: FeatureEncoder) -> None:
    out = encoder.transform({"country": np.array(["de", "zz", "", "zz"])}, 4)
    assert unknown_counts(out, encoder.layout)["country"] == (1, 2)


def test_hashing_is_identical_across_processes() -> None:
    tokens = ["pixel", "iphone", "ünïcode", "a" * 300]
    here = hash_buckets(np.array(tokens), 1_000_003, seed=7).tolist()
    script = (
        "import numpy as np; from model.vocabulary import hash_buckets; "
        f"print(hash_buckets(np.array({tokens!r}), 1_000_003, seed=7).tolist())"
    )
    for hash_seed in ("0", "12345"):  # Python's own hash() would differ between these
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert json.loads(result.stdout) == here
