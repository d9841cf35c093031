"""Bastion's first-party web pack (skills are data: this package is never imported by Bastion)."""
