"""The DialNexa webcall sales demo: a small branded site that mounts webcall exactly as a customer would."""

from .app import create_demo_app

__all__ = ["create_demo_app"]
