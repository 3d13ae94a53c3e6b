"""The regime model as a standard MLflow ``python_function`` model.

The fitted ``RegimeModel`` is a pickled artifact (``artifacts/regime_model.pkl``)
that the platform's serving loads directly, without importing MLflow; this small
wrapper lets MLflow's own tools (``mlflow.pyfunc.load_model``, ``mlflow models
serve``) serve the same artifact: a frame of the inputs in, filtered regime
probabilities out. This file is logged as the model's code (MLflow's "models from
code") and the model is pickled by value (see ``tracking.py``), so MLflow can load
it where ``trading_platform`` is not installed. It imports nothing of the platform.
Imported only when a regime model is logged or loaded by MLflow.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd

ARTIFACT = "regime_model"


class RegimePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import cloudpickle

        with open(context.artifacts[ARTIFACT], "rb") as f:
            self.model = cloudpickle.load(f)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        X = model_input[list(self.model.feature_names)].to_numpy(dtype=float)
        return pd.DataFrame(self.model.filtered_proba(X), columns=list(self.model.regime_names))


mlflow.models.set_model(RegimePyfunc())
