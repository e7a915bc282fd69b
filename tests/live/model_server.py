"""One real kserve ModelServer serving one sklearn model, with injected faults (a test program).

    python -m tests.live.model_server --model FILE.joblib --name m --port P [--error-share F]
        [--slow-share F --slow-ms MS] [--seed N]

It is kserve 0.21's own server (FastAPI/uvicorn, the V1 and V2 REST protocols, ``/metrics``
with kserve's ``request_predict_seconds`` histogram) around a ``kserve.Model`` that loads a
joblib'd scikit-learn estimator, the way a custom KServe predictor is written. Faults are what
a bad model revision does: ``--error-share`` of the predictions raise (kserve answers HTTP 500;
its histogram still observes them), ``--slow-share`` of them first sleep ``--slow-ms``.

kserve exports no error counter, so the model counts its own failures in
``request_predict_errors_total{model_name}``, after kserve's histogram has observed the request
(so a scrape never sees an error before its request). The series appears with the first error,
as every labelled prometheus_client counter does. The response says how long the prediction
slept (``"slept_ms"``), so the load generator's truth knows which latency buckets it can be in.

The server binds 127.0.0.1 only (kserve's RESTServer hard-codes 0.0.0.0; uvicorn's Config is
wrapped to keep the test on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tests.live.model_server")
    p.add_argument("--model", required=True, help="a joblib file of a fitted sklearn estimator")
    p.add_argument("--name", required=True, help="the model name (the InferenceService's)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--error-share", type=float, default=0.0)
    p.add_argument("--slow-share", type=float, default=0.0)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def exit_with_parent() -> None:
    """Exit when the process that started this one is gone (a killed test run or demo), so no
    model server is left behind on a shared machine."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    opts = parse(argv)
    exit_with_parent()
    sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported; it gets none of ours
    import joblib
    import kserve
    import numpy as np
    import uvicorn
    from kserve.errors import InferenceError
    from prometheus_client import Counter

    class LoopbackConfig(uvicorn.Config):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = LoopbackConfig  # type: ignore[misc]

    errors = Counter(
        "request_predict_errors", "Predictions that raised (the model's own count).", ["model_name"]
    )

    class SklearnModel(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(opts.name)
            self.rng = random.Random(opts.seed)
            self.estimator: Any = None
            self.load()

        def load(self) -> bool:
            self.estimator = joblib.load(opts.model)
            self.ready = True
            return True

        async def __call__(self, body: Any, headers: Any = None, verb: Any = None) -> Any:
            try:
                if verb is None:
                    return await super().__call__(body, headers)
                return await super().__call__(body, headers, verb)
            except Exception:  # every failure kserve turns into an HTTP 5xx
                errors.labels(model_name=self.name).inc()  # after kserve's histogram observed it
                raise

        async def predict(self, payload: Any, headers: Any = None) -> dict[str, Any]:
            u = self.rng.random()
            if u < opts.error_share:
                raise InferenceError("injected failure")
            slept_ms = opts.slow_ms if u < opts.error_share + opts.slow_share else 0.0
            if slept_ms:
                await asyncio.sleep(slept_ms / 1000.0)
            x = np.asarray(payload["instances"], dtype=float)
            return {"predictions": self.estimator.predict(x).tolist(), "slept_ms": slept_ms}

    kserve.ModelServer(http_port=opts.port, enable_grpc=False, workers=1).start([SklearnModel()])


if __name__ == "__main__":
    main(sys.argv[1:])
