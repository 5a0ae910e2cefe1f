"""EMULATED ``from npu_bridge.npu_init import *``: the names the project and Huawei's examples use."""

import os  # noqa: F401 (exported by the real module's star import)

import tensorflow as tf  # noqa: F401
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2  # noqa: F401
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig  # noqa: F401

from hccl.manage.api import get_local_rank_id, get_local_rank_size, get_rank_id, get_rank_size  # noqa: F401
from npu_bridge.estimator import npu_ops  # noqa: F401
from npu_bridge.estimator.npu import util  # noqa: F401
from npu_bridge.hccl import hccl_ops  # noqa: F401


def init_resource(config=None):
    """(session, shutdown op), as npu_init.init_resource: a session that has run initialize_system."""
    session = tf.compat.v1.Session(config=config)
    session.run(npu_ops.initialize_system())
    return session, npu_ops.shutdown_system()
