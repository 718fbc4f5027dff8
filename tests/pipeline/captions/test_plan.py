from collections import Counter

import pytest

from pipeline.captions.plan import DropConfig, plan_views, possible_views

TAGS = {"genre": ("rock", "pop"), "mood": ("happy", "calm", "dark"),
        "instrument": ("drums", "bass", "piano", "flute")}


def test_views_are_balanced_distinct_and_non_empty():
    views = plan_views("t1", TAGS, DropConfig())
    assert len(views) == 10
    assert len({repr(v) for v in views}) == 10
    for view in views:
        for category, values in TAGS.items():
            assert 1 <= len(view[category]) <= len(values)
            assert set(view[category]) <= set(values)
            # order follows the catalog, so prompts are stable
            assert list(view[category]) == [v for v in values if v in view[category]]


def test_keep_probability_is_respected_on_average():
    tags = {"genre": tuple(f"g{i}" for i in range(10)), "mood": (), "instrument": ()}
    kept = [len(v["genre"]) for i in range(200)
            for v in plan_views(f"t{i}", tags, DropConfig(n_views=5, keep_prob=0.3))]
    assert 2.5 < sum(kept) / len(kept) < 3.6


def test_deterministic_and_independent_of_order_or_batch():
    config = DropConfig(seed=5)
    alone = plan_views("t7", TAGS, config)
    for other in ("t1", "t2", "t3"):  # planning other tracks first changes nothing
        plan_views(other, TAGS, config)
    assert plan_views("t7", TAGS, config) == alone
    assert plan_views("t7", TAGS, DropConfig(seed=6)) != alone
    assert plan_views("t8", TAGS, config) != alone


def test_track_with_one_tag_gets_one_view_unless_repeats_are_asked_for():
    tags = {"genre": ("rock",), "mood": (), "instrument": ()}
    assert plan_views("t", tags, DropConfig()) == [tags]
    assert plan_views("t", tags, DropConfig(repeat_views=True)) == [tags] * 10
    assert plan_views("t", tags, DropConfig(full_view=True)) == [tags]  # the full view only


def test_few_possible_subsets_give_one_view_each():
    tags = {"genre": ("rock",), "mood": (), "instrument": ("drums", "bass")}
    config = DropConfig(n_views=7)
    assert possible_views(tags, config) == 3
    views = plan_views("t", tags, config)
    assert len(views) == 3 and len({repr(v) for v in views}) == 3


def test_repeat_views_cycles_through_all_subsets():
    tags = {"genre": ("rock",), "mood": (), "instrument": ("drums", "bass")}
    views = plan_views("t", tags, DropConfig(n_views=7, repeat_views=True))
    assert len(views) == 7
    for start in (0, 3):
        assert len({repr(v) for v in views[start:start + 3]}) == 3
    assert Counter(repr(v) for v in views).most_common(1)[0][1] == 3
    # the distinct plan is the start of the repeating one
    assert plan_views("t", tags, DropConfig(n_views=7)) == views[:3]


def test_full_view_is_not_repeated_by_a_dropout_view():
    tags = {"genre": ("rock",), "mood": ("happy",), "instrument": ("drums", "bass")}
    full = dict(tags)
    assert possible_views(tags, DropConfig()) == 3  # one of them is the full set
    views = plan_views("t", tags, DropConfig(n_views=5, full_view=True))
    assert views[-1] == full and full not in views[:-1] and len(views) == 3


def test_sampled_tracks_stop_at_their_distinct_subsets():
    """Past the enumeration limit views are sampled; duplicates are skipped, not kept."""
    tags = {"genre": tuple(f"g{i}" for i in range(7)), "mood": (), "instrument": ()}
    assert possible_views(tags, DropConfig()) == 127
    views = plan_views("t", tags, DropConfig(n_views=300, keep_prob=0.9))
    assert 20 < len(views) <= 127 and len({repr(v) for v in views}) == len(views)
    repeated = plan_views("t", tags, DropConfig(n_views=300, keep_prob=0.9, repeat_views=True))
    assert len(repeated) == 300


def test_distinct_when_exactly_enough_subsets():
    tags = {"genre": ("a", "b"), "mood": ("c", "d"), "instrument": ()}  # 3 x 3 = 9
    views = plan_views("t", tags, DropConfig(n_views=9))
    assert len({repr(v) for v in views}) == 9


def test_min_per_category_zero_never_gives_an_empty_view():
    views = plan_views("t", TAGS, DropConfig(n_views=50, keep_prob=0.05, min_per_category=0))
    assert all(any(v.values()) for v in views)
    assert any(not v["genre"] for v in views)  # categories may now be dropped


def test_min_per_category_two():
    for view in plan_views("t", TAGS, DropConfig(min_per_category=2, keep_prob=0.1)):
        assert len(view["genre"]) == 2 and len(view["mood"]) >= 2


def test_full_view_is_added_last():
    views = plan_views("t", TAGS, DropConfig(n_views=3, full_view=True))
    assert len(views) == 4 and views[-1] == dict(TAGS)


def test_bad_settings_and_tagless_track():
    with pytest.raises(ValueError) as err:
        DropConfig(n_views=0, keep_prob=0, min_per_category=-1)
    assert all(w in str(err.value) for w in ("n_views", "keep_prob", "min_per_category"))
    with pytest.raises(ValueError, match="no tags"):
        plan_views("t", {"genre": ()}, DropConfig())


def test_keep_everything_means_one_view_of_every_tag():
    assert plan_views("t", TAGS, DropConfig(n_views=3, keep_prob=1.0)) == [dict(TAGS)]
    assert plan_views("t", TAGS, DropConfig(n_views=3, keep_prob=1.0, repeat_views=True)) \
        == [dict(TAGS)] * 3


def test_small_tag_sets_favour_likely_subsets():
    """Enumerated views are ordered by their chance under keep_prob: with a low keep
    probability the first view is usually a minimal one."""
    tags = {"genre": ("a", "b", "c"), "mood": (), "instrument": ()}
    firsts = [plan_views(f"t{i}", tags, DropConfig(n_views=1, keep_prob=0.1))[0]["genre"]
              for i in range(300)]
    assert sum(len(f) == 1 for f in firsts) > 0.7 * len(firsts)
