"""%gpu and %%remote end to end: real notebook kernels over the wire protocol, a simulated H100:2,A10G:1 host.

Values travel both ways (a 100 MB array, notebook functions, classes and
dataclass instances, modules by name), remote state persists across cells,
--out / --no-pull / --fresh do what they say, and a container sees only the
GPUs it was given.
"""

from __future__ import annotations


import pytest

from kernel_fixtures import cellhop_kernel, local_json, start_cellhop_kernel  # noqa: F401  (cellhop_kernel is a fixture)

H100_UUIDS = {"GPU-simulated-h100-0", "GPU-simulated-h100-1"}
A10G_UUIDS = {"GPU-simulated-a10g-0"}


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    """The notebook for value tests: CPU-only containers (no GPU needed to move values)."""
    return cellhop_kernel




# -- values in and out ------------------------------------------------------------------------------
def test_100mb_array_round_trip_values_and_writable(nb):
    nb.ok("import numpy as np\n"
          "big = np.arange(100 * 2**20 // 8, dtype=np.float64)  # 100 MiB")
    ran = nb.ok("%%remote\n"
                "doubled = big * 2\n"
                "remote_nbytes = big.nbytes\n"
                "remote_checksum = float(big[::4096].sum())")
    assert ran.elapsed < 30, ran
    got = local_json(nb, "dict(nbytes=doubled.nbytes, remote_nbytes=remote_nbytes, "
                         "dtype=str(doubled.dtype), shape=doubled.shape, "
                         "equal=bool(np.array_equal(doubled, big * 2)), "
                         "checksum=remote_checksum == float(big[::4096].sum()), "
                         "writeable=bool(doubled.flags.writeable))")
    assert got == {"nbytes": 100 * 2**20, "remote_nbytes": 100 * 2**20, "dtype": "float64",
                   "shape": [100 * 2**20 // 8], "equal": True, "checksum": True, "writeable": True}
    # the returned array is an ordinary, writable array: in-place arithmetic works and sticks
    nb.ok("doubled += 1")
    got = local_json(nb, "[float(doubled[0]), float(doubled[1]), float(doubled[-1])]")
    assert got == [1.0, 3.0, 2.0 * (100 * 2**20 // 8 - 1) + 1]
    # the array sent in is writable in the container too
    ran = nb.ok("%%remote --no-pull\nbig += 1\nprint(float(big[0]), big.flags.writeable)")
    assert ran.stdout.strip() == "1.0 True"
    nb.ok("%%remote --no-pull\ndel big, doubled")
    nb.ok("del big, doubled")


def test_notebook_functions_and_classes_run_remotely(nb):
    nb.ok("SCALE = 10\n"
          "def scaled(v):\n"
          "    return v * SCALE  # reads a notebook global\n"
          "class Counter:\n"
          "    def __init__(self):\n"
          "        self.n = 0\n"
          "    def bump(self, by=1):\n"
          "        self.n += by\n"
          "        return self\n")
    ran = nb.ok("%%remote\n"
                "fn_result = scaled(4)\n"
                "counter = Counter().bump().bump(5)\n"
                "print('remote', fn_result, counter.n, type(counter).__name__)")
    assert ran.stdout == "remote 40 6 Counter\n"
    got = local_json(nb, "[fn_result, counter.n, type(counter) is Counter, counter.bump().n]")
    assert got == [40, 6, True, 7]


def test_dataclass_instance_comes_back_as_its_class(nb):
    nb.ok("from dataclasses import dataclass\n"
          "@dataclass\n"
          "class Point:\n"
          "    x: float\n"
          "    y: float\n"
          "    def norm(self):\n"
          "        return (self.x ** 2 + self.y ** 2) ** 0.5\n"
          "origin = Point(1.0, 0.0)")
    nb.ok("%%remote\npoint = Point(origin.x + 2.0, 4.0)\nremote_norm = point.norm()")
    got = local_json(nb, "[type(point) is Point, isinstance(point, Point), point == Point(3.0, 4.0), "
                         "point.norm(), remote_norm, repr(point)]")
    assert got == [True, True, True, 5.0, 5.0, "Point(x=3.0, y=4.0)"]


def test_modules_travel_by_name(nb):
    nb.ok("import os.path as osp\nimport json as js\nimport numpy as np")
    ran = nb.ok("%%remote\n"
                "import sys\n"
                "print(js is sys.modules['json'], np is sys.modules['numpy'], osp is sys.modules[osp.__name__])\n"
                "print(osp.join('a', 'b'), js.dumps([1]))")
    assert ran.stdout == "True True True\na/b [1]\n"
    # the module names themselves come back as modules, not copies
    assert local_json(nb, "[js is __import__('json'), np is __import__('numpy')]") == [True, True]


def test_remote_state_persists_across_cells(nb):
    ran = nb.ok("%%remote --no-pull\nremote_only = 41\nprint('set')")
    assert ran.stdout == "set\n"
    assert local_json(nb, "'remote_only' in globals()") is False
    nb.ok("%%remote\nfrom_state = remote_only + 1")
    assert local_json(nb, "from_state") == 42


def test_out_restricts_what_comes_back(nb):
    nb.ok("%%remote --out keep_me,also_kept\nkeep_me = 'k'\nalso_kept = [1, 2]\ndrop_me = 'd'")
    assert local_json(nb, "[keep_me, also_kept, 'drop_me' in globals()]") == ["k", [1, 2], False]
    # drop_me stayed in the container
    assert nb.ok("%%remote --no-pull\nprint(drop_me)").stdout == "d\n"


def test_no_pull_brings_nothing_back(nb):
    nb.ok("unchanged = 'local'")
    ran = nb.ok("%%remote --no-pull\nunchanged = 'remote'\nnp_only_a = 1\nprint('ran')")
    assert ran.stdout == "ran\n"
    assert local_json(nb, "[unchanged, 'np_only_a' in globals()]") == ["local", False]


def test_fresh_gives_a_new_container(nb):
    first = nb.ok("%%remote --no-pull\nsurvivor = 'old'\nprint('survivor' in dir())")
    assert first.stdout == "True\n"
    again = nb.ok("%%remote --no-pull\nprint('survivor' in dir())")
    assert again.stdout == "True\n" and again.container == first.container  # warm: same container
    fresh = nb.ok("%%remote --fresh --no-pull\nprint('survivor' in dir())")
    assert fresh.stdout == "False\n", fresh
    assert fresh.container and fresh.container != first.container
    # the old container was stopped, not leaked
    assert first.container not in set(nb.container_processes().values())
    assert fresh.container in set(nb.container_processes().values())


def test_values_the_cell_only_reads_do_not_come_back(nb):
    nb.ok("read_only_value = [1, 2, 3]")
    nb.ok("%%remote\ntotal_of_read = sum(read_only_value)")
    # the notebook's own object is untouched (not replaced by a copy from the container)
    assert local_json(nb, "[total_of_read, read_only_value]") == [6, [1, 2, 3]]
    nb.ok("_before_id = id(read_only_value)")
    nb.ok("%%remote\ntotal_of_read = len(read_only_value)")
    assert local_json(nb, "id(read_only_value) == _before_id") is True


# -- %gpu and GPU pinning ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_nb():
    """A second notebook for %gpu; a short queue timeout so a wait that should not happen fails fast."""
    with start_cellhop_kernel(queue_timeout=3) as kernel:
        yield kernel


def test_gpu_shows_simulated_inventory_and_selection(gpu_nb):
    ran = gpu_nb.ok("%gpu")
    text = ran.stdout
    assert "simulated" in text
    assert text.count(" H100 ") == 2 and text.count(" A10G ") == 1, text
    assert "Selected for %%remote: none" in text
    ran = gpu_nb.ok("%gpu H100")
    assert "Selected for %%remote: H100" in ran.stdout


def test_gpu_unknown_type_fails_listing_known_types(gpu_nb):
    gpu_nb.ok("%gpu A10G")
    ran = gpu_nb.run("%gpu H1000")
    assert ran.status == "error" and ran.ename == "GpuRequestError", ran
    assert "H1000" in ran.evalue
    for known in ("H100", "A100-80GB", "A10G", "L4", "T4"):
        assert known in ran.evalue
    # a bad value changes nothing
    assert "Selected for %%remote: A10G" in gpu_nb.ok("%gpu").stdout


def test_gpu_more_than_the_host_has_fails(gpu_nb):
    ran = gpu_nb.run("%gpu H100:3")
    assert ran.status == "error" and ran.ename == "GpuRequestError", ran
    assert "this host has only 2" in ran.evalue
    assert "H100 ×2" in ran.evalue  # and what the host does have


def test_container_sees_only_its_one_h100(gpu_nb):
    gpu_nb.ok("%gpu H100")
    ran = gpu_nb.ok("%%remote\nimport os\nvisible = os.environ['CUDA_VISIBLE_DEVICES']\n"
                    "gpu_type = os.environ['CELLHOP_GPU_TYPE']\nprint(visible)")
    visible = local_json(gpu_nb, "visible").split(",")
    assert len(visible) == 1 and visible[0] in H100_UUIDS, ran
    assert local_json(gpu_nb, "gpu_type") == "H100"
    # the control plane records that this container holds exactly that GPU
    holders = local_json(gpu_nb, "{g['uuid']: (g['holder'] or {}).get('container') "
                                 "for g in __import__('cellhop').gpus()}")
    assert holders[visible[0]] == ran.container
    assert [u for u, c in holders.items() if c == ran.container] == visible
    assert "H100 (simulated)" in "".join(
        c["data"]["text/plain"] for t, c in ran.outputs if t == "update_display_data")


def test_other_gpu_shape_is_not_blocked_by_own_idle_container(gpu_nb):
    gpu_nb.ok("%%remote --gpu H100\nx_one = 1")  # this notebook's warm container now holds one H100
    ran = gpu_nb.run("%%remote --gpu H100:2\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])")
    assert ran.status == "ok", ran
    assert set(ran.stdout.strip().split(",")) == H100_UUIDS


@pytest.fixture(scope="module")
def shared_runtime():
    """Two notebooks of one host: kernels that share this runtime folder share GPU leases."""
    import shutil

    from kernel_fixtures import short_runtime_dir

    path = short_runtime_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def two_h100_nb(shared_runtime):
    with start_cellhop_kernel(runtime_dir=shared_runtime) as kernel:
        yield kernel


def test_two_h100_container_sees_both(two_h100_nb):
    two_h100_nb.ok("%gpu H100:2")
    ran = two_h100_nb.ok("%%remote\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])")
    visible = ran.stdout.strip().split(",")
    assert len(visible) == 2 and set(visible) == H100_UUIDS, ran


def test_fallback_lands_on_a10g_when_h100s_are_taken(two_h100_nb, shared_runtime):
    # the other notebook holds both H100s (its warm container)
    two_h100_nb.ok("%gpu H100:2")
    two_h100_nb.ok("%%remote\nheld = True")
    with start_cellhop_kernel(runtime_dir=shared_runtime) as other:
        table = other.ok("%gpu").stdout
        assert table.count("held by") == 2, table  # the H100s, by the other notebook
        other.ok("%gpu H100,A10G")
        ran = other.ok("%%remote\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'], "
                       "os.environ['CELLHOP_GPU_TYPE'])", timeout=60)
        assert ran.stdout.split() == [*A10G_UUIDS, "A10G"], ran
        assert ran.elapsed < 10, ran  # it did not queue for an H100
