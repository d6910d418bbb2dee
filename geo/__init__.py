"""coverwatch geo (see geo/README.md)."""
