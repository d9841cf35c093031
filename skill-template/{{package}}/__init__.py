"""The {{name}} Bastion skill pack. Bastion reads this folder as data and never imports it."""
