"""The ``bastion`` package as a skill sees it inside the sandbox: only ``bastion.sdk``."""
