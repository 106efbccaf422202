"""The machine's load while a benchmark runs, recorded rather than assumed.

Timings on a shared machine are compared as ratios within one run; the load averages at the
start and the end of a run say how busy the machine was (a load near or above `cpus` means
other work shared the cores).
"""

import os


def machine_load():
    """The CPUs this process may use and the 1-, 5- and 15-minute load averages now."""
    return {"cpus": len(os.sched_getaffinity(0)),
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}
