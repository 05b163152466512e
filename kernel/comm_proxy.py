"""Proxies in the notebook kernel for comms that live in a container (remote ipywidgets).

The container's comm_open/comm_msg reach the frontend through the output
relay untouched. The frontend answers the notebook kernel, whose comm
manager finds the proxy registered under the same comm id and forwards the
message to the container. So a slider made in a `%%remote` cell moves the
container's value, and a tqdm bar made there updates live.
"""

from __future__ import annotations

from comm.base_comm import BaseComm


class ProxyComm(BaseComm):
    def __init__(self, comm_id: str, target_name: str, session):
        self._session = session
        super().__init__(comm_id=comm_id, target_name=target_name, primary=False)
        self.on_msg(self._forward_msg)
        self.on_close(self._forward_close)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        """Never publishes itself: what the container sends is relayed as it is."""

    def _forward_msg(self, msg: dict) -> None:
        if not self._session.closed:
            self._session.forward("comm_msg", msg["content"], msg.get("buffers"), parent=msg)

    def _forward_close(self, msg: dict) -> None:
        if not self._session.closed:
            self._session.forward("comm_close", msg["content"], parent=msg)


class CommProxies:
    """The proxies of one notebook kernel, registered in its comm manager."""

    def __init__(self, manager):
        self.manager = manager
        self._by_session: dict[int, set[str]] = {}

    def open(self, content: dict, session) -> None:
        comm_id = content.get("comm_id")
        if not comm_id or comm_id in self.manager.comms:  # get_comm() would log "No such comm"
            return
        proxy = ProxyComm(comm_id, content.get("target_name", ""), session)
        self.manager.register_comm(proxy)
        self._by_session.setdefault(id(session), set()).add(comm_id)

    def closed_remotely(self, comm_id: str) -> None:
        comm = self.manager.comms.get(comm_id)
        if isinstance(comm, ProxyComm):
            self.manager.unregister_comm(comm)

    def drop(self, session) -> None:
        """The container is gone: its widgets can no longer answer."""
        for comm_id in self._by_session.pop(id(session), set()):
            self.closed_remotely(comm_id)
