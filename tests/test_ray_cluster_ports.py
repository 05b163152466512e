"""The test Ray cluster's port choice: its workers' port range never overlaps a port chosen by binding to 0.

CI once failed to start the cluster because the random worker range (100 ports) held the port the kernel
had just handed out for the dashboard agent. No Ray is started here.
"""

from ray_cluster import HEAD_IP, WORKER_PORTS, _ephemeral_low, _free_port, _free_worker_range


def test_the_worker_port_range_lies_below_the_ports_bind_to_zero_hands_out():
    low = _ephemeral_low()
    for _ in range(200):
        base = _free_worker_range(HEAD_IP)
        assert base + WORKER_PORTS - 1 < low
        assert _free_port(HEAD_IP) not in range(base, base + WORKER_PORTS)
