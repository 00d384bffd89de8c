"""Vertebral body sizes and shapes of the synthetic cohort: intact, wedge, biconcave, crush.

A body is an elliptic cylinder (semi-axes ``a`` antero-posterior, ``b`` left-right) whose
height varies along its own antero-posterior axis only. The height profile passes through the
three true heights at the morphometry stations, 10 %, 50 % and 90 % of the AP depth behind the
anterior margin (``ha``, ``hm``, ``hp``): a straight line from ``ha`` to ``hp`` (wedge, crush,
intact) minus a smooth central depression for a biconcave body. Both end plates move by the
same amount, so the body stays mirror-symmetric about its mid-plane and its own axes are
well defined. docs/synthetic.md lists the numbers; every one not cited is an assumption.

The true Genant grade is computed here from the true height loss, independently of
:mod:`refracture.imaging.morphometry`, so the tests compare two implementations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BODY_MM",
    "DEFORMITY_P",
    "DRAWN_LEVELS",
    "HEIGHT_LOSS_ACUTE",
    "HEIGHT_LOSS_OLD",
    "STATIONS",
    "BodyShape",
    "draw_patient_shapes",
    "true_genant",
    "wedge_angle_deg",
]

# Vertebral body size by level (mm): height, AP depth, LR width, growing caudally
# (Panjabi 1991/1992 morphometry, rounded); T9 and S1 are drawn at the edges, unlabelled.
BODY_MM = {
    "T9": (20.5, 27.0, 34.0),
    "T10": (21.0, 28.0, 36.0),
    "T11": (22.0, 29.0, 38.0),
    "T12": (23.5, 30.0, 40.0),
    "L1": (25.0, 32.0, 42.0),
    "L2": (26.0, 33.0, 45.0),
    "L3": (27.0, 34.0, 47.0),
    "L4": (27.0, 35.0, 49.0),
    "L5": (26.0, 35.0, 50.0),
    "S1": (24.0, 34.0, 50.0),
}
DRAWN_LEVELS = ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
MALE_SIZE = 1.08  # men have larger vertebrae: assumption
BODY_SIZE_SD = 0.04  # patient-to-patient scale of all bodies, relative: assumption
# Sagittal pitch of the whole spine against the scanner axes (patients lie curved and tilted):
# N(0, 4 degrees), assumption. Each body is also tilted along the thoraco-lumbar curve.
PITCH_SD_DEG = 4.0
# Morphometry stations: fractions of the AP depth behind the anterior margin (a, m, p).
STATIONS = (0.10, 0.50, 0.90)
# Deformity type of a fractured vertebra. Wedge deformities are commonly reported as the most
# frequent osteoporotic deformity (e.g. Ismail 1999, EPOS); shares: assumption.
DEFORMITY_P = {"wedge": 0.50, "biconcave": 0.30, "crush": 0.20}
# Height loss of the most deformed station against the intact body, uniform: assumption
# (an old fracture visible on imaging is a Genant grade 1 or worse).
HEIGHT_LOSS_ACUTE = (0.15, 0.50)
HEIGHT_LOSS_OLD = (0.20, 0.40)
# Crush: the posterior height loses this share of the anterior loss (uniform): assumption.
CRUSH_POSTERIOR_SHARE = (0.75, 1.0)
# Genant 1993 semi-quantitative grades: < 20 % loss grade 0, 20-25 % grade 1, 25-40 % grade 2,
# > 40 % grade 3 (exactly 40 % is grade 2).
GENANT_THRESHOLDS_PCT = (20.0, 25.0, 40.0)
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(64)


def true_genant(loss_pct: float) -> int:
    """Genant grade (0-3) of a height loss in percent."""
    lo, mid, hi = GENANT_THRESHOLDS_PCT
    if loss_pct > hi:
        return 3
    if loss_pct >= mid:
        return 2
    if loss_pct >= lo:
        return 1
    return 0


@dataclass(frozen=True)
class BodyShape:
    """The true shape of one vertebral body (mm).

    ``h0`` is the intact height (the level's size times the patient's scale); ``ha``, ``hm``,
    ``hp`` the heights at the three stations; ``a``, ``b`` the AP and LR semi-axes.
    """

    level: str
    kind: str  # intact | wedge | biconcave | crush
    h0: float
    ha: float
    hm: float
    hp: float
    a: float
    b: float

    @property
    def loss_pct(self) -> float:
        """Largest height loss of the three stations against the intact height, in percent."""
        return 100.0 * (1.0 - min(self.ha, self.hm, self.hp) / self.h0)

    @property
    def genant(self) -> int:
        return true_genant(self.loss_pct)

    def height(self, u: np.ndarray) -> np.ndarray:
        """Body height at AP position ``u`` (mm from the centre, + posterior)."""
        s = (STATIONS[2] - STATIONS[1]) * 2 * self.a  # centre to the a/p stations: 0.8 a
        line = self.ha + (self.hp - self.ha) * (u + s) / (2 * s)
        depth = (self.ha + self.hp) / 2 - self.hm  # > 0: biconcave
        if depth == 0:
            return line
        bowl = np.where(np.abs(u) < s, np.cos(np.pi * u / (2 * s)) ** 2, 0.0)
        return line - depth * bowl

    @property
    def max_height(self) -> float:
        """Tallest point of the body (at a margin or the centre): sets the spacing of the stack."""
        return float(np.max(self.height(np.array([-self.a, 0.0, self.a]))))

    @property
    def min_height(self) -> float:
        return float(np.min(self.height(np.linspace(-self.a, self.a, 201))))

    def volume_ml(self) -> float:
        """Volume of the body: the height profile integrated over the elliptic cross-section.

        The straight part integrates to the cross-section area times the centre height; the
        biconcave bowl (inside the stations, where the section's width is smooth) by
        Gauss-Legendre quadrature.
        """
        s = (STATIONS[2] - STATIONS[1]) * 2 * self.a
        volume = math.pi * self.a * self.b * (self.ha + self.hp) / 2
        depth = (self.ha + self.hp) / 2 - self.hm
        if depth:
            x, w = _GAUSS_LEGENDRE
            u = s * x
            chord = 2 * self.b * np.sqrt(1 - (u / self.a) ** 2)
            volume -= depth * s * float(np.sum(w * np.cos(np.pi * u / (2 * s)) ** 2 * chord))
        return volume / 1000.0


def _shape(level: str, size: float, kind: str, loss: float, crush_share: float) -> BodyShape:
    h0_, depth, width = BODY_MM[level]
    h0 = h0_ * size
    ha = hm = hp = h0
    if kind == "wedge":
        ha = h0 * (1 - loss)
        hm = (ha + hp) / 2
    elif kind == "biconcave":
        hm = h0 * (1 - loss)
    elif kind == "crush":
        ha = h0 * (1 - loss)
        hp = h0 * (1 - loss * crush_share)
        hm = (ha + hp) / 2
    return BodyShape(level, kind, h0, ha, hm, hp, depth / 2 * size, width / 2 * size)


def draw_patient_shapes(
    rng: np.random.Generator,
    n: int,
    male: np.ndarray,
    acute: list[list[str]],
    old: list[list[str]],
    levels: list[str],
) -> tuple[np.ndarray, np.ndarray, list[dict[str, BodyShape]]]:
    """Body scale, spine pitch (degrees) and the body shapes of ``n`` patients.

    Every patient consumes the same number of draws, so one patient's shapes do not depend on
    another's fractures. ``levels`` are the drawn levels (the labelled ones and the edge
    vertebrae above and below them).
    """
    size = np.where(male, MALE_SIZE, 1.0) * rng.normal(1.0, BODY_SIZE_SD, n)
    pitch = rng.normal(0.0, PITCH_SD_DEG, n)
    kinds = list(DEFORMITY_P)
    kind_draw = rng.choice(len(kinds), size=(n, len(levels)), p=list(DEFORMITY_P.values()))
    loss_u = rng.random((n, len(levels)))
    crush_share = rng.uniform(*CRUSH_POSTERIOR_SHARE, size=(n, len(levels)))
    shapes = []
    for i in range(n):
        out = {}
        for j, lv in enumerate(levels):
            if lv in acute[i]:
                lo, hi = HEIGHT_LOSS_ACUTE
            elif lv in old[i]:
                lo, hi = HEIGHT_LOSS_OLD
            else:
                out[lv] = _shape(lv, float(size[i]), "intact", 0.0, 1.0)
                continue
            loss = lo + (hi - lo) * float(loss_u[i, j])
            kind = kinds[int(kind_draw[i, j])]
            out[lv] = _shape(lv, float(size[i]), kind, loss, float(crush_share[i, j]))
        shapes.append(out)
    return size, pitch, shapes


def wedge_angle_deg(shape: BodyShape) -> float:
    """Angle between the end plates from the anterior and posterior station heights."""
    span = (STATIONS[2] - STATIONS[0]) * 2 * shape.a
    return math.degrees(math.atan2(shape.hp - shape.ha, span))
