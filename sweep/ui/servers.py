"""Servers `sweep` starts for the user (the MLflow UI), and stopping them completely.

A server such as `mlflow ui` starts worker and job-runner processes and forwards no signal
to them, so stopping only the process we started leaves the port held. `serve` runs it in
a session of its own and, when it exits or we are told to stop (SIGTERM from `docker stop`
or systemd, Ctrl-C, SIGHUP), stops every process of that session's group and its
descendants.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time

from sweep.errors import UsageError


def port_in_use(host: str, port: int) -> bool:
    """Whether something answers on `port` of `host` (its loopback address if a wildcard)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UsageError(f"--host: cannot resolve {host!r} ({error.strerror}); give an address such as 127.0.0.1") from None
    for family, kind, protocol, _, address in addresses:
        if ipaddress.ip_address(str(address[0]).split("%")[0]).is_unspecified:
            address = ("::1" if family == socket.AF_INET6 else "127.0.0.1", *address[1:])
        with contextlib.suppress(OSError), socket.socket(family, kind, protocol) as probe:
            probe.settimeout(2)
            if probe.connect_ex(address) == 0:
                return True
    return False


def browser_url(host: str, port: int) -> str:
    """A URL a browser on this machine opens: localhost for a wildcard, [v6] in brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name such as localhost, or "" (every interface)
        return f"http://{host or 'localhost'}:{port}"
    if address.is_unspecified:
        return f"http://localhost:{port}"
    return f"http://[{host}]:{port}" if address.version == 6 else f"http://{host}:{port}"


def tracking_ui_pages(uri: str, study_name: str | None, host: str, port: int) -> dict[str, str]:
    """The MLflow UI pages to open, by name: its home page ("": a tracking server's own UI,
    without the password a browser asks for; else ours on `host`:`port`) or, with a study,
    the study's runs and its "Pareto front" view (`Tracker.ui_pages`)."""
    from sweep.stores.tracking import Tracker
    from sweep.stores.urls import is_tracking_server, mask_password

    server = is_tracking_server(uri)
    base = mask_password(uri).replace(":***@", "@").rstrip("/") if server else browser_url(host, port)
    if study_name is None:
        return {"": base}
    return Tracker(uri, study_name, create=False, read_only=True).ui_pages(base)


def dashboard_page(url: str, study_name: str | None, host: str, port: int) -> str:
    """The optuna-dashboard page to open on `host`:`port` for the storage at `url`: its
    study list, or the page of `study_name`."""
    from sweep.stores.optuna_storage import load_study, open_storage

    page = browser_url(host, port) + "/dashboard/"
    if study_name is not None:
        opened = open_storage(url)
        name = load_study(study_name, url, opened).study_name
        page += f"studies/{opened.get_study_id_from_name(name)}"
    return page


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def serve(command: list[str], env: dict[str, str], grace: float = 5.0) -> int:
    """Run a server until it exits or we get SIGTERM, SIGINT or SIGHUP; its exit code, or
    128 + the signal's number.

    The server runs in its own session: `mlflow ui` starts uvicorn workers and huey job
    consumers, and forwards a signal to none of them, so on the way out we stop its whole
    process group (and anything else descended from it), first with SIGTERM, then after
    `grace` seconds with SIGKILL. A terminal's Ctrl-C reaches only us; we pass it on.
    """
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)]

    def stop(signum: int, _frame: object) -> None:
        for each in signals:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(each, signal.SIG_IGN)
        raise _Stop(signum)

    for each in signals:
        signal.signal(each, stop)
    process = None
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
        code = process.wait()
        return code if code >= 0 else 128 - code
    except _Stop as stopped:
        return 128 + stopped.signum
    finally:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        if process is not None:
            _stop_process_group(process, grace)


def _stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, to the group `process` leads and to
    every process descended from it (MLflow starts its jobs in sessions of their own)."""
    process.poll()  # a leader that exited on its own is reaped, not waited for
    left = _group_processes(process.pid, set())
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signum)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            process.poll()  # reap the leader, or it lingers as a zombie
            left = _group_processes(process.pid, left)
        if not left:
            break
    process.poll()


def _group_processes(group: int, known: set[int]) -> set[int]:
    """Live (not zombie) processes of process group `group`, their descendants, and those of
    `known` still alive. Without /proc (macOS): {group} while the group has a member."""
    try:
        entries = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        try:
            os.killpg(group, 0)
            return {group}
        except OSError:
            return set()
    parents: dict[int, int] = {}
    members: set[int] = set()
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state, parent, pgid = stat.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if state in ("Z", "X"):
            continue
        parents[pid] = int(parent)
        if int(pgid) == group or pid in known:
            members.add(pid)
    added = members
    while added:
        added = {pid for pid, parent in parents.items() if parent in added} - members
        members |= added
    return members
