import pytest

from pipeline.curate.language import foreign_language, normalise_text, script_problem


@pytest.mark.parametrize("text, expected, found", [
    ("A happy rock song with the drums and the bass.", "de", "en"),
    ("Ein fröhlicher Rock-Song mit dem Bass und der Gitarre.", "de", None),
    ("Ein ruhiges Stück mit dem Klavier.", "en", "de"),
    ("Un morceau calme avec le piano et la guitare.", "en", "fr"),
    # shares "a" and "as" with Portuguese, but has English words: not foreign
    ("A calming blues tune with drums, as well as a delicate guitar.", "en", None),
    ("Rock.", "de", None),                  # too little to tell
    ("A rock song.", "ja", None),            # no word list to compare with
])
def test_foreign_language(text, expected, found):
    assert foreign_language(text, expected) == found


def test_script_problem_names_the_confusable():
    assert script_problem("A rосk song", "en") == "contains 'о' (CYRILLIC SMALL LETTER O)"
    assert script_problem("Un café très doux", "fr") is None   # accents are Latin
    assert script_problem("ロックの曲", "ja") is None


def test_normalised_text_ignores_case_punctuation_articles_and_width():
    assert normalise_text("A Happy  ROCK song, with the drums!") == \
        normalise_text("happy rock song with drums") == "happy rock song drums"
    assert normalise_text("Ｒｏｃｋ") == "rock"  # full-width letters fold (NFKC)
