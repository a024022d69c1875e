"""Endpoint processes, pm2-style: spawn, adopt, health-check, restart with back-off (no Textual).

    model.py       data types: Status, BackoffPolicy, ManagedEndpoint, EndpointView, Prober
    processes.py   /proc probing (proc_alive) and launching `gen404 serve` (launch_endpoint)
    state_file.py  the JSON file of running endpoints a later console re-adopts
    loop.py        Supervisor: the supervision loop and the actions the UI calls

Import from here; the submodules are the layout, this is the public surface.
"""

from console.supervisor.loop import FIRST_PORT, Supervisor
from console.supervisor.model import (
    RUNNING_STATES,
    BackoffPolicy,
    EndpointsChanged,
    EndpointView,
    Launcher,
    ManagedEndpoint,
    Prober,
    ProcessHandle,
    Status,
    SupervisorEvent,
    SupervisorNotice,
)
from console.supervisor.processes import (
    AdoptedProcess,
    ChildProcess,
    launch_endpoint,
    port_in_use,
    proc_alive,
    proc_started_wall,
    proc_stat,
    serve_command,
)
from console.supervisor.state_file import read_state

__all__ = [
    "FIRST_PORT",
    "RUNNING_STATES",
    "AdoptedProcess",
    "BackoffPolicy",
    "ChildProcess",
    "EndpointView",
    "EndpointsChanged",
    "Launcher",
    "ManagedEndpoint",
    "ProcessHandle",
    "Prober",
    "Status",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorNotice",
    "launch_endpoint",
    "port_in_use",
    "proc_alive",
    "proc_stat",
    "proc_started_wall",
    "read_state",
    "serve_command",
]
