"""GPU requests as users type them in `%gpu`: parsing, and clear errors against what a host has.

No container is started here: requests are parsed and checked against
inventories (simulated, or empty with a reason) only.
"""

from __future__ import annotations

import pytest

from cellhop.errors import CellhopError, GpuRequestError
from cellhop.gpu_request import ANY, GpuChoice, GpuRequest, feasible_choices
from cellhop.gpu_types import GPU_TYPES
from cellhop.inventory import Inventory
from cellhop.server_ext.gpu_inventory import load_inventory

HOST = "H100:2,A10G:1"


@pytest.fixture
def host() -> Inventory:
    return load_inventory(HOST, environ={})


# -- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "choices"),
    [
        ("H100", [("H100", 1)]),
        ("h100", [("H100", 1)]),
        (" H100 : 2 ", [("H100", 2)]),
        ("H100,A100-80GB", [("H100", 1), ("A100-80GB", 1)]),
        ("A10G, h100:2", [("A10G", 1), ("H100", 2)]),
        ("A100", [("A100-40GB", 1)]),  # "A100" alone is the 40 GB card, as elsewhere
        ("a100 80gb", [("A100-80GB", 1)]),
        ("any", [(ANY, 1)]),
        ("ANY:2", [(ANY, 2)]),
        ("H100,any", [("H100", 1), (ANY, 1)]),
    ],
)
def test_requests_parse_into_ordered_choices(text, choices):
    request = GpuRequest.parse(text)
    assert request.choices == tuple(GpuChoice(t, n) for t, n in choices)
    assert not request.cpu_only


@pytest.mark.parametrize("text", ["none", "NONE", "cpu", "", "  ", None])
def test_none_means_cpu_only(text):
    request = GpuRequest.parse(text)
    assert request.cpu_only
    assert str(request) == "none"


def test_a_request_prints_as_it_would_be_typed():
    assert str(GpuRequest.parse("h100:2, a10g")) == "H100:2,A10G"
    assert GpuRequest.parse(str(GpuRequest.parse("H100:2,A10G"))) == GpuRequest.parse("H100:2,A10G")


def test_unknown_type_lists_the_known_types_and_suggests_the_closest():
    with pytest.raises(GpuRequestError) as err:
        GpuRequest.parse("H10O")
    message = str(err.value)
    assert "'H10O'" in message
    assert "Did you mean H100?" in message
    for gpu_type in GPU_TYPES:
        assert gpu_type in message


def test_unknown_type_without_a_close_match_still_lists_the_known_types():
    with pytest.raises(GpuRequestError) as err:
        GpuRequest.parse("H100,K80")
    message = str(err.value)
    assert "'K80'" in message and "Did you mean" not in message
    assert "Known types: " + ", ".join(GPU_TYPES) in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("H100:0", "'H100:0' must be at least 1"),
        ("H100:-2", "'H100:-2' must be at least 1"),
        ("H100:two", "'H100:two' must be a whole number, e.g. 'H100:2'"),
        ("H100:", "'H100:' must be a whole number"),
        ("A10G,H100:1.5", "'H100:1.5' must be a whole number"),
        ("H100,,A10G", "empty choice in GPU request 'H100,,A10G'"),
        ("H100,", "empty choice in GPU request 'H100,'"),
    ],
)
def test_bad_counts_and_empty_choices_name_the_bad_part(text, says):
    with pytest.raises(GpuRequestError) as err:
        GpuRequest.parse(text)
    assert says in str(err.value)


def test_zero_gpus_points_to_none():
    with pytest.raises(GpuRequestError, match="use 'none' for a CPU-only container"):
        GpuRequest.parse("A10G:0")


def test_request_errors_are_cellhop_errors_and_value_errors():
    with pytest.raises(CellhopError):
        GpuRequest.parse("nope")
    with pytest.raises(ValueError):
        GpuRequest.parse("nope")


# -- against an inventory ----------------------------------------------------------------
def test_a_request_that_fits_keeps_its_order(host):
    request = GpuRequest.parse("A10G,H100:2")
    assert feasible_choices(request, host) == [GpuChoice("A10G", 1), GpuChoice("H100", 2)]


def test_too_many_gpus_says_how_many_the_host_has(host):
    with pytest.raises(GpuRequestError) as err:
        feasible_choices(GpuRequest.parse("H100:3"), host)
    message = str(err.value)
    assert "H100:3: this host has only 2" in message
    assert "This host has: H100 ×2, A10G (simulated)." in message


def test_a_type_the_host_lacks_lists_what_it_has(host):
    with pytest.raises(GpuRequestError) as err:
        feasible_choices(GpuRequest.parse("L4"), host)
    message = str(err.value)
    assert "L4: this host has none" in message
    assert "H100 ×2, A10G (simulated)" in message


def test_fallback_skips_types_the_host_lacks(host):
    request = GpuRequest.parse("B200,L4:2,A10G,H100")
    assert feasible_choices(request, host) == [GpuChoice("A10G", 1), GpuChoice("H100", 1)]


def test_fallback_skips_choices_asking_for_more_than_the_host_has(host):
    assert feasible_choices(GpuRequest.parse("H100:4,H100:2"), host) == [GpuChoice("H100", 2)]


def test_fallback_where_no_choice_fits_names_each_problem(host):
    with pytest.raises(GpuRequestError) as err:
        feasible_choices(GpuRequest.parse("B200,A10G:2"), host)
    message = str(err.value)
    assert "B200: this host has none" in message
    assert "A10G:2: this host has only 1" in message
    assert "This host has: H100 ×2, A10G (simulated)." in message


def test_any_fits_up_to_the_largest_group_of_one_type(host):
    assert feasible_choices(GpuRequest.parse("any"), host) == [GpuChoice(ANY, 1)]
    assert feasible_choices(GpuRequest.parse("any:2"), host) == [GpuChoice(ANY, 2)]
    with pytest.raises(GpuRequestError, match="any:3: this host has only 2"):
        feasible_choices(GpuRequest.parse("any:3"), host)


def test_any_can_be_served_by_every_type_of_the_host(host):
    assert GpuRequest.parse("any").types(host) == {"H100", "A10G"}
    assert GpuRequest.parse("A10G,H100").types(host) == {"H100", "A10G"}
    assert GpuRequest.parse("none").types(host) == set()


def test_none_fits_every_host(host):
    assert feasible_choices(GpuRequest.parse("none"), host) == []
    assert feasible_choices(GpuRequest.parse("none"), Inventory(reason="no NVIDIA driver")) == []


def test_on_a_host_without_gpus_the_error_says_why():
    empty = Inventory(reason="the NVML library (libnvidia-ml.so.1) was not found")
    for text in ("H100", "any"):
        with pytest.raises(GpuRequestError) as err:
            feasible_choices(GpuRequest.parse(text), empty)
        assert "This host has: no GPUs (the NVML library (libnvidia-ml.so.1) was not found)." in str(err.value)
        assert 'CELLHOP_SIMULATED_GPUS="H100:2,A10G:1"' in str(err.value)  # and how to simulate some
        assert "c.Cellhop.simulated_gpus" in str(err.value)
