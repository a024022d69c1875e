"""A pynvml stand-in as a module, for processes the tests start (`gen404 serve` subprocesses).

`GEN404_NVML_MODULE=tests.support.fake_pynvml` makes the endpoint's GET /gpu sample this module
(engine/service/gpu_telemetry.py). Its readings are tests.support.fakes.FakeNvml's, with the
GPU name from FAKE_NVML_NAME and the temperature from FAKE_NVML_TEMP so a test can tell two
boxes apart. Attribute access is forwarded to one FakeNvml (PEP 562 module __getattr__).
"""

from __future__ import annotations

import os
from typing import Any

from tests.support.fakes import FakeNvml


class _NamedFake(FakeNvml):
    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        self._check("name")
        return os.environ.get("FAKE_NVML_NAME", "NVIDIA H100 80GB HBM3").encode()

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        self._check("temp")
        return int(os.environ.get("FAKE_NVML_TEMP", "61"))


_FAKE = _NamedFake(count=int(os.environ.get("FAKE_NVML_COUNT", "1")))


def __getattr__(name: str) -> Any:
    return getattr(_FAKE, name)
