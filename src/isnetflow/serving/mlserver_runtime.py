"""The MLServer runtime that serves the champion under KServe (V2 protocol): mlserver-mlflow's, plus 400s.

KServe's MLflow model format is served by MLServer with ``mlserver_mlflow.MLflowRuntime``: it loads the
pyfunc model from ``MLSERVER_MODEL_URI`` (``/mnt/models``, where KServe's storage initializer put the
registered model's artifacts) and decodes V2 requests with the model's signature. This subclass changes
one thing: a request the model refuses (a tensor of the wrong shape or dtype, a payload that does not
decode into the signature's input) is the caller's mistake, so it gets ``400 Bad Request`` with the
reason (``"cxr-isnet: Shape of input (1, 1, 64, 64) does not match expected shape (-1, 1, 128, 128)."``),
where the stock runtime answers ``500`` with a traceback and the whole array in the message.

``k8s/serving/servingruntime.yaml`` names this class in ``MLSERVER_MODEL_IMPLEMENTATION`` (a
ServingRuntime applied from an earlier manifest names its old path, which stays an alias:
:mod:`isnetflow.registry.mlserver_runtime`); the image is the project's (``pip install
isnetflow[serving]``), because the pyfunc needs isnetflow and torch. This module imports MLServer, so
only MLServer imports it.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime
from mlserver_mlflow.codecs import TensorDictCodec

__all__ = ["CXRMLflowRuntime", "request_error"]

_INVALID = ErrorCode.Name(INVALID_PARAMETER_VALUE)


def request_error(model: str, exc: Exception) -> str:
    """One line for the caller: the reason MLflow gives after its ``Error:`` (not the array it quotes)."""
    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    reason = text.rpartition("Error: ")[2] if "Error: " in text else text
    return f"{model}: {' '.join(reason.split())[:500]}"


class CXRMLflowRuntime(MLflowRuntime):
    """``mlserver_mlflow.MLflowRuntime`` answering 400 for requests the model's signature refuses.

    The steps are the parent's (decode with the signature, ``pyfunc.predict`` with the request's
    parameters, encode); only a failure to decode, or MLflow's schema enforcement refusing the input,
    becomes a 400. Any other error stays a server error.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Answer one inference request; input that cannot be decoded or is refused becomes a 400."""
        try:
            decoded = self.decode_request(payload)
        except (ValueError, TypeError, KeyError) as exc:
            raise MLServerError(request_error(self.name, exc), status_code=400) from exc
        params = payload.parameters.model_extra if payload.parameters else None
        try:
            output = self._model.predict(decoded, params=params or None)
        except MlflowException as exc:
            if exc.error_code != _INVALID:
                raise
            raise MLServerError(request_error(self.name, exc), status_code=400) from exc
        return self.encode_response(output, default_codec=TensorDictCodec)
