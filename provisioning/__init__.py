"""Server-side deployment tools: secrets for the stack, probe credentials and ACLs."""
