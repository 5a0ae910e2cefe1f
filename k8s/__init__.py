"""CSGM jobs on Kubernetes: Volcano Jobs for Ascend clusters (rank table from Ascend Operator or
hccl-controller) or NVIDIA GPU nodes.

``python -m k8s render SPEC`` writes the manifests in this folder from a job spec;
``python -m k8s validate [PATH ...]`` checks manifests offline; ``python -m k8s submit | status |
logs | wait | delete`` drive the job on a cluster through the ``kubernetes`` client. See k8s/README.md.
"""
