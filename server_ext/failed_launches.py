"""Kernels whose launch failed are forgotten before the server shuts its kernels down.

jupyter_client's MultiKernelManager keeps a kernel id in its `_pending_kernels` when the kernel's
start fails (it logs the error and never removes the id), and its `shutdown_all` then shuts that id
down with the rest; jupyter_server answers "Kernel does not exist" (an HTTPError) for it, the
gathered shutdown fails, and the server's stop never finishes: the process stays up after SIGTERM
or Ctrl-C until it is killed. A cellhop GPU kernel's launch fails far more often than a local
kernel's (no GPU within the launch timeout, stopped while queued, an image not built), so every
such failure would leave the server unable to stop. Before jupyter_server's kernel clean-up, the
ids of failed launches (their start finished, the kernel never became one of the manager's) are
dropped; nothing of them runs (the provisioner cleaned up when the launch failed).
"""

from __future__ import annotations


def forget_failed_launches(kernel_manager) -> list[str]:
    """Drop the ids of finished, failed kernel starts from `kernel_manager`; the ids dropped."""
    pending = getattr(kernel_manager, "_pending_kernels", None)
    kernels = getattr(kernel_manager, "_kernels", None)
    if not isinstance(pending, dict) or not isinstance(kernels, dict):
        return []
    failed = [kid for kid, task in list(pending.items())
              if kid not in kernels and callable(getattr(task, "done", None)) and task.done()]
    for kid in failed:
        pending.pop(kid, None)
    return failed
