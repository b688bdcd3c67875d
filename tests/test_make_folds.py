import numpy as np
import pytest
from wormgnn.make_folds import lowo_folds, within_folds


def test_lowo_never_trains_on_the_test_worm():
    folds = lowo_folds({0: 100, 1: 120, 2: 90})
    assert [f["test_worms"] for f in folds] == [[0], [1], [2]]
    for f in folds:
        assert set(f["train_worms"]).isdisjoint(f["test_worms"])
        assert set(f["train"]) == {str(w) for w in f["train_worms"]}
    with pytest.raises(ValueError, match="at least 2 worms"):
        lowo_folds({0: 100})


def test_within_blocks_cover_each_worm_and_keep_the_gap():
    n_frames, fps = {0: 1000, 1: 907}, {0: 3.0, 1: 3.0}
    folds = within_folds(n_frames, fps, n_folds=4, gap_s=10.0)
    for w, n in n_frames.items():
        tested = np.zeros(n, dtype=int)
        for f in folds:
            ((start, stop),) = f["test"][str(w)]
            tested[start:stop] += 1
            train = np.zeros(n, dtype=bool)
            for a, b in f["train"][str(w)]:
                train[a:b] = True
            assert not train[max(0, start - 30) : stop + 30].any()  # 10 s gap at 3 fps
            assert train.sum() == n - (stop - start) - 30 * ((start > 0) + (stop < n))
        assert np.all(tested == 1)  # every frame tested exactly once


def test_within_without_room_for_training_is_an_error():
    with pytest.raises(ValueError, match="no training data.*gap"):
        within_folds({0: 100}, {0: 3.0}, n_folds=2, gap_s=60.0)
