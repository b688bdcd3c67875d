"""Each job imports only the libraries it calls: importing torch_geometric costs about 2 s
and scikit-learn about 2.5 s, paid by every job of the study (issue 15)."""

import subprocess
import sys

import pytest

PROBE = (
    "import sys, {module}; "
    "print(' '.join(m for m in ('torch_geometric', 'sklearn', 'scipy') if m in sys.modules))"
)


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("wormgnn.train", set()),
        ("wormgnn.evaluate", set()),
        ("wormgnn.select", set()),
        ("wormgnn.models.nri", set()),
        ("wormgnn.models.sparse", {"torch_geometric"}),
    ],
)
def test_a_job_module_imports_no_heavy_library_it_may_not_call(module, allowed):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(done.stdout.split()) == allowed


def test_the_gnn_trains_without_importing_pyg():
    code = (
        "import sys, torch; from wormgnn.models import build_model; "
        "from wormgnn.models.registry import model_config; "
        "m = build_model('gnn', 'forecast', model_config('gnn', {}), n_nodes=5, window=4, "
        "in_channels=1, n_classes=3); "
        "out = m(torch.randn(2, 5, 4, 1), torch.ones(2, 5, dtype=torch.bool)); "
        "out.pred.sum().backward(); print('torch_geometric' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
