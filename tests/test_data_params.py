"""Tests of birdclef.data.params: the acquire section is typed and every bad key or value is named."""

import pytest

from birdclef.data.params import AcquireParams


def test_defaults_and_overrides():
    assert AcquireParams.from_dict({}) == AcquireParams()
    p = AcquireParams.from_dict({"sources": ["train_audio", "xc"], "min_rating": 3, "class_filter": ["Aves"],
                                 "on_bad": "skip", "n_folds": 4})
    assert p.sources == ("train_audio", "xc") and p.min_rating == 3.0 and p.class_filter == ("Aves",)


def test_every_bad_key_and_value_is_named():
    with pytest.raises(ValueError) as err:
        AcquireParams.from_dict({"n_fold": 5, "on_bad": "ignore", "min_rating": 7, "workers": True,
                                 "sources": "train_audio"})
    message = str(err.value)
    for part in ("unknown key acquire.n_fold", "acquire.on_bad must be one of fail, skip",
                 "acquire.min_rating must be in [0, 5]", "acquire.workers must be int",
                 "acquire.sources must be a list"):
        assert part in message
