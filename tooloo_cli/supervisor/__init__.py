"""Supervision of the stack's services: a detached daemon and the commands that talk to it.

    manager.py    the Supervisor: a ManagedProcess per replica, dependency order, the control API
                  (run detached as `python -m tooloo_cli.supervisor`, or attached by `tooloo up -f`)
    process.py    one replica: spawn, probes, restarts, stop, its output to its log
    restart.py    the restart policy as pure arithmetic on a clock (backoff, crash loop, never healthy)
    environment.py  what each process finds in its environment, and the command's handover
    api.py        the control API's server: JSON over HTTP on a Unix socket
    control.py    its client, for the CLI
    daemon.py     finding, launching and clearing up after the detached supervisor
    standby.py    a supervisor started before `up` has read its configuration, and its environment
    commands.py   up, down, status, restart, logs as the CLI runs them
    printer.py    prefixed log lines, the status table, start-up progress; plain text without rich
    logs.py, paths.py, usage.py, lock.py   log rotation and tail, state paths, CPU and memory of a
                  process tree, the supervisor's lock (port preflight: tooloo_cli/ports.py)

What runs is read from the stack model (`tooloo_cli.stack`); the supervisor imports none
of the services' code.
"""
