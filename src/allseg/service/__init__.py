"""HTTP service and web page over one shared predictor (``allseg serve``).

Research use only: the service never gives a diagnosis.
"""

from allseg.service.app import app_from_env, create_app, serve

__all__ = ["app_from_env", "create_app", "serve"]
