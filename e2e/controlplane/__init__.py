"""Local Kubernetes control plane (etcd + kube-apiserver) for the e2e tier."""

from .cluster import BUILD_HINT, ControlPlane, ControlPlaneError, bin_dir, missing_binaries, write_kubeconfig

__all__ = ["BUILD_HINT", "ControlPlane", "ControlPlaneError", "bin_dir", "missing_binaries", "write_kubeconfig"]
