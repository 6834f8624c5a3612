"""The Kubernetes API client both planes use."""
