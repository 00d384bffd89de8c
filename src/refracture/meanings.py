"""What a clinical column means, whatever the study calls it: age, sex, BMI, T-score, ...

A hospital's table names its columns in its own words and language (``Alter``, ``edad``,
``IMC``, ``T-Wert``). A *role* is the meaning refracture knows (``age``: an age in years,
plausible 18 to 110); the config's ``covariates.roles`` maps each role to the study's column,
and ``refracture init`` recognises roles from the names (:func:`recognise`). The role gives
the plausible range that training and scoring check, the unit a cell may carry as a suffix
("27 kg/m2"), and the adjustment covariates of the biomarker analysis.

The word lists are hand-written (no library maps clinical column names across languages);
they are deliberately small and predictable, and a role is only taken when the column's
values fit it (:func:`recognise`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

__all__ = ["MEANINGS", "ROLES", "Meaning", "Role", "name_words", "recognise"]

#: The roles a config's ``covariates.roles`` may name.
Role = Literal[
    "age", "sex", "bmi", "tscore", "cement_volume", "n_fractured", "weight", "height"
]  # fmt: skip
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True)
class Meaning:
    """One role: how columns with this meaning are named and what their values may be.

    ``words`` are whole words of a column name (``Alter_Jahre`` -> alter, jahre),
    ``fragments`` pieces of the name with its separators removed (``Zementvolumen``);
    ``range`` the plausible values (None: not a number); ``units`` the unit suffixes a cell
    may carry, lower-case without spaces ("27 kg/m2").
    """

    role: str
    label: str
    words: tuple[str, ...]
    fragments: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    units: tuple[str, ...] = ()
    #: name words that say the column holds another unit or another thing (``age_months``)
    not_words: tuple[str, ...] = ()

    def named_by(self, name: str) -> bool:
        """True when the column name says this meaning."""
        words = name_words(name)
        if set(words) & set(self.not_words):
            return False
        if set(words) & set(self.words):
            return True
        joined = "".join(words)
        return any(f in joined for f in self.fragments)

    def fits(self, values: np.ndarray) -> bool:
        """True when nine in ten of the (finite) values lie in the plausible range."""
        if self.range is None:
            return True
        v = values[np.isfinite(values)]
        if not len(v):
            return False
        lo, hi = self.range
        return float(np.mean((v >= lo) & (v <= hi))) >= 0.9


MEANINGS: dict[str, Meaning] = {
    m.role: m
    for m in (
        Meaning(
            "age", "an age in years",
            ("age", "alter", "edad", "eta", "leeftijd", "idade", "wiek", "alder", "lebensalter"),
            ("lebensalter",), (18.0, 110.0),
            ("y", "yr", "yrs", "year", "years", "a", "j", "jahre", "ans", "anos", "anni", "jaar",
             "jaren", "lat"),
            ("month", "months", "monate", "mois", "meses", "days", "tage", "onset", "group"),
        ),
        Meaning(
            "sex", "sex (two values)",
            ("sex", "gender", "geschlecht", "sexe", "sexo", "sesso", "geslacht", "genre", "kon",
             "plec"),
        ),
        Meaning(
            "bmi", "a body-mass index in kg/m2", ("bmi", "imc", "kmi", "bmikgm2"),
            ("bodymassindex", "korpermasseindex", "koerpermasseindex", "indicedemasse",
             "indicedemasa"),
            (10.0, 70.0), ("kg/m2", "kg/m^2", "kgm2", "kg/qm"),
        ),
        Meaning(
            "tscore", "a bone-density T-score", ("tscore", "twert"), ("tscore", "twert"),
            (-8.0, 4.0), ("sd",),
        ),
        Meaning(
            "cement_volume", "a cement volume in ml",
            ("cement", "zement", "ciment", "cemento", "pmma"),
            ("cementvol", "zementvol", "cementvolume", "zementmenge"),
            (0.0, 40.0), ("ml", "cc", "cm3", "cm^3"),
        ),
        Meaning(
            "n_fractured", "a number of fractured vertebrae",
            ("nfractured", "nfractures", "nfract"),
            ("nfractured", "numberoffractures", "nfractures", "fracturecount", "anzahlfrakturen",
             "nvcf", "numfractures"),
            (0.0, 20.0),
        ),
        Meaning(
            "weight", "a body weight in kg",
            ("weight", "gewicht", "poids", "peso", "waga"), ("bodyweight", "korpergewicht"),
            (25.0, 250.0), ("kg",), ("loss", "change"),
        ),
        Meaning(
            "height", "a body height in cm",
            ("height", "grosse", "groesse", "taille", "altura", "altezza", "lengte"),
            ("bodyheight", "korpergrosse"), (100.0, 230.0), ("cm",),
            ("loss", "vertebral", "mm"),
        ),
    )
}  # fmt: skip
assert tuple(MEANINGS) == ROLES  # one list: the Literal above names the same roles


def _plain(text: str) -> str:
    """Lower case without accents: 'Größe' -> 'grosse', 'Âge' -> 'age', 'años' -> 'anos'."""
    text = str(text).replace("ß", "ss").replace("²", "2").replace("³", "3")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def name_words(name: str) -> list[str]:
    """The words of a column name: ``BMI (kg/m²)`` -> [bmi, kg, m2]; ``ageYears`` -> [age,
    years]; ``T-Wert`` -> [t, wert] is also read joined (``twert``) by the fragments."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    words = [w for w in re.split(r"[^a-z0-9]+", _plain(spaced)) if w]
    # 'T-Wert', 'T score': a lone letter joined to the next word is one word too
    joined = [a + b for a, b in zip(words, words[1:], strict=False) if len(a) == 1]
    return words + joined


def recognise(name: str, values: Sequence[float] | np.ndarray | None = None) -> Meaning | None:
    """The role a column's name says, when its values (if given) fit the role's range.

    A name that says two roles (``bmi_weight``) is taken by the first that fits its values.
    """
    arr = None if values is None else np.asarray(values, dtype=float)
    for meaning in MEANINGS.values():
        if meaning.named_by(name) and (arr is None or meaning.fits(arr)):
            return meaning
    return None
