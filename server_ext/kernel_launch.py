"""Kernels started by a cellhop-enabled server find its control plane and load cellhop on their own.

The server's kernel manager class is extended (whatever it is configured to
be) so that each kernel it starts gets CELLHOP_CONTROL_URL and the scoped
CELLHOP_CONTROL_TOKEN in its environment (kernels only, not terminals) and,
for IPython kernels, `--ext=cellhop` on its command line.
"""

from __future__ import annotations

import os

from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV


class _KernelLaunchHooks:
    cellhop_env: dict[str, str] = {}

    def _runs_ipykernel(self) -> bool:
        spec = getattr(self, "kernel_spec", None)
        argv = getattr(spec, "argv", None) or []
        return getattr(spec, "language", "").lower() == "python" and any("ipykernel" in a for a in argv)

    async def _async_pre_start_kernel(self, **kw):
        env = dict(kw.get("env") or os.environ)
        env.update(self.cellhop_env)
        kw["env"] = env
        if self._runs_ipykernel():
            extra = list(kw.get("extra_arguments") or [])
            if "--ext=cellhop" not in extra:
                extra.append("--ext=cellhop")
            kw["extra_arguments"] = extra
        return await super()._async_pre_start_kernel(**kw)

    pre_start_kernel = _async_pre_start_kernel


def install_kernel_hooks(multi_kernel_manager, control_url: str, token: str) -> None:
    """Make `multi_kernel_manager` start its kernels with the control plane's address and token."""
    from traitlets.utils.importstring import import_item

    base = import_item(multi_kernel_manager.kernel_manager_class)
    hooked = type(f"Cellhop{base.__name__}", (_KernelLaunchHooks, base),
                  {"cellhop_env": {CONTROL_URL_ENV: control_url, CONTROL_TOKEN_ENV: token}})
    original = multi_kernel_manager.kernel_manager_factory

    def create_kernel_manager(*args, **kwargs):
        if getattr(multi_kernel_manager, "shared_context", False):
            if multi_kernel_manager.context.closed:
                multi_kernel_manager.context = multi_kernel_manager._context_default()
            kwargs.setdefault("context", multi_kernel_manager.context)
        return hooked(*args, **kwargs)

    create_kernel_manager.original = original
    multi_kernel_manager.kernel_manager_factory = create_kernel_manager
