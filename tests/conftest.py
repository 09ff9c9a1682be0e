"""Shared by every test module: offline settings, and the app the reliability and security tests drive.

The environment is set here, before any test module imports gradio_client (which calls the Hub otherwise).
"""

import os

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                      "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def stress_presets(tmp_path_factory):
    """The real presets plus small random models that never stop talking (see `benchmarks/stress.py`)."""
    from benchmarks import stress

    return stress.random_presets(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def stress_engine(stress_presets):
    """One model cache for every app in a module, as one server process has."""
    from benchmarks import stress
    from mmgpt.engine import Engine

    return Engine(max_loaded=3, timeout_s=stress.REQUEST_TIMEOUT_S, presets=stress_presets)


@pytest.fixture(scope="module")
def stress_app(stress_presets, stress_engine):
    """The app on 127.0.0.1 with `stress_presets` and `stress_engine`: a `benchmarks.stress.Served`."""
    from benchmarks import stress

    with stress.serve(stress_presets, stress_engine) as served:
        yield served
