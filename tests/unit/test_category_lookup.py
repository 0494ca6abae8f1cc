"""allowed_categories against a learned, free-form vocabulary (use_cases/recommendation/convert.py)."""

from __future__ import annotations

import unicodedata

from decision_service.use_cases.recommendation.convert import category_lookup


def test_kind_normalization_skew_a_case_folded_request_finds_a_mixed_case_vocabulary() -> None:
    """The edge used to case-fold the request and compare it with the vocabulary as learned:
    with ``Drama`` in the catalog, no spelling of it could be asked for."""
    find = category_lookup(("Drama", "Comedy", "Bücher", "jeux vidéo"))
    assert find("Drama") == 0 and find("drama") == 0 and find("DRAMA") == 0
    assert find("bücher") == 2 and find("BÜCHER") == 2
    decomposed = unicodedata.normalize("NFD", "jeux vidéo")
    assert decomposed != "jeux vidéo" and find(decomposed) == 3  # NFC on both sides
    assert find("books") is None and find("") is None


def test_names_that_differ_only_in_case_need_the_exact_spelling() -> None:
    find = category_lookup(("Apple", "apple", "Pear"))
    assert find("Apple") == 0 and find("apple") == 1
    assert find("APPLE") is None  # ambiguous: never a silent pick
    assert find("pear") == 2
