"""The regime model as a standard MLflow ``python_function`` model.

The fitted ``RegimeModel`` is a pickled artifact (``artifacts/regime_model.pkl``)
that the platform's serving loads directly, without importing MLflow; this small
wrapper lets MLflow's own tools (``mlflow.pyfunc.load_model``, ``mlflow models
serve``) serve the same artifact: a frame of the inputs in, filtered regime
probabilities out. Imported only when a regime model is logged or loaded by MLflow.
"""

from __future__ import annotations

import mlflow.pyfunc

ARTIFACT = "regime_model"


class RegimePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import cloudpickle

        with open(context.artifacts[ARTIFACT], "rb") as f:
            self.model = cloudpickle.load(f)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from .regime import INPUTS, REGIMES

        X = model_input[list(INPUTS)].to_numpy(dtype=float)
        return pd.DataFrame(self.model.filtered_proba(X), columns=list(REGIMES))
