"""Bastion's first-party files pack (skills are data: this package is never imported by Bastion)."""
