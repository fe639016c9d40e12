import torch


def pytest_configure(config):
    # Same thread count in every run so that timings and reductions do not depend on the machine's default.
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
