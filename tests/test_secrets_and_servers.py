"""Passwords stay out of output and command lines; `sweep ui` stops its whole server.

Unit tests for `stores.urls.mask_password`, `stores.checks.check_tracking` and `stores.checks.check_stores`' wait
for servers that start with the workers, then the real `sweep ui`
and `sweep studies` commands against real SQLite and PostgreSQL stores (marked slow).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sweep.errors import Unreachable, UsageError
from sweep.stores.checks import check_stores, check_tracking
from sweep.stores.urls import mask_password

from conftest import SWEEP, free_port, run_sweep, write_study

# --- mask_password ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:secret@db.example:5432/sweep", "postgresql://user:***@db.example:5432/sweep"),
        ("postgresql://user:se#cret@db/sweep", "postgresql://user:***@db/sweep"),
        ("postgresql://user:se/cr?et@db/sweep?sslmode=require", "postgresql://user:***@db/sweep?sslmode=require"),
        ("postgresql+psycopg://user:p@ss:w#rd/?@10.0.0.1:5432/sweep", "postgresql+psycopg://user:***@10.0.0.1:5432/sweep"),
        ("mysql+pymysql://root:a%40b%23c@localhost/sweep", "mysql+pymysql://root:***@localhost/sweep"),
        ("http://u:s3cr#et@mlflow.example:5000", "http://u:***@mlflow.example:5000"),
        ("https://u:pa:ss@mlflow.example/prefix/", "https://u:***@mlflow.example/prefix/"),
        ("postgresql://user:@db/sweep", "postgresql://user:***@db/sweep"),
        ("postgresql://user:secret@[::1]:5432/sweep", "postgresql://user:***@[::1]:5432/sweep"),
        ("postgresql://user@corp:secret@db/sweep", "postgresql://user@corp:***@db/sweep"),
    ],
)
def test_mask_password_hides_the_whole_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///sweep.db",
        "sqlite:////tmp/we:ird@folder/mlflow.db",
        "sqlite:///relative/a:b@c.db",
        "file:///tmp/mlruns:x@y",
        "/tmp/mlruns",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql://db.example/sweep",
        "http://127.0.0.1:5000",
        "http://user@mlflow.example:5000/",
        "http://mlflow.example/path/to:x@y",
        "databricks",
        "",
    ],
)
def test_mask_password_leaves_urls_without_a_password_unchanged(url: str) -> None:
    assert mask_password(url) == url


PASSWORD_CHARS = st.text(alphabet=st.sampled_from("abcXYZ019#/?@:%!$&'()*+,;=~-._[] "), min_size=1, max_size=24)
NAME = st.text(alphabet="abcdefxyz0189-_.", min_size=1, max_size=12)


@given(
    scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "mysql+pymysql", "http", "https", "oracle"]),
    user=NAME,
    password=PASSWORD_CHARS,
    host=st.one_of(NAME, st.just("[::1]"), NAME.map(lambda h: f"{h}:5432")),
    tail=st.sampled_from(["", "/", "/sweep", "/sweep?sslmode=require", "/a/b#frag", "?x=1"]),
)
def test_mask_password_masks_any_password_of_any_scheme(scheme: str, user: str, password: str, host: str, tail: str) -> None:
    assert mask_password(f"{scheme}://{user}:{password}@{host}{tail}") == f"{scheme}://{user}:***@{host}{tail}"


# --- check_tracking -----------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["http://u:s3cr#et@mlflow.example", "http://u:s3cr?et@127.0.0.1:1", "https://u:s3cr/et@[::1"])
def test_check_tracking_turns_a_bad_url_into_a_masked_usage_error(uri: str) -> None:
    with pytest.raises(UsageError) as raised:
        check_tracking(uri)
    message = str(raised.value)
    assert "\n" not in message and "s3cr" not in message and "et@" not in message.replace("***@", "")
    assert "tracking" in message and "--tracking-uri" in message


# --- check_stores(wait=...) ---------------------------------------------------------------


def test_check_stores_waits_for_a_server_that_does_not_answer_then_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"postgresql://sweep:s3cret@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(Unreachable, match="cannot reach the Optuna storage"):
        check_stores(closed, f"sqlite:///{tmp_path / 'mlflow.db'}", wait=3)
    assert time.monotonic() - started >= 3
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("waiting up to 3 s: cannot reach the Optuna storage "
                                                 "postgresql://sweep:***@127.0.0.1:")


def test_check_stores_names_the_whole_wait_however_slow_the_first_attempt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A loaded machine (or a server's connect timeout) makes the first attempt slow: the wait
    # still starts when a server first fails to answer, so the message does not depend on it.
    import sweep.stores.checks

    def slow_and_down(url: str) -> None:
        time.sleep(0.6)
        raise Unreachable(f"cannot reach the Optuna storage {url}")

    monkeypatch.setattr(sweep.stores.checks, "check_storage", slow_and_down)
    started = time.monotonic()
    with pytest.raises(Unreachable):
        check_stores("postgresql://db/optuna", "sqlite:///unused.db", wait=1)
    assert time.monotonic() - started >= 1.6  # the first attempt, then the whole second
    assert capsys.readouterr().err.splitlines()[0] == "waiting up to 1 s: cannot reach the Optuna storage postgresql://db/optuna"


def test_check_stores_does_not_wait_on_a_wrong_url(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(UsageError, match="not a valid URL") as raised:
        check_stores(f"sqlite:///{tmp_path / 'sweep.db'}", "https://u:s3cr/et@[::1", wait=60)
    assert not isinstance(raised.value, Unreachable) and time.monotonic() - started < 10


SEARCH = "/api/2.0/mlflow/experiments/search"  # what the check reads: `/health` needs no login


@contextlib.contextmanager
def tracking_server(status: Callable[[str, str | None], int], port: int | None = None, delay: float = 0
                    ) -> Iterator[str]:
    """A stand-in MLflow server on `port` (started after `delay` s) that answers a GET of a
    path, with the Authorization header given, with the status `status` returns."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status(self.path.partition("?")[0], self.headers.get("Authorization")))
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    port = port or free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), Answer, bind_and_activate=False)

    def start() -> None:
        server.server_bind()
        server.server_activate()

    if not delay:
        start()  # listening before the test's first request
    starting = threading.Timer(delay, lambda: (delay and start(), server.serve_forever()))
    starting.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        starting.join()
        server.server_close()


@pytest.mark.integration  # a local HTTP server
def test_check_stores_goes_on_once_the_tracking_server_answers(tmp_path: Path) -> None:
    with tracking_server(lambda path, login: 200 if path == SEARCH else 404, delay=2) as url:
        started = time.monotonic()
        check_stores(f"sqlite:///{tmp_path / 'sweep.db'}", url, wait=60)
        assert 2 <= time.monotonic() - started < 30


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.integration  # a local HTTP server
def test_a_tracking_server_login_from_the_environment_is_sent_and_a_missing_or_wrong_one_is_one_line_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    right = basic("sweep", "s3cret-login")
    with tracking_server(lambda path, login: 200 if login == right else 401) as url:
        storage = f"sqlite:///{tmp_path / 'sweep.db'}"
        started = time.monotonic()
        with pytest.raises(UsageError) as missing:
            check_stores(storage, url, wait=60)
        assert str(missing.value) == (f"the MLflow tracking server {url} needs a login (HTTP 401); set "
                                      "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an MLflow user's")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "sweep")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-login")
        with pytest.raises(UsageError, match=r"refused the login given \(HTTP 401\)") as refused:
            check_stores(storage, url, wait=60)
        assert not isinstance(refused.value, Unreachable) and time.monotonic() - started < 20  # no waiting
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-login")
        check_stores(storage, url, wait=60)


@pytest.mark.integration  # a local HTTP server
def test_a_tracking_server_that_answers_503_is_waited_for_and_any_other_error_is_not(tmp_path: Path) -> None:
    with tracking_server(lambda path, login: 503) as url, pytest.raises(Unreachable, match="HTTP 503"):
        check_tracking(url)
    with tracking_server(lambda path, login: 404) as url, pytest.raises(UsageError, match="HTTP 404") as other:
        check_tracking(url)
    assert not isinstance(other.value, Unreachable)


def test_a_refused_database_login_fails_at_once_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    def refuse(*args: object, **kwargs: object) -> object:
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception(
            'connection failed: FATAL:  password authentication failed for user "sweep"'))

    monkeypatch.setattr(sqlalchemy, "create_engine", refuse)
    with pytest.raises(UsageError) as refused:
        check_stores("postgresql://sweep:s3cret@db.example/optuna", "sqlite:///mlflow.db", wait=60)
    assert not isinstance(refused.value, Unreachable)
    assert str(refused.value) == (
        'the Optuna storage postgresql://sweep:***@db.example/optuna refused the login (connection failed: FATAL:  '
        'password authentication failed for user "sweep"); fix the user or password in --storage or '
        'SWEEP_STORAGE (or PGPASSWORD, ~/.pgpass)')


def test_secret_variables_are_masked_in_every_error_sweep_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sweep.cli
    from sweep.stores.urls import mask_passwords_in

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-mlflow")
    monkeypatch.setenv("PGPASSWORD", "pg-s3cret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "abc")  # too short to mask: it would garble words
    text = "login hunter2-mlflow refused; pg-s3cret wrong at postgresql://u:pw@db/x; abc"
    assert mask_passwords_in(text) == "login *** refused; *** wrong at postgresql://u:***@db/x; abc"

    def fail() -> None:
        raise UsageError("the server said: bad login 'hunter2-mlflow'")

    monkeypatch.setattr(sweep.cli, "app", fail)
    with pytest.raises(SystemExit) as exited:
        sweep.cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: the server said: bad login '***'"


@pytest.mark.slow
def test_a_bad_tracking_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    write_study(tmp_path)
    result = run_sweep("run", "tiny.yaml", "--tracking-uri", "http://u:s3cr#et@mlflow.example", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "s3cr" not in result.stderr, result.stderr
    assert "http://u:***@mlflow.example" in result.stderr


# --- sweep studies ------------------------------------------------------------------------


@pytest.mark.slow
def test_studies_masks_the_storage_password(postgres_database: Callable[[str], str], tmp_path: Path) -> None:
    url = postgres_database("studies").replace("postgres@", "postgres:s3cr#t/x?@", 1)  # trust auth: any password
    result = run_sweep("studies", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "studies in postgresql://postgres:***@127.0.0.1" in result.stdout.replace("\n", "")
    assert "s3cr" not in result.stdout + result.stderr


# --- sweep ui: the server's processes ---------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgid, sid = text.rsplit(")", 1)[1].split()[:4]
    return state, int(ppid), int(pgid), int(sid)


def live_processes() -> dict[int, tuple[str, int, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None and stat[0] != "Z":
            found[int(entry)] = stat
    return found


def descendants(root: int) -> set[int]:
    processes = live_processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, stat in processes.items() if stat[1] in frontier} - found
        found |= frontier
    return found


def in_groups(groups: set[int]) -> set[int]:
    """Live processes whose session or process group is one of `groups`."""
    return {pid for pid, (_, _, pgid, sid) in live_processes().items() if pgid in groups or sid in groups}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class UI:
    """A real `sweep ui` in its own session; remembers every session and process group
    its processes were in, and kills what is left of them at the end."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE")}
        full_env.update(env or {})
        # a file, not a pipe: a server left running would hold a pipe open, and reading it hang
        self.log = cwd / f"ui-{len(list(cwd.glob('ui-*.log')))}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen([*SWEEP, "ui", *args], cwd=cwd, env=full_env, stdout=log,
                                            stderr=log, start_new_session=True)
        self.groups = {self.process.pid}

    def stop(self, signum: int = signal.SIGTERM) -> str:
        """Signal `sweep ui` itself (as docker stop or systemd do); its output once it exited."""
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sweep ui did not exit on signal {signum}: {self.log.read_text()[-3000:]}")
        return self.log.read_text()

    def note_groups(self) -> set[int]:
        """The processes of the server now, and their sessions and groups, remembered."""
        members = descendants(self.process.pid)
        for pid in members:
            if (stat := proc_stat(pid)) is not None:
                self.groups |= {stat[2], stat[3]}
        return members

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        for pid in in_groups(self.groups):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def wait_until_served(url: str, ui: UI, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if ui.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sweep ui did not serve {url}: {ui.log.read_text()[-3000:]}")
            time.sleep(0.5)


@pytest.fixture
def start_ui(tmp_path: Path) -> Iterator[Callable[..., UI]]:
    started: list[UI] = []

    def start(*args: str, env: dict[str, str] | None = None) -> UI:
        started.append(UI(*args, cwd=tmp_path, env=env))
        return started[-1]

    yield start
    for ui in started:
        ui.cleanup()


@pytest.mark.slow
def test_ui_keeps_the_password_off_command_lines_serves_ipv6_and_stops_whole_on_sigterm(
    start_ui: Callable[..., UI], postgres_database: Callable[[str], str]
) -> None:
    """One real `sweep ui` (a server start costs ~20 s): on the IPv6 wildcard, its PostgreSQL
    URI with a password given in MLFLOW_TRACKING_URI. No process shows the password; SIGTERM
    (docker stop, systemd) leaves no process of the server and frees the port. SIGINT and
    SIGHUP take the same path in `sweep.ui.servers.serve`."""
    password = "Pw4ui-not-on-argv"
    uri = postgres_database("ui").replace("postgres@", f"postgres:{password}@", 1)  # trust auth: any password
    port = free_port()
    ui = start_ui("--host", "::", "--port", str(port), env={"MLFLOW_TRACKING_URI": uri})
    wait_until_served(f"http://[::1]:{port}", ui)
    with urllib.request.urlopen(f"http://localhost:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=5") as response:
        assert b"experiments" in response.read()  # served on localhost too, from the PostgreSQL store
    time.sleep(3)  # the job runner starts its consumers after the server answers
    server = ui.note_groups()
    assert len(server) >= 3, "expected mlflow, uvicorn and the job runner"
    command_lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in server | {ui.process.pid}
                     if Path(f"/proc/{pid}/cmdline").exists()}
    assert not {pid: line for pid, line in command_lines.items() if password.encode() in line}

    err = ui.stop(signal.SIGTERM)
    assert ui.process.returncode == 143, err
    deadline = time.monotonic() + 20
    while (left := in_groups(ui.groups) | (server & set(live_processes()))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left}
    assert port_is_free(port, "::")
    assert f"open http://localhost:{port} " in err and "Traceback" not in err
    assert password not in err and "postgres:***@" in err


@pytest.fixture
def ipv6_listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET6) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError as error:
            pytest.skip(f"no IPv6 loopback here: {error}")
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.integration  # a listening socket
@pytest.mark.parametrize("host", ["::1", "::"])
def test_ui_refuses_a_busy_ipv6_port_in_one_line(
    ipv6_listener: int, host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sweep.cli import app

    # a database server's store: `sweep ui` leaves it to MLflow's server (a local file must exist)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://sweep@127.0.0.1:1/mlflow")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["ui", "--host", host, "--port", str(ipv6_listener)])
    assert isinstance(result.exception, UsageError), result.output
    assert "already in use" in str(result.exception) and "--port" in str(result.exception)


def test_dashboard_without_optuna_dashboard_names_the_extra_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from typer.testing import CliRunner

    from sweep.cli import app

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["dashboard", "--storage", f"sqlite:///{tmp_path / 'sweep.db'}"])
    assert isinstance(result.exception, UsageError), result.output
    assert "pip install 'sweep[dashboard]'" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration  # a local HTTP server
def test_check_tracking_sends_a_urls_user_and_password_as_basic_auth() -> None:
    """MLflow's client accepts http://user:password@host; so must the reachability check."""
    with tracking_server(lambda path, login: 200 if login == basic("u", "s3cr#et") else 401) as url:
        host = url.removeprefix("http://")
        check_tracking(f"http://u:s3cr%23et@{host}")  # percent-encoded, as in a URL
        with pytest.raises(UsageError) as refused:
            check_tracking(f"http://u:wrong@{host}")
        assert "wrong" not in str(refused.value) and "u:***@" in str(refused.value)


@pytest.fixture
def tls_postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own that serves TLS only (a self-signed certificate), run
    as the `postgres` user: the URL of its `postgres` database, user `postgres`."""
    import glob
    import pwd
    import shutil

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries or shutil.which("openssl") is None:
        if os.environ.get("SWEEP_TEST_POSTGRES"):
            pytest.fail("PostgreSQL's server binaries or openssl are missing")
        pytest.skip("needs PostgreSQL's server binaries (apt install postgresql) and openssl")
    import tempfile

    user = pwd.getpwnam("postgres")
    data = Path(tempfile.mkdtemp(prefix="sweep-tls-postgres-"))  # pytest's folders are private to root
    os.chown(data, user.pw_uid, user.pw_gid)

    def as_postgres(*args: str) -> None:
        command = [f"{binaries[-1]}/{args[0]}", *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    as_postgres("initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
    subprocess.run(["openssl", "req", "-new", "-x509", "-days", "1", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(data / "server.key"), "-out", str(data / "server.crt")],
                   check=True, capture_output=True, timeout=60)
    for name in ("server.key", "server.crt"):
        os.chown(data / name, user.pw_uid, user.pw_gid)
    (data / "server.key").chmod(0o600)
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{data}'\n"
                   "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    as_postgres("pg_ctl", "-D", str(data), "-w", "-l", str(data / "log"), "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(data)


@pytest.mark.integration  # a PostgreSQL server and a subprocess
def test_a_tls_connection_to_postgresql_works_once_tensorflow_is_loaded(tls_postgres: str) -> None:
    """A `--jobs` worker loads TensorFlow before it connects; psycopg's libssl, loaded after
    TensorFlow, aborted it at its first TLS connection ("free(): invalid pointer")."""
    import sys

    url = f"{tls_postgres}?sslmode=require"
    connect = subprocess.run([sys.executable, "-c", f"""
from sweep._tf import tf
import sqlalchemy
with sqlalchemy.create_engine({url!r}).connect() as db:
    print(db.exec_driver_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar())
"""], capture_output=True, text=True, timeout=300, check=False)
    assert connect.returncode == 0, connect.stderr[-2000:]
    assert connect.stdout.split() == ["True"]
