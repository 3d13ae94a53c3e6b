"""The TCN pattern detector as an MLflow ``python_function`` model (logged as code, "models from
code"): one window of candles (``open, high, low, close``) in, the 17 class probabilities out.
Loading needs ``trading_platform`` installed (the network is the platform's); the platform's own
serving loads the saved network directly, without MLflow. Imported only when MLflow logs or
loads the model."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class TCNPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from trading_platform.models.patterns import tcn

        self.model = tcn.load(context.artifacts["tcn"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        window = model_input[["open", "high", "low", "close"]].to_numpy(dtype=float)
        return pd.DataFrame(self.model.predict_proba([window]), columns=list(self.model.classes))


mlflow.models.set_model(TCNPyfunc())
