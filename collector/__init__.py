"""coverwatch collector (see collector/README.md)."""
