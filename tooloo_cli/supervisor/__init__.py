"""Supervision of the eight services: a detached daemon and the commands that talk to it.

    manager.py    the Supervisor: processes plus the control API (runs as `tooloo supervise`)
    process.py    one service: spawn, health, restart policy, stop
    api.py        the control API's server: JSON over HTTP on a Unix socket
    control.py    its client, for the CLI
    daemon.py     finding, launching and clearing up after the detached supervisor
    commands.py   up, down, status, restart, logs as the CLI runs them
    printer.py    prefixed log lines, the status table, start-up progress
    logs.py, paths.py   log rotation and tail, state paths (port preflight: tooloo_cli/ports.py)
"""
