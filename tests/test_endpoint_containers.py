"""What an endpoint's containers hold beyond its code (issue 15): the volumes and stored secrets it names,
mounted and set in every container it starts, and an endpoint class's @cellhop.exit methods, run when its
container stops (here at scaledown). A session secret, which dies with its kernel, is refused at deploy:
an endpoint outlives the kernel. A real cellhop server, real kernel, real containers, real HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cellhop_settings(runtime_root):
    return {"state_dir": str(runtime_root / "state")}


DEPLOY = '''
import cellhop
vol = cellhop.Volume("weights")
vol.put(b"w=7", "model.txt")
cellhop.Secret.create("hf", {"HF_TOKEN": "hf_abcdefghijklmnop"}, replace=True)

@cellhop.endpoint(volumes={"/models": vol}, secrets=[cellhop.Secret("hf")], max_containers=1, scaledown=1)
class Model:
    @cellhop.enter
    def load(self):
        self.weights = open("/models/model.txt").read()

    @cellhop.exit
    def unload(self):
        print("unloading the model at scaledown", flush=True)

    def __call__(self, x):
        import os
        return {"weights": self.weights, "x": x, "token_length": len(os.environ["HF_TOKEN"])}

print(Model.deploy("model")["url"])
'''


async def test_an_endpoint_mounts_its_volumes_sets_its_secrets_and_runs_exit_at_scaledown(
        start_kernel, control_plane, jp_fetch):
    _, kc = await start_kernel()
    content, out, _ = await run(kc, DEPLOY, timeout=120)
    assert content["status"] == "ok", (content, out)
    r = await jp_fetch("cellhop", "endpoints", "model", "", method="POST", body=json.dumps({"x": 3}),
                       request_timeout=120)
    assert json.loads(r.body) == {"weights": "w=7", "x": 3, "token_length": 19}, r.body
    [container] = [c for c in control_plane.manager.list() if c.spec.owner == "endpoint model"]
    assert container.spec.secrets == ["hf"] and container.spec.volumes[0]["path"] == "/models"

    deadline = time.monotonic() + 60  # idle past scaledown: stopped, and its exit method ran first
    while container.phase.value != "exited":
        assert time.monotonic() < deadline, "the endpoint's container was not scaled down"
        await asyncio.sleep(0.2)
    log = control_plane.manager.logs(container.id) if hasattr(control_plane.manager, "logs") else ""
    if not log:
        r = await jp_fetch("cellhop", "api", "containers", container.id, "logs")
        log = r.body.decode()
    assert "unloading the model at scaledown" in log, log[-2000:]
    assert "hf_abcdefghijklmnop" not in log  # the secret's value never shows

    content, out, _ = await run(kc, "s = cellhop.Secret.from_dict({'K': 'session-only-value'})\n"
                                    "@cellhop.endpoint(secrets=[s])\ndef f():\n    return 1\n"
                                    "try:\n    f.deploy('leaky')\nexcept Exception as e:\n    print(e)")
    assert "session secret" in out and "cellhop.Secret.create" in out, (content, out)
