"""A whole GPU kernel from a kernelspec that names an image, a volume and a secret, started through a
real cellhop server's kernel manager (POST /api/kernels): inside, the image's variable, the volume's
file and the secret's variable are there (the secret shown reversed: the
kernel masks its value in outputs). Then its container is SIGKILLed (a crash): the server's
restarter brings the kernel back in a new container holding the GPU, and it runs cells again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_provisioner_server import (  # noqa: F401  (pytest fixtures, used by name)
    client_of, container_of, control_plane, jp_server_config, kernels, notebook_dir, run, server_extra, wait_for)

from cellhop.image_spec import Image
from cellhop.server_ext.kernelspecs import write_kernelspec

pytestmark = pytest.mark.timeout(180)

PROBE = ("import os\nprint(os.environ.get('KS_FROM_IMAGE'), open('/data/hello.txt').read(), "
         "os.environ.get('KS_TOKEN', '')[::-1], os.environ['CELLHOP_CONTAINER_ID'], sep='|')")


async def test_a_kernelspec_with_image_volume_and_secret_launches_and_comes_back_after_a_crash(
        kernels, jp_serverapp, control_plane, jp_kernel_dir, notebook_dir):  # noqa: F811
    control_plane.images.build(Image.current().env({"KS_FROM_IMAGE": "from-the-image"}).named("ks-env").to_json())
    control_plane.volumes.create("ksvol")
    control_plane.volumes.put("ksvol", "hello.txt", b"from-the-volume")
    control_plane.manager.storage.secrets.create("kssecret", {"KS_TOKEN": "from-the-secret"})
    write_kernelspec(Path(jp_kernel_dir) / "cellhop-full", "A10G", image="ks-env", volumes=["ksvol:/data"],
                     secrets=["kssecret"])

    kid = await kernels("cellhop-full", "work/nb/full.ipynb")
    [first] = container_of(control_plane, kid[:8])
    kc = await client_of(jp_serverapp, kid)
    content, out = await run(kc, PROBE)
    assert content["status"] == "ok", content
    assert out.strip().split("|") == ["from-the-image", "from-the-volume", "terces-eht-morf", first.id]
    kc.stop_channels()

    # a crash: the container's kernel (and with it the container) killed outright
    os.kill(control_plane.manager.runtime._kernel_pid(first), signal.SIGKILL)
    await wait_for(lambda: [c for c in container_of(control_plane, kid[:8])
                            if c.id != first.id and c.phase.value == "ready"],
                   timeout=90, what="the kernel to come back in a new container")
    [second] = [c for c in container_of(control_plane, kid[:8]) if c.phase.value == "ready"]
    assert second.id != first.id and [g.type for g in second.gpus] == ["A10G"]
    kc = await client_of(jp_serverapp, kid)
    content, out = await run(kc, PROBE)
    assert content["status"] == "ok", content
    assert out.strip().split("|") == ["from-the-image", "from-the-volume", "terces-eht-morf", second.id]
    kc.stop_channels()
