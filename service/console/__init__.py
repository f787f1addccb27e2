"""The web console at ``/ui``: experiments (live report, changes, audit trail) and loaded models.

Static pages (HTML, CSS and plain ES modules, no build step, nothing fetched from the internet) that call
the service's own JSON API; ``console_router`` serves them and one summary endpoint of its own.
"""

from service.console.routes import console_router, mount_console

__all__ = ["console_router", "mount_console"]
