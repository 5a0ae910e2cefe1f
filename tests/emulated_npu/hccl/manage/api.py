"""EMULATED CANN hccl.manage.api: rank queries, valid only between initialize_system and shutdown_system."""

from npu_bridge import _session

WORLD = "hccl_world_group"


def _state(group: str, what: str) -> dict:
    if not isinstance(group, str) or not 0 < len(group) <= 127:
        raise ValueError("group name is illegal")
    state = _session.state
    if not state["initialized"]:
        raise ValueError(f"get {what} error. ret[5] (HCCL is not initialised: run "
                         "npu_ops.initialize_system() in a session first)")
    return state


def get_rank_id(group: str = WORLD) -> int:
    return _state(group, "rank id")["rank"]


def get_rank_size(group: str = WORLD) -> int:
    return _state(group, "rank size")["size"]


def get_local_rank_id(group: str = WORLD) -> int:
    return _state(group, "local rank id")["rank"]


def get_local_rank_size(group: str = WORLD) -> int:
    return _state(group, "local rank size")["size"]
