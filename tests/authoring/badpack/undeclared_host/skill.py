"""Calls a host that is not in its [permissions] network."""

from bastion_sdk import http


def run() -> dict[str, int]:
    """Fetch the status of an undeclared host."""
    return {"status": http.get("https://undeclared.example/").status}
