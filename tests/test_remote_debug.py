"""Remote debugging: pdb runs in the container on the remote frames and prompts in the notebook.

A real notebook kernel (jupyter_client) with real container kernels; the
debugger's prompts are answered over the stdin channel as a frontend does
(kernel_fixtures.run(..., allow_stdin=True, stdin_hook=...)).
"""

from __future__ import annotations

import threading

from kernel_fixtures import cellhop_kernel, local_json  # noqa: F401  (a pytest fixture)

MAX_PROMPTS = 30  # a debugger that keeps asking is answered with its way out (the test then fails on its output)


def answering(nb, answers: list[str], prompts: list[str], last: str):
    """A stdin hook answering the debugger's prompts with `answers`, then `last` (q or c) from then on."""
    pending = iter(answers)

    def hook(msg):
        prompts.append(msg["content"]["prompt"])
        nb.kc.input(next(pending, last) if len(prompts) < MAX_PROMPTS else last)

    return hook


def test_breakpoint_in_a_remote_cell_stops_there_and_prompts_in_the_notebook(cellhop_kernel):
    nb = cellhop_kernel
    prompts: list[str] = []
    ran = nb.run("%%remote\nx = 6 * 7\nbreakpoint()\ny = x + 1\n", allow_stdin=True,
                 stdin_hook=answering(nb, ["p x", "c"], prompts, "c"))
    assert ran.status == "ok", ran
    assert prompts[:2] == ["ipdb> ", "ipdb> "], prompts
    assert "42" in ran.stdout, ran  # `p x`, printed by the debugger in the container
    assert local_json(nb, "y") == 43  # it went on after `c`, and its values came back


def test_pdb_set_trace_in_a_remote_cell_prompts_in_the_notebook(cellhop_kernel):
    nb = cellhop_kernel
    prompts: list[str] = []
    ran = nb.run("%%remote\nimport pdb\nname = 'in the container'\npdb.set_trace()\ndone = True\n",
                 allow_stdin=True, stdin_hook=answering(nb, ["p name"], prompts, "c"))
    assert ran.status == "ok", ran
    assert "'in the container'" in ran.stdout, ran
    assert local_json(nb, "done") is True


def test_breakpoint_in_a_remote_function_prompts_in_the_notebook_cell_that_called_it(cellhop_kernel):
    nb = cellhop_kernel
    nb.ok("import cellhop\n\ndef halve(n):\n    half = n / 2\n    breakpoint()\n    return half + 0.25\n\n"
          "remote_halve = cellhop.remote()(halve)\n")
    prompts: list[str] = []
    ran = nb.run("answer = remote_halve.remote(84)\nprint('answer', answer)", allow_stdin=True,
                 stdin_hook=answering(nb, ["p half", "c"], prompts, "c"))
    assert ran.status == "ok", ran
    assert prompts[:1] == ["ipdb> "], prompts
    assert "42.0" in ran.stdout and "answer 42.25" in ran.stdout, ran
    without_stdin = nb.run("remote_halve.remote(2)", allow_stdin=False)  # no stdin: it says so, nothing hangs
    assert without_stdin.status == "error", without_stdin
    assert "StdinNotImplementedError" in without_stdin.ename + without_stdin.traceback_text, without_stdin


def test_debug_after_a_remote_error_is_a_post_mortem_on_the_remote_frames(cellhop_kernel):
    nb = cellhop_kernel
    failed = nb.run("%%remote\ndef divide(a):\n    tripled = a * 3\n    return a / 0\nresult = divide(5)\n")
    assert failed.ename == "ZeroDivisionError", failed
    prompts: list[str] = []
    ran = nb.run("%debug", allow_stdin=True, stdin_hook=answering(nb, ["p tripled", "p a + 100"], prompts, "q"))
    assert ran.status == "ok", ran
    assert "15" in ran.stdout and "105" in ran.stdout, ran  # the frame of divide(), in the container
    assert "divide" in ran.stdout, ran  # where it stopped: the remote function's frame


def test_debug_after_a_local_error_is_ipythons_own(cellhop_kernel):
    nb = cellhop_kernel
    nb.run("%%remote\nraise ValueError('remote')\n")  # an earlier remote error does not take over
    failed = nb.run("def local_fails():\n    here = 'notebook side'\n    1 / 0\nlocal_fails()\n")
    assert failed.ename == "ZeroDivisionError", failed
    prompts: list[str] = []
    ran = nb.run("%debug", allow_stdin=True, stdin_hook=answering(nb, ["p here"], prompts, "q"))
    assert ran.status == "ok", (ran, "".join(c.get("traceback") and "\n".join(c["traceback"]) or ""
                                             for _, c in ran.outputs)[-3000:])
    assert "'notebook side'" in ran.stdout, ran


def test_remote_pdb_option_enters_the_post_mortem_after_showing_the_error(cellhop_kernel):
    nb = cellhop_kernel
    prompts: list[str] = []
    ran = nb.run("%%remote --pdb\nz = 5\nw = z / 0\n", allow_stdin=True,
                 stdin_hook=answering(nb, ["p z * 2"], prompts, "q"))
    assert ran.ename == "ZeroDivisionError", ran
    assert prompts and prompts[0] == "ipdb> ", prompts
    assert "10" in ran.stdout, ran
    kinds = [t for t, c in ran.outputs if t == "error" or (t == "stream" and "10" in c.get("text", ""))]
    assert kinds.index("error") < kinds.index("stream"), kinds  # the error first, then the debugger


def test_pdb_on_enters_the_remote_post_mortem_for_every_remote_cell(cellhop_kernel):
    nb = cellhop_kernel
    nb.ok("%pdb on")
    try:
        prompts: list[str] = []
        ran = nb.run("%%remote\nlimit = 7\nassert limit < 5, 'too big'\n", allow_stdin=True,
                     stdin_hook=answering(nb, ["p limit + 1"], prompts, "q"))
        assert ran.ename == "AssertionError", ran
        assert prompts and "8" in ran.stdout, ran
    finally:
        nb.ok("%pdb off")


def test_an_interrupt_while_the_prompt_is_open_ends_the_cell_and_keeps_the_container(cellhop_kernel):
    nb = cellhop_kernel
    prompts: list[str] = []

    def interrupt_instead_of_answering(msg):
        prompts.append(msg["content"]["prompt"])
        if len(prompts) == 1:
            nb.km.interrupt_kernel()  # the user's interrupt while the debugger asks
        else:
            nb.kc.input("c")

    ran = nb.run("%%remote\nkept = 'still here'\nbreakpoint()\nprint('not reached'.upper())\n",
                 allow_stdin=True, stdin_hook=interrupt_instead_of_answering)
    assert ran.status == "error", ran
    assert "KeyboardInterrupt" in (ran.ename or "") + ran.traceback_text, ran
    assert "NOT REACHED" not in ran.stdout, ran  # (the debugger's listing shows the line itself)
    assert len(prompts) == 1, prompts  # the prompt ended there; it was not asked again
    again = nb.ok("%%remote\nprint(kept)\n")
    assert "still here" in again.stdout  # the same container, its state kept


def test_a_timeout_ends_a_prompt_left_open(cellhop_kernel):
    nb = cellhop_kernel
    prompts: list[str] = []
    asked = threading.Event()

    def never_answer(msg):
        prompts.append(msg["content"]["prompt"])
        asked.set()

    ran = nb.run("%%remote --timeout 3\nbreakpoint()\nprint('not reached'.upper())\n",
                 allow_stdin=True, stdin_hook=never_answer, timeout=60)
    assert asked.is_set()
    assert ran.ename == "RemoteTimeout", ran
    assert "still warm" in ran.evalue, ran  # interrupted in the container, not stopped
    assert "NOT REACHED" not in ran.stdout, ran  # (the debugger's listing shows the line itself)
    assert nb.ok("%%remote\nprint('alive')\n").stdout.strip().endswith("alive")


def test_debug_without_stdin_says_what_to_do(cellhop_kernel):
    nb = cellhop_kernel
    nb.run("%%remote\nraise KeyError('k')\n")
    ran = nb.run("%debug", allow_stdin=False)
    assert ran.status == "error", ran
    assert "does not allow input" in ran.evalue, ran
