"""Tollway operator: compiles the tollway.dev CRDs into the data plane's config and reports status."""
