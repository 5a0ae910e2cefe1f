"""TensorFlow's own multi-worker collectives (MultiWorkerMirroredStrategy), one replica per rank.

The cluster comes from the rank table: rank r listens on its server's address at ``port + r``.
TensorFlow's gRPC server binds the port on every interface whatever address TF_CONFIG gives (its
``GrpcServer::Init`` listens on "0.0.0.0:port"; no ServerDef field or cluster resolver changes that,
see launcher.netns), so ports must differ across the whole job for several loopback "servers" on
one machine to work; unique global ports cost nothing. A loopback CPU job's ranks run in a network
namespace of their own (launcher.netns).
On CPU the collectives run as a ring over gRPC; on GPU with NCCL.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, ContextManager, List, Mapping, Sequence

import tensorflow as tf

import rank_table
from csgm.backends import Backend


def cluster_addresses(table: rank_table.RankTable, port: int) -> List[str]:
    """Every rank's gRPC address, in rank order."""
    return [f"{server.server_id}:{port + device.rank_id}" for server in table.servers
            for device in server.devices]


class TFBackend(Backend):
    name = "tf"

    def __init__(self, addresses: Sequence[str], rank: int, device_type: str, timeout_s: float):
        # MultiWorkerMirroredStrategy reads the cluster from TF_CONFIG; the launcher scrubs any
        # inherited TF_CONFIG, so this process's value is the only one.
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": rank}})
        implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                          if device_type == "gpu" else tf.distribute.experimental.CommunicationImplementation.RING)
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=implementation, timeout_seconds=timeout_s)
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        self.rank, self.size = rank, len(addresses)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], device_type: str, port: int,
                         timeout_s: float) -> TFBackend:
        table = rank_table.load(environ["RANK_TABLE_FILE"])
        return cls(cluster_addresses(table, port), int(environ["RANK_ID"]), device_type, timeout_s)

    def scope(self) -> ContextManager[Any]:
        return self.strategy.scope()

    def run(self, step: Callable[..., tf.Tensor], *args: tf.Tensor) -> tf.Tensor:
        result = self.strategy.run(step, args=args)
        return self.strategy.experimental_local_results(result)[0]

    def all_reduce_mean(self, tensors: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        context = tf.distribute.get_replica_context()
        return list(context.all_reduce(tf.distribute.ReduceOp.MEAN, list(tensors)))

    def broadcast_variables(self, variables: Sequence[tf.Variable]) -> None:
        """Sum of rank 0's values and zeros from everyone else, written into every rank."""
        variables = list(variables)
        rank0 = self.rank == 0

        def replica() -> None:
            context = tf.distribute.get_replica_context()
            for dtype in sorted({v.dtype for v in variables}, key=lambda d: d.name):  # one reduce per dtype
                group = [v for v in variables if v.dtype == dtype]
                values = [v.read_value() if rank0 else tf.zeros_like(v.read_value()) for v in group]
                for v, value in zip(group, context.all_reduce(tf.distribute.ReduceOp.SUM, values)):
                    tf.raw_ops.AssignVariableOp(resource=v.handle, value=value)

        tf.function(lambda: self.strategy.run(replica))()
