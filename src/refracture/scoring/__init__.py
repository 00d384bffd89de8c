"""Scoring new patients with a registered model: model -> inputs -> rows -> checkpoint -> batch.

:func:`score` is ``refracture score``; :func:`~refracture.scoring.rows.predict_frame` is the one
function that turns inputs into scores (the registered pyfunc calls it too).
"""

from refracture.scoring.batch import ScoreResult, score
from refracture.scoring.model import ScoringModel, load_model
from refracture.scoring.rows import output_columns, predict_frame, risk_column

__all__ = [
    "ScoreResult",
    "ScoringModel",
    "load_model",
    "output_columns",
    "predict_frame",
    "risk_column",
    "score",
]
