"""Median-frequency class weights read the masks through Subset and offline-KD wrappers (issue 10 found the crash)."""
from torch.utils.data import Subset

from slimcv.data import load_data
from slimcv.data.check import median_frequency_weights


class _Wrapped:
    """Stands in for CachedTeacherDataset: the real dataset as ``.base``, no ``load``."""

    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)


def test_weights_through_wrappers_match_the_plain_dataset():
    data = load_data({"spec": "synthetic-shapes", "options": {"size": 32, "length": 12}, "workers": 0})
    plain = median_frequency_weights(data.train, data.num_classes)
    assert median_frequency_weights(_Wrapped(data.train), data.num_classes) == plain
    assert median_frequency_weights(_Wrapped(Subset(data.train, list(range(12)))), data.num_classes) == plain
    part = median_frequency_weights(Subset(_Wrapped(data.train), [0, 1, 2]), data.num_classes)
    assert part == median_frequency_weights(Subset(data.train, [0, 1, 2]), data.num_classes)


def test_subsets_spread_over_the_split():
    from slimcv.data import spread

    assert spread(4, 40) == [0, 10, 20, 30]
    assert spread(50, 10) == list(range(10))
    # a split stored class by class (10 per class) keeps every class in a 10-sample subset
    assert sorted({i // 10 for i in spread(10, 100)}) == list(range(10))
