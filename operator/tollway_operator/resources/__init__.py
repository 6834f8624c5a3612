"""One module per custom resource kind: each turns its CR documents into its part of the config."""
