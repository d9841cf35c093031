"""``from bastion import sdk`` inside the sandbox: the same module as ``bastion_sdk``."""

from bastion_sdk import *  # noqa: F401,F403
from bastion_sdk import __all__  # noqa: F401
