"""`cellhop.Container(id)` and `cellhop.Sandbox(...)`: commands inside a container, from Python.

`Container(id).exec("nvidia-smi")` runs a command inside a running container (the server's
`containers/{id}/exec` route: its namespaces, its uid without privileges, its environment and GPUs; no
shell unless you run one) and returns an ExecResult (stdout, stderr, exit_code), the output masked for
the container's secrets; `on_output=print`-like callbacks see it as it comes. `Sandbox(gpu="H100",
image=img)` starts a container of its own, with no notebook attached, for `exec` and `terminate` (as
Modal's Sandbox); it is a context manager. Both go through this process's control plane client: the
cellhop server's (a kernel's own token: its own containers only), or one embedded in this process.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CellhopError


@dataclass
class ExecResult:
    """How a command run in a container ended, and what it wrote."""

    stdout: str
    stderr: str
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool = False
    message: str = ""

    @property
    def returncode(self) -> int | None:  # subprocess's name
        return self.exit_code

    def check(self) -> ExecResult:
        """self, or a CellhopError saying how the command failed."""
        if self.exit_code != 0:
            raise CellhopError(self.message or f"the command exited with code {self.exit_code}: "
                               f"{self.stderr.strip()[-500:]}")
        return self


def _argv(args) -> list[str]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    if not args or not all(isinstance(a, str) for a in args):
        raise CellhopError('give the command as strings: exec("python", "-c", "print(1)") or exec(["ls", "-l"])')
    return list(args)


class Container:
    """A running container, by id (as `%gpu`, the panel and GET cellhop/api/containers show it)."""

    def __init__(self, container_id: str, client=None):
        if not isinstance(container_id, str) or not container_id:
            raise CellhopError("Container(id): give the container's id, as GET cellhop/api/containers lists it")
        self.id = container_id
        self._client = client

    def __repr__(self) -> str:
        return f"cellhop.Container({self.id!r})"

    @property
    def client(self):
        if self._client is None:
            from .control_client import get_control_plane

            self._client = get_control_plane()
        return self._client

    def exec(self, *argv, stdin: str | None = None, timeout: float | None = None, on_output=None) -> ExecResult:
        """Run a command inside the container, wait for it, return its output and exit code.
        `on_output(stream, text)` sees each piece as it comes ("stdout" or "stderr")."""
        body = {"argv": _argv(argv)}
        if stdin is not None:
            body["stdin"] = stdin
        if timeout is not None:
            body["timeout"] = timeout
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}

        def on_line(line: dict) -> None:
            if "stream" in line:
                out[line["stream"]].append(line["text"])
                if on_output is not None:
                    on_output(line["stream"], line["text"])

        client = self.client
        if hasattr(client, "stream"):  # the server's
            last = client.stream("POST", f"containers/{self.id}/exec", body, on_line=on_line)
        elif hasattr(client, "exec_in"):  # one embedded in this process
            last = client.exec_in(self.id, body, on_line)
        else:
            raise CellhopError("this control plane cannot run commands in containers; use a cellhop server "
                               "(CELLHOP_CONTROL_URL) or the embedded one")
        if last.get("type") == "error":
            raise CellhopError(last.get("message", "the command could not be run"))
        return ExecResult("".join(out["stdout"]), "".join(out["stderr"]), last.get("exit_code"),
                          bool(last.get("timed_out")), last.get("message", ""))

    def logs(self, tail: int | None = None) -> str:
        return self.client.logs(self.id, tail)

    def terminate(self) -> None:
        """Stop the container (its GPUs are released)."""
        self.client.stop(self.id, "terminated from Python (cellhop.Container.terminate)")


class Sandbox(Container):
    """A container of its own, no notebook attached: `Sandbox(gpu="H100", image=img).exec("nvidia-smi")`.

    Takes the container spec's fields (gpu, image, cpus, memory, env, volumes, secrets, idle_timeout,
    label); `terminate()` (or leaving a `with` block) stops it."""

    def __init__(self, gpu: str | None = None, image=None, *, client=None, **spec):
        from ..container import ContainerSpec

        self._client = client
        if image is not None and not isinstance(image, str):  # a cellhop.Image: built (at once when cached)
            image = image.build(client=self.client)["key"]
        spec.setdefault("owner", "cellhop.Sandbox")
        spec.setdefault("label", "sandbox")
        made = ContainerSpec(gpu=gpu or "", image=image, **spec)
        started = self.client.start(made)
        super().__init__(started["id"], self._client)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()


def open_terminal(client, container_id: str, open_tab: bool = True) -> str:
    """A terminal of the Jupyter server whose shell runs inside the container; its name. `open_tab`: the
    JupyterLab windows with cellhop's panel open a tab on it."""
    if not hasattr(client, "request") or hasattr(client, "manager"):
        raise CellhopError("terminals are the Jupyter server's: this kernel has no cellhop server (it runs an "
                           "embedded control plane); start JupyterLab with cellhop, or run `cellhop shell "
                           f"{container_id}` where the server runs")
    return client.request("POST", f"containers/{container_id}/terminal", {"open": open_tab})["name"]


def terminal_for_notebook(cells, wanted: str | None = None) -> str:
    """`%gpu --terminal [CONTAINER]`: a terminal in this notebook's %%remote container (or the one whose id
    starts with `wanted`), opened as a JupyterLab tab; says which."""
    from IPython.core.error import UsageError

    if wanted is not None:
        listed = cells.control.request("GET", "containers")["containers"] if hasattr(cells.control, "request") \
            and not hasattr(cells.control, "manager") else [{"id": wanted}]
        ids = [c["id"] for c in listed if c["id"].startswith(wanted)]
        if len(ids) != 1:
            raise UsageError(f"{len(ids) or 'no'} containers have an id starting with {wanted!r}; give more of it")
        container_id = ids[0]
    else:
        live = [s.id for s in list(cells.sessions.values()) if s.alive()]
        if not live:
            raise UsageError("this notebook has no running container yet: run a %%remote cell first (or "
                             "`%gpu --keep-warm 1` to start one), then %gpu --terminal")
        container_id = live[0]
    try:
        name = open_terminal(cells.control, container_id)
    except CellhopError as exc:
        raise UsageError(str(exc)) from None
    print(f"cellhop: terminal {name} opened inside container {container_id} (a JupyterLab tab; its shell ends "
          "when the container stops)")
    return None
