"""`chexops ui`: the MLflow UI on the project's own tracking store, opened on the study's saved view."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser

import click

from chexops.errors import TrackingError
from chexops.naming import PARAMS_FILE

START_S = 120


@click.command("ui")
@click.option("--params", "params_path", default=PARAMS_FILE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--open/--no-open", "open_browser", default=True, show_default=True,
              help="Open the study view in the default browser once the server answers.")
def ui_command(params_path: str, host: str, port: int, open_browser: bool) -> None:
    """Start the MLflow UI on the study's tracking store (params.yaml's tracking.uri, or MLFLOW_TRACKING_URI) and
    print (and open) the study view: one row per configuration, best test AUROC first. Ctrl-C stops it."""
    from chexops.config import load_config, validate
    from chexops.tracking.presentation import study_view_path, ui_server_command
    from chexops.tracking.store import open_client, tracking_uri

    config = validate(load_config(params_path))
    uri = tracking_uri(params_path)
    experiment = open_client(uri).get_experiment_by_name(config.experiment)
    base = f"http://{host}:{port}"
    url = f"{base}/{study_view_path(experiment.experiment_id)}" if experiment else f"{base}/"
    command, env = ui_server_command(uri, host, port)
    server = subprocess.Popen(command, env=env)
    try:
        _wait_healthy(base, server)
        where = "the study view" if experiment else f"(no experiment {config.experiment!r} yet: run the study first)"
        click.echo(f"MLflow UI on {uri}\n{where}: {url}\nCtrl-C stops the server.")
        if open_browser:
            webbrowser.open(url)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def _wait_healthy(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise TrackingError(f"the MLflow server exited with code {server.returncode} (its output is above); "
                                "is the port taken? Pass --port.")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise TrackingError(f"the MLflow server did not answer at {base} within {START_S} s.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ui_command())
