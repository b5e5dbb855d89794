"""What the small timing benchmarks (bench_linker.py, bench_demo_corpus.py) share: the machine they ran on,
a median/best summary of their rounds, and printing and saving the result."""
from __future__ import annotations

import json
import os
import platform
import statistics


def machine() -> dict:
    """What the figures were measured on (load average included: a busy machine is slower)."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def summary(values: list[float], best=min) -> dict:
    """{"median", "best"} of the rounds (`best`: min for times, max for rates)."""
    return {"median": statistics.median(values), "best": best(values)}


def finish(result: dict, lines: list[str], json_path: str | None) -> dict:
    """Print `lines` and the machine, add the machine to `result`, and write it to `json_path` when given."""
    result["machine"] = machine()
    for line in lines:
        print(line)
    print(f"  machine: {json.dumps(result['machine'])}")
    if json_path:
        with open(json_path, "w") as out:
            json.dump(result, out, indent=2)
    return result
