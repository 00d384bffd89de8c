"""MLflow models-from-code entry point of every refracture model.

``refracture train`` logs this file with ``mlflow.pyfunc.log_model(python_model=<this file>)``;
MLflow runs it when the model is loaded and serves the object given to ``set_model``. The fitted
pipeline and its bundle (covariates, imaging features, extraction config, thresholds) are the
model's artifacts, read in ``RefractureModel.load_context``: nothing is cloudpickled.
"""

import mlflow

from refracture.scoring.pyfunc import RefractureModel

mlflow.models.set_model(RefractureModel())
