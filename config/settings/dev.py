"""Local development: the development secret key is allowed; DEBUG still needs DEBUG=true."""

from config.settings.base import *  # noqa: F403
