"""The lab's Airflow plugin: the "CDC lab" page in the api-server and a link to it in the UI.

Registered under the ``airflow.plugins`` entry point (pyproject.toml), so every Airflow process of the
lab's environment finds it without a plugins folder. Every process imports this module (scheduler,
dag-processor, workers, the api-server), so it imports nothing heavy and connects to nothing: the page's
FastAPI app (:func:`cdclab.ops.labpage.create_app`) is built when the api-server asks the plugin for its
``fastapi_apps``, and its data is gathered per request.

- ``fastapi_apps``: the page, mounted by the api-server at ``/cdclab`` (``airflow/api_fastapi/app.py``,
  ``init_plugins``); the page requires an Airflow login.
- ``external_views``: the UI's navigation entry "CDC lab" (Airflow 3.1+); with ``url_route`` the UI shows
  the page inside its own frame at ``/plugin/cdclab``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.plugins_manager import AirflowPlugin

MOUNT = "/cdclab"  # the same as cdclab.ops.labpage.MOUNT, which this module does not import (cheap import)


class CdcLabPlugin(AirflowPlugin):
    name = "cdclab"
    external_views = [
        {
            "name": "CDC lab",
            "href": f"{MOUNT}/",
            "url_route": "cdclab",
            "destination": "nav",
            "category": "browse",
        }
    ]

    # a list attribute in AirflowPlugin; here a read-only property, so the app is built lazily
    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Built on first use (only the api-server asks), then kept."""
        apps = self.__dict__.get("_fastapi_apps")
        if apps is None:
            from cdclab.ops.labpage import create_app

            apps = [{"app": create_app(), "url_prefix": MOUNT, "name": "CDC lab"}]
            self.__dict__["_fastapi_apps"] = apps
        return apps
