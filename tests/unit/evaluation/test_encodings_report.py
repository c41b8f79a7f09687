"""``brainseg encodings``' table: changes against the same models' 8-bit files and against a reference's."""
from __future__ import annotations

import pytest

from brainseg.evaluation.encodings import reference_dice, report

FLAIR_U8, FLAIR_I16 = "FLAIR, uint8 NIfTI", "FLAIR, int16 NIfTI (x16 + 100)"
FOUR_D_U8, FOUR_D_I16 = "three sequences, 4D uint8 NIfTI", "three sequences, 4D int16 NIfTI (x16)"
PER_PATIENT = {FLAIR_U8: {"a": (0, 20, 0.80), "b": (1, 30, 0.60)},
               FLAIR_I16: {"a": (0, 20, 0.78), "b": (0, 30, 0.64)},
               FOUR_D_U8: {"a": (0, 20, 0.90), "b": (0, 30, 0.70)},
               FOUR_D_I16: {"a": (2, 20, 0.90), "b": (0, 30, 0.60)}}


def test_changes_are_against_the_same_patients_8_bit_file() -> None:
    rows = report(PER_PATIENT)
    assert rows[FLAIR_I16]["dice_mean_change"] == pytest.approx(0.01)
    assert rows[FLAIR_I16]["worst_patient"] == {"patient": "a", "dice_change": pytest.approx(-0.02)}
    assert rows[FOUR_D_I16]["worst_patient"] == {"patient": "b", "dice_change": pytest.approx(-0.10)}
    assert rows[FOUR_D_I16]["flagged_share"] == pytest.approx(2 / 50)
    assert "vs_reference" not in rows[FLAIR_I16]


def test_a_reference_adds_changes_against_its_8_bit_figures() -> None:
    earlier = {FLAIR_U8: {"a": 0.70, "b": 0.70}, FOUR_D_U8: {"a": 0.95, "b": 0.70}}
    rows = report(PER_PATIENT, earlier)
    assert rows[FLAIR_I16]["vs_reference"]["dice_mean_change"] == pytest.approx(0.01)
    assert rows[FLAIR_I16]["vs_reference"]["worst_patient"] == {"patient": "b", "dice_change": pytest.approx(-0.06)}
    assert rows[FOUR_D_U8]["vs_reference"]["worst_patient"]["patient"] == "a"
    assert rows[FLAIR_I16]["dice_mean_change"] == pytest.approx(0.01)          # the own comparison is unchanged


def test_the_reference_of_a_published_table_is_its_own_reference_or_its_8_bit_rows() -> None:
    published = {"encodings": report(PER_PATIENT)}
    assert reference_dice(published) == {FLAIR_U8: {"a": 0.80, "b": 0.60}, FOUR_D_U8: {"a": 0.90, "b": 0.70}}
    carried = {FLAIR_U8: {"a": 0.5, "b": 0.5}, FOUR_D_U8: {"a": 0.5, "b": 0.5}}
    assert reference_dice({**published, "reference": {"source": "x", "per_patient": carried}}) == carried
