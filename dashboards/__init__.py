"""coverwatch dashboards (see dashboards/README.md)."""
