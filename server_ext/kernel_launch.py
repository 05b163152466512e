"""Kernels started by a cellhop-enabled server find its control plane and load cellhop on their own.

The server's kernel manager class is extended (whatever it is configured to
be) so that each kernel it starts gets CELLHOP_CONTROL_URL and a
CELLHOP_CONTROL_TOKEN of its own in its environment (kernels only, not
terminals) and, for IPython kernels, `--ext=cellhop` on its command line.
The token is made from the server's key for that kernel's id
(kernel_tokens.token_for): good on the cellhop API only, and it tells the API
which kernel calls, so a kernel cannot act as another.
"""

from __future__ import annotations

import os
import uuid

from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV
from .kernel_tokens import token_for


class _KernelLaunchHooks:
    cellhop_env: dict[str, str] = {}
    cellhop_key: str = ""  # the server's key for kernel tokens (never in a kernel's environment)

    def _runs_ipykernel(self) -> bool:
        spec = getattr(self, "kernel_spec", None)
        argv = getattr(spec, "argv", None) or []
        return getattr(spec, "language", "").lower() == "python" and any("ipykernel" in a for a in argv)

    async def _async_pre_start_kernel(self, **kw):
        # The id jupyter_client would give the kernel (a restart keeps it, and so its token).
        kernel_id = getattr(self, "kernel_id", None) or kw.get("kernel_id") or str(uuid.uuid4())
        kw["kernel_id"] = kernel_id
        env = dict(kw.get("env") or os.environ)
        env.update(self.cellhop_env)
        env[CONTROL_TOKEN_ENV] = token_for(self.cellhop_key, kernel_id)
        kw["env"] = env
        if self._runs_ipykernel():
            extra = list(kw.get("extra_arguments") or [])
            if "--ext=cellhop" not in extra:
                extra.append("--ext=cellhop")
            kw["extra_arguments"] = extra
        return await super()._async_pre_start_kernel(**kw)

    pre_start_kernel = _async_pre_start_kernel


def install_kernel_hooks(multi_kernel_manager, control_url: str, key: str) -> None:
    """Make `multi_kernel_manager` start its kernels with the control plane's address and a token of
    their own, made with `key` (kernel_tokens)."""
    from traitlets.utils.importstring import import_item

    base = import_item(multi_kernel_manager.kernel_manager_class)
    hooked = type(f"Cellhop{base.__name__}", (_KernelLaunchHooks, base),
                  {"cellhop_env": {CONTROL_URL_ENV: control_url}, "cellhop_key": key})
    original = multi_kernel_manager.kernel_manager_factory

    def create_kernel_manager(*args, **kwargs):
        if getattr(multi_kernel_manager, "shared_context", False):
            if multi_kernel_manager.context.closed:
                multi_kernel_manager.context = multi_kernel_manager._context_default()
            kwargs.setdefault("context", multi_kernel_manager.context)
        return hooked(*args, **kwargs)

    create_kernel_manager.original = original
    multi_kernel_manager.kernel_manager_factory = create_kernel_manager
