"""Kubernetes manifests for CSGM jobs on Ascend clusters (Volcano + hccl-controller).

``python -m k8s render SPEC`` writes the manifests in this folder from a job spec;
``python -m k8s validate [PATH ...]`` checks manifests offline. See k8s/README.md.
"""
