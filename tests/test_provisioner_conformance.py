"""jupyter_kernel_test's conformance suite against a kernel launched through the cellhop provisioner.

The kernelspec is written by `write_kernelspec` into a temporary JUPYTER_PATH; jupyter_client's
`start_new_kernel` finds it, the provisioner (entry point `cellhop`) queues it for a simulated
H100 on an embedded control plane (no server here, as in jupyter console or nbclient) and the
container kernel answers the suite. The kernel runs sandboxed, sees only its GPU, and works in
the folder it was started in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

import jupyter_kernel_test as jkt
from jupyter_client.manager import start_new_kernel

_ENV = {"CELLHOP_SIMULATED_GPUS": "H100:1"}


class CellhopProvisionedKernelTests(jkt.KernelTests):
    kernel_name = "cellhop-test-h100"
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [{"code": "1+2+3", "result": "6"},
                           {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"}]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")  # as ipykernel itself: range answers session 0
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        cls._root = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))  # short: ipc socket paths live here
        cls._saved = {k: os.environ.get(k) for k in (*_ENV, "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")}
        os.environ.update(_ENV, JUPYTER_PATH=str(cls._root / "share"), JUPYTER_RUNTIME_DIR=str(cls._root / "rt"))
        from cellhop.server_ext.kernelspecs import write_kernelspec

        write_kernelspec(cls._root / "share" / "kernels" / cls.kernel_name, "H100")
        cls.notebook_dir = cls._root / "notebooks"
        cls.notebook_dir.mkdir()
        try:
            cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, cwd=str(cls.notebook_dir))
        except BaseException:
            cls._restore()  # tearDownClass is not called when setUpClass fails: leave no JUPYTER_PATH behind
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()  # the provisioner closes the control plane it made for the kernel
        finally:
            cls._restore()

    @classmethod
    def _restore(cls) -> None:
        for key, value in cls._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(cls._root, ignore_errors=True)

    def _run(self, code: str) -> str:
        reply, output_msgs = self.execute_helper(code=code)
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        return "".join(m["content"]["text"] for m in output_msgs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    def test_cellhop_the_kernel_is_in_a_sandboxed_container_with_its_gpu_and_the_notebooks_folder(self) -> None:
        self.assertEqual(type(self.km.provisioner).__name__, "CellhopProvisioner")
        # no server here: the provisioner made an embedded control plane of its own, in this process
        [container] = [c for c in self.km.provisioner.control.containers() if c["phase"] == "ready"]
        self.assertTrue(container["sandboxed"])
        self.assertEqual([g["type"] for g in container["gpus"]], ["H100"])
        out = self._run("import os\nopen('rel.txt', 'w').write('relative')\n"
                        "print(os.getcwd(), os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CELLHOP_CONTAINER_ID'],"
                        " os.path.exists(%r))" % str(self._root / "share"))
        cwd, gpus, cid, sees_runtime = out.split()
        self.assertEqual((cwd, gpus, cid), (str(self.notebook_dir), "GPU-simulated-h100-0", container["id"]))
        self.assertEqual(sees_runtime, "False")  # /tmp is the sandbox's own: only the notebook's folder is bound in
        self.assertEqual((self.notebook_dir / "rel.txt").read_text(), "relative")


if __name__ == "__main__":
    unittest.main()
