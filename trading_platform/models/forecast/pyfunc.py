"""The NHITS forecaster as an MLflow ``python_function`` model (logged as code, "models from
code"): a frame of ``symbol, ts, close`` (and the model's historic exogenous columns) in, the
forecast rows at each series' latest origin out. Loading needs ``trading_platform`` installed
(the forecaster's frame handling is the platform's). The platform's own serving loads the
saved forecaster directly, without MLflow. Imported only when MLflow logs or loads the model."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class NHITSPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from trading_platform.models.forecast.nhits import Forecaster

        self.forecaster = Forecaster.load(context.artifacts["nhits"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from trading_platform.models.forecast.nhits import rows_frame

        return rows_frame(self.forecaster.forecast(model_input).rows, self.forecaster.cfg.quantiles)


mlflow.models.set_model(NHITSPyfunc())
