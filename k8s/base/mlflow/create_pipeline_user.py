"""Create or update the MLflow user that the pipeline runs as (Job mlflow-pipeline-user).

Idempotent: creates the user when it is missing and otherwise sets its password, so re-running the Job after
rotating Secret isnetflow-mlflow-credentials rotates the password in MLflow too. The pipeline user is a
normal user, never an admin: it owns (MANAGE) the experiments and registered models it creates and reads
the rest (default_permission = READ).

Environment (each secret as NAME, or as NAME_FILE naming a file from a mounted Secret, which wins):
  MLFLOW_TRACKING_URI         the MLflow server (ConfigMap isnetflow-config)
  MLFLOW_AUTH_ADMIN_USERNAME  admin user (ConfigMap mlflow-server-config)
  MLFLOW_AUTH_ADMIN_PASSWORD  admin password (Secret isnetflow-mlflow-admin)
  PIPELINE_USERNAME           Secret isnetflow-mlflow-credentials, key MLFLOW_TRACKING_USERNAME
  PIPELINE_PASSWORD           Secret isnetflow-mlflow-credentials, key MLFLOW_TRACKING_PASSWORD
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient


def secret(name: str) -> str:
    """``name`` read from the file that ``<name>_FILE`` points to (a mounted Secret), else from ``name``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().rstrip("\r\n")
    return os.environ[name]


def ensure_pipeline_user(tracking_uri: str, admin: tuple[str, str], pipeline: tuple[str, str]) -> str:
    """Create the pipeline user or reset its password; returns "created" or "updated"."""
    username, password = pipeline
    if not username or not password:
        raise ValueError("the pipeline user name and password must be non-empty")
    if username == admin[0]:
        raise ValueError("the pipeline must not run as the MLflow admin: use a separate user")
    # AuthServiceClient authenticates with MLFLOW_TRACKING_USERNAME/PASSWORD: act as the admin.
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = admin
    client = AuthServiceClient(tracking_uri)
    try:
        user = client.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        return "created"
    client.update_user_password(username, password)
    if user.is_admin:  # someone promoted it by hand: the pipeline keeps least privilege
        client.update_user_admin(username, False)
    return "updated"


def main() -> int:
    username = secret("PIPELINE_USERNAME")
    result = ensure_pipeline_user(
        os.environ["MLFLOW_TRACKING_URI"],
        (os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], secret("MLFLOW_AUTH_ADMIN_PASSWORD")),
        (username, secret("PIPELINE_PASSWORD")),
    )
    print(f"MLflow pipeline user {username!r}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
