"""Bastion's first-party data pack (skills are data: this package is never imported by Bastion)."""
