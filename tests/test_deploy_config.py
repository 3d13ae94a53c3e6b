"""The production deployment files (docker/), checked by the parsers that will read them, without Docker.

- docker/compose.yaml (and the Jetson override) go through Debian's docker-compose 1.29.2 (`config`), the
  oldest Compose a user is likely to have, whose schema rejects the keys only Compose v2 knows; the
  normalized output is then read as a user would: services, start order, health, volumes, GPU, network.
- docker/Dockerfile and docker/Dockerfile.dagster go through BuildKit's own parser (the `dockerfile` package).
- .dockerignore goes through docker-py's implementation of Docker's ignore rules (docker-compose's own).

No mocks and no skips: without docker-compose the tests fail and say how to install it.
"""
from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_JETSON = DOCKER / "compose.jetson.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERFILE_DAGSTER = DOCKER / "Dockerfile.dagster"
DAGSTER_YAML = DOCKER / "dagster.yaml"

SERVICES = {"postgres", "mlflow", "migrate", "user_code", "live_runner", "webserver", "daemon"}
LONG_RUNNING = SERVICES - {"migrate"}
VOLUMES = {"tp_pgdata", "tp_mlflow_artifacts", "tp_home", "tp_model_cache", "tp_rag", "tp_compute_logs"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")

# ${VAR}, ${VAR:-default}, ${VAR:?message}; not $${VAR}, which Compose passes on to the container's shell
_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


# ---- docker-compose -----------------------------------------------------------------------------------------

def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: these tests validate docker/compose.yaml with Debian's "
                    "docker-compose 1.29.2, which .ci/run installs with apt "
                    "(`apt-get install -y docker-compose`); install it the same way to run them here")
    return exe


def _compose(*files: Path, env_file: Path = ENV_EXAMPLE, args=("config",)) -> subprocess.CompletedProcess:
    """`docker-compose -f F... --env-file E config` in a clean environment (the shell's variables would
    override the env file's)."""
    cmd = [_docker_compose()]
    for f in files:
        cmd += ["-f", str(f)]
    cmd += ["--env-file", str(env_file), *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def _config(*files: Path, env_file: Path = ENV_EXAMPLE) -> dict:
    r = _compose(*files, env_file=env_file)
    assert r.returncode == 0, f"docker-compose rejected {[f.name for f in files]}:\n{r.stderr}"
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return _config(COMPOSE)


@pytest.fixture(scope="module")
def jetson_config() -> dict:
    return _config(COMPOSE, COMPOSE_JETSON)


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            out[name.strip()] = value.strip()
    return out


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes, in the short ("src:dst:mode") or the long form."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v.get("source")
        else:
            parts = v.split(":")
            out[parts[1]] = parts[0]
    return out


@functools.lru_cache(maxsize=1)
def _compose_version() -> str:
    r = subprocess.run([_docker_compose(), "version", "--short"], capture_output=True, text=True)
    return r.stdout.strip() or r.stderr.strip()


def test_compose_files_are_valid_for_docker_compose_1_29():
    for files in ((COMPOSE,), (COMPOSE, COMPOSE_JETSON)):
        r = _compose(*files, args=("config", "-q"))
        assert r.returncode == 0, f"docker-compose {_compose_version()} rejected {[f.name for f in files]}:\n{r.stderr}"
        assert r.stdout == ""
    assert "version" not in yaml.safe_load(COMPOSE.read_text()), "compose.yaml needs no `version:`"


def test_every_service_is_there(config):
    assert SERVICES <= set(config["services"]), sorted(config["services"])
    s = config["services"]
    assert s["migrate"]["command"][:3] == ["tp", "db", "migrate"]
    assert s["user_code"]["command"] == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000",
                                         "-m", "trading_platform.definitions"]
    assert s["webserver"]["command"][:5] == ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000"]
    assert "/opt/dagster/dagster_home/workspace.yaml" in s["webserver"]["command"]
    assert s["daemon"]["command"] == ["dagster-daemon", "run"]
    mlflow_script = " ".join(s["mlflow"]["command"])
    assert "exec mlflow server --app-name basic-auth" in mlflow_script and "--serve-artifacts" in mlflow_script
    # the platform's image runs the code server, the migration and MLflow; the light one the webserver and daemon
    assert s["user_code"]["image"] == s["migrate"]["image"] == s["mlflow"]["image"] == s["live_runner"]["image"]
    assert s["user_code"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert s["webserver"]["image"] == s["daemon"]["image"] != s["user_code"]["image"]
    assert s["webserver"]["build"]["dockerfile"] == "docker/Dockerfile.dagster"
    assert Path(s["user_code"]["build"]["context"]) == ROOT  # `context: ..` from docker/
    assert any("3000" in str(p) for p in s["ui"]["ports"]) and not s["webserver"].get("ports")
    assert any("5000" in str(p) for p in s["mlflow"]["ports"])


def test_the_ui_is_guarded_mlflow_authenticates_and_only_the_launcher_path_holds_the_docker_socket(config):
    """The Dagster UI is published only through the `ui` proxy (basic auth); the webserver holds no Docker socket,
    no root and no signing key, and leaves run termination to the daemon's launcher (TP_TERMINATE_VIA_DAEMON); the
    daemon, which launches the runs, is the only holder of the socket; MLflow runs its basic-auth app, the platform's
    services are its tp_platform user and the faces its read-only tp_reader."""
    s = config["services"]
    with_socket = {name for name, svc in s.items() if "/var/run/docker.sock" in _mounts(svc)}
    assert with_socket == {"daemon"}, with_socket
    web = s["webserver"]
    assert not web.get("ports") and web.get("user") in (None, "") and "DOCKER_HOST" not in web["environment"]
    assert web["environment"]["TP_TERMINATE_VIA_DAEMON"] == "1" and web["environment"]["TP_MODEL_SIGNING_KEY"] == ""
    assert "TP_TERMINATE_VIA_DAEMON" not in s["daemon"]["environment"]  # the daemon's launcher does terminate
    assert [n for n, svc in s.items() if svc.get("user") == "root"] == ["daemon"]
    ui = s["ui"]
    assert Path(_mounts(ui)["/etc/caddy/Caddyfile"]) == DOCKER / "caddy" / "Caddyfile"
    assert "TP_UI_PASSWORD_HASH" in ui["environment"] and not any("PASSWORD" in k and "HASH" not in k
                                                                   for k in ui["environment"])
    assert ui["depends_on"]["webserver"]["condition"] == "service_healthy"
    caddyfile = (DOCKER / "caddy" / "Caddyfile").read_text()
    assert "basicauth" in caddyfile and "reverse_proxy {$TP_UI_UPSTREAM:webserver:3000}" in caddyfile
    # MLflow behind authentication: its users made once it answers, before anything that trains or serves
    assert s["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/tmp/basic_auth.ini"
    assert s["mlflow_users"]["command"] == ["python", "-m", "trading_platform.resources.mlflow_auth"]
    for name in ("user_code", "live_runner"):
        assert s[name]["depends_on"]["mlflow_users"]["condition"] == "service_completed_successfully", name
    for name in ("user_code", "live_runner", "daemon", "webserver", "watchdog", "alerts"):
        assert s[name]["environment"]["MLFLOW_TRACKING_USERNAME"] == "tp_platform", name
    assert s["api"]["environment"]["MLFLOW_TRACKING_USERNAME"] == "tp_reader"


def test_market_store_users_wait_for_the_migration(config):
    s = config["services"]
    # the backup service restores into an empty database, before migrate has run (docs/security.md)
    users = {name for name, svc in s.items() if "TP_DATABASE_URL" in (svc.get("environment") or {})} - {"migrate",
                                                                                                        "backup"}
    assert {"user_code", "daemon", "webserver"} <= users
    for name in users:
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_long_running_services_have_healthchecks_and_restart_policies(config):
    s = config["services"]
    for name in LONG_RUNNING:
        hc = s[name].get("healthcheck")
        assert hc and not hc.get("disable") and hc["test"][0] in ("CMD", "CMD-SHELL"), (name, hc)
        assert s[name].get("restart") in ("unless-stopped", "always"), (name, s[name].get("restart"))
    assert s["user_code"]["healthcheck"]["test"] == ["CMD", "dagster", "api", "grpc-health-check", "-p", "4000"]
    assert s["daemon"]["healthcheck"]["test"] == ["CMD", "dagster-daemon", "liveness-check"]
    # the one-shot is not restarted, nor probed with the image's gRPC healthcheck
    assert s["migrate"]["restart"] == "no"
    assert s["migrate"]["healthcheck"] in ({"disable": True}, {"test": ["NONE"]})


def test_named_volumes_hold_the_state(config):
    assert VOLUMES <= set(config["volumes"]), sorted(config["volumes"])
    # fixed names, independent of the Compose project: the run launcher mounts them by name
    assert {k: v.get("name") for k, v in config["volumes"].items()} == {v: v for v in VOLUMES}
    s = config["services"]
    assert _mounts(s["postgres"])["/var/lib/postgresql/data"] == "tp_pgdata"
    assert _mounts(s["mlflow"])["/var/lib/mlflow/artifacts"] == "tp_mlflow_artifacts"
    assert s["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"] == "/var/lib/mlflow/artifacts"
    code = _mounts(s["user_code"])
    assert code["/var/lib/tp"] == "tp_home"
    assert code["/var/lib/tp/model_cache"] == "tp_model_cache"  # TP_HOME/model_cache (resources/serving.py)
    assert code["/var/lib/tp/rag"] == "tp_rag"  # TP_HOME/rag, the FAISS index (TP_RAG_DIR's default)
    assert s["user_code"]["environment"]["TP_HOME"] == "/var/lib/tp"
    # the init script that creates the dagster and mlflow databases beside `trading`
    init = _mounts(s["postgres"])["/docker-entrypoint-initdb.d/10-create-databases.sql"]
    sql = Path(init).read_text().lower()
    assert "create database dagster" in sql and "create database mlflow" in sql
    # the daemon launches run containers through the host's Docker
    assert _mounts(s["daemon"])["/var/run/docker.sock"] == "/var/run/docker.sock"


def test_user_code_reserves_the_nvidia_gpus(config):
    devices = config["services"]["user_code"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices


def test_the_live_runner_is_where_the_run_launcher_sends_live_runs(config):
    """docker/dagster.yaml sends live runs to the live_runner service: the address it names is that service's
    listening port on the compose network; the runner has the code server's environment and volumes (it
    executes runs as a run container would) and one GPU, not every one."""
    s = config["services"]
    launcher = yaml.safe_load(DAGSTER_YAML.read_text())["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("trading_platform.live.prefork", "PreforkRunLauncher")
    host, port = launcher["config"]["address"].split(":")
    runner = s[host]
    assert runner["command"][:5] == ["tp", "live", "runner", "--listen", f"0.0.0.0:{port}"]
    assert runner["healthcheck"]["test"] == ["CMD", "tp", "live", "runner", "--ping", f"127.0.0.1:{port}"]
    assert runner["environment"] == s["user_code"]["environment"]
    assert _mounts(runner) == _mounts(s["user_code"])
    [gpu] = runner["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and len(gpu["device_ids"]) == 1 and "count" not in gpu
    assert launcher["config"]["jobs"] == ["live_predictions_job"]


def test_jetson_override_uses_the_nvidia_runtime_and_the_jetson_build(jetson_config):
    s = jetson_config["services"]
    assert s["user_code"]["runtime"] == "nvidia"
    assert s["live_runner"]["runtime"] == "nvidia"
    for name in ("user_code", "migrate", "mlflow", "live_runner"):
        assert s[name]["build"]["args"]["BASE"] == "jetson", name
        assert s[name]["image"] == s["user_code"]["image"]
    assert SERVICES <= set(s)
    # the override's defaults are the Dockerfile's (JetPack 6's l4t-jetpack base, a Python >= 3.11)
    defaults = {n: v for c in _parse(DOCKERFILE) if c.cmd == "ARG" for n, v in _pairs(c)}
    args = s["user_code"]["build"]["args"]
    assert args["JETSON_IMAGE"] == defaults["JETSON_IMAGE"]
    assert args["JETSON_PYTHON"] == defaults["JETSON_PYTHON"]
    assert tuple(map(int, args["JETSON_PYTHON"].split("."))) >= (3, 11)


def _launcher() -> dict:
    assert DAGSTER_YAML.exists(), "docker/dagster.yaml (the production instance) is missing"
    launcher = yaml.safe_load(DAGSTER_YAML.read_text())["run_launcher"]["config"]["fallback"]  # every other run
    assert launcher["class"] == "DockerRunLauncher"
    return launcher["config"]


def test_the_network_is_the_one_the_run_launcher_names(config):
    network = _launcher()["network"]
    names = {key: net.get("name", key) for key, net in config["networks"].items()}
    assert network in names.values(), f"dagster.yaml's run launcher names {network!r}; compose has {names}"
    key = next(k for k, v in names.items() if v == network)
    for name, svc in config["services"].items():
        assert key in svc["networks"], name


def test_run_containers_get_what_the_code_server_has(config):
    """The DockerRunLauncher (docker/dagster.yaml) starts each run from what the daemon has: every variable it
    passes on must be set in the daemon (Dagster refuses to launch otherwise), and every run container must see
    the code server's state volumes at the same places."""
    launcher = _launcher()
    s = config["services"]
    passed = [v for v in launcher.get("env_vars", []) if "=" not in v]
    for service in ("daemon", "webserver"):
        missing = [v for v in passed if v not in (s[service].get("environment") or {})]
        assert not missing, f"docker/dagster.yaml passes {missing} to run containers; the {service} has none"
    declared = {v.get("name", k) for k, v in config["volumes"].items()}
    run_mounts = {}
    for v in launcher.get("container_kwargs", {}).get("volumes", []):
        source, target = v.split(":")[:2]
        assert source in declared, f"run containers mount {source!r}, which compose.yaml does not declare"
        run_mounts[target] = source
    names = {k: v.get("name", k) for k, v in config["volumes"].items()}
    code = {t: names.get(src, src) for t, src in _mounts(s["user_code"]).items() if src in names}
    lacking = [f"{src}:{t}" for t, src in code.items() if run_mounts.get(t) != src]
    assert not lacking, (f"the code server mounts {lacking}, the run containers do not: add them to "
                         "run_launcher.config.container_kwargs.volumes in docker/dagster.yaml")
    extra = [f"{src}:{t}" for t, src in run_mounts.items() if code.get(t) != src]
    assert not extra, f"run containers mount {extra}, the code server does not (docker/compose.yaml's user_code)"
    compute_logs = yaml.safe_load(DAGSTER_YAML.read_text()).get("compute_logs", {}).get("config", {}).get("base_dir")
    if compute_logs:
        for service in ("user_code", "webserver"):
            assert compute_logs in _mounts(s[service]), (service, compute_logs)


def test_env_example_names_every_variable_with_a_comment():
    env = _env_example()
    used = set()
    for f in (COMPOSE, COMPOSE_JETSON):
        used |= set(_VAR.findall(f.read_text()))
    assert used, "compose.yaml interpolates nothing?"
    assert not used - set(env), f"used in compose but not in .env.example: {sorted(used - set(env))}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f".env.example: {line!r} has no comment line above it"
    assert env["POSTGRES_PASSWORD"] == "change-me"  # a placeholder, never a real one
    # what the example says is what compose does when a variable is left out
    for f in (COMPOSE, COMPOSE_JETSON):
        for name, default in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", f.read_text()):
            assert env[name] == default, f"{f.name}: ${{{name}:-{default}}} but .env.example says {env[name]!r}"


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (str(i),))
    else:
        yield path, node


def test_no_secret_in_compose_yaml(tmp_path):
    for f in (COMPOSE, COMPOSE_JETSON):
        for path, value in _walk(yaml.safe_load(f.read_text())):
            if not isinstance(value, str):
                continue
            if any(w in path[-1].upper() for w in SECRET_WORDS) and value != "":  # "": deliberately none
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value), (f.name, path, value)
            for m in re.finditer(r"://[^/\s:@]+:([^@\s]+)@", value):
                assert m.group(1).startswith("${"), (f.name, path, "a password in a URL")
    # a password set in the env file reaches every service that needs it, and no command line
    secret = "Pw" + os.urandom(8).hex()
    env_file = tmp_path / ".env"
    signing_key = "Key" + os.urandom(20).hex()
    platform, mlflow_db = "Pf" + os.urandom(8).hex(), "Ml" + os.urandom(8).hex()
    text = ENV_EXAMPLE.read_text().replace("POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD={secret}")
    mlflow_users = {v: v[:2] + os.urandom(8).hex() for v in ("MLFLOW_ADMIN_PASSWORD", "TP_MLFLOW_PLATFORM_PASSWORD",
                                                               "TP_MLFLOW_READER_PASSWORD", "MLFLOW_FLASK_SECRET_KEY")}
    for var, value in (("TP_MODEL_SIGNING_KEY", signing_key), ("TP_PLATFORM_PASSWORD", platform),
                       ("TP_MLFLOW_DB_PASSWORD", mlflow_db), *mlflow_users.items()):
        text = re.sub(rf"(?m)^{var}=.*$", f"{var}={value}", text)
    env_file.write_text(text)
    assert secret not in COMPOSE.read_text()
    s = _config(COMPOSE, env_file=env_file)["services"]
    # the model signing key: every process that trains or serves (runs get it from the daemon), never MLflow
    for name in ("user_code", "live_runner", "daemon", "api"):
        assert s[name]["environment"]["TP_MODEL_SIGNING_KEY"] == signing_key, name
    assert "TP_MODEL_SIGNING_KEY" in yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"][
        "config"]["fallback"]["config"]["env_vars"]  # what the daemon hands every run container
    assert signing_key not in str(s["mlflow"]) + str(s["collector"]) + str(s["webserver"]) + str(s["ui"])
    for name, svc in s.items():
        assert signing_key not in " ".join(map(str, svc.get("command") or [])), name
    assert s["postgres"]["environment"]["POSTGRES_PASSWORD"] == secret
    # each service its role: the superuser only for the deploy step (and backups, a profile); the platform's
    # services as tp_platform (the market store's rows, Dagster's storage); MLflow as tp_mlflow
    assert s["migrate"]["environment"]["TP_DATABASE_URL"] == f"postgresql://tp:{secret}@postgres:5432/trading"
    assert s["migrate"]["environment"]["TP_PLATFORM_PASSWORD"] == platform
    assert s["migrate"]["environment"]["TP_MLFLOW_DB_PASSWORD"] == mlflow_db
    for name in ("user_code", "live_runner", "daemon", "webserver", "alerts", "watchdog", "api"):
        env = s[name]["environment"]
        assert env["TP_DATABASE_URL"] == f"postgresql://tp_platform:{platform}@postgres:5432/trading", name
        assert (env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_PASSWORD"]) == ("tp_platform", platform), name
        assert secret not in str(env), name  # the superuser's password reaches no service of the platform
    assert s["collector"]["environment"]["TP_DATABASE_URL"].startswith("postgresql://live_writer:")
    assert s["user_code"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert s["user_code"]["environment"]["TP_EMBEDDED"] == "0"
    assert s["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql+psycopg://tp_mlflow:{mlflow_db}@postgres:5432/mlflow")
    init = (DOCKER / "postgres" / "10-create-databases.sql").read_text()
    assert "CREATE DATABASE dagster OWNER tp_platform;" in init and "CREATE DATABASE mlflow OWNER tp_mlflow;" in init
    assert s["user_code"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == mlflow_users["TP_MLFLOW_PLATFORM_PASSWORD"]
    assert s["api"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == mlflow_users["TP_MLFLOW_READER_PASSWORD"]
    assert s["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == mlflow_users["MLFLOW_ADMIN_PASSWORD"]
    assert mlflow_users["MLFLOW_ADMIN_PASSWORD"] not in str(s["user_code"]) + str(s["api"])  # the admin's: MLflow's
    for name, svc in s.items():
        for value in (secret, platform, mlflow_db, *mlflow_users.values()):
            assert value not in " ".join(map(str, svc.get("command") or [])), name
        assert secret not in str(svc.get("build", {}).get("args", {})), name


def test_a_missing_password_is_refused(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(re.sub(r"(?m)^POSTGRES_PASSWORD=.*$", "", ENV_EXAMPLE.read_text()))
    r = _compose(COMPOSE, env_file=env_file)
    assert r.returncode != 0 and "set POSTGRES_PASSWORD in docker/.env" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def compose_copy(tmp_path_factory) -> Path:
    """compose.yaml rewritten by PyYAML (anchors expanded) in a docker/ directory of its own, valid as it is."""
    docker = tmp_path_factory.mktemp("deploy") / "docker"
    docker.mkdir()
    shutil.copytree(DOCKER / "postgres", docker / "postgres")
    shutil.copy(DOCKER / "alerts.env", docker / "alerts.env")  # the alerts service's env_file
    control = docker / "control.yaml"
    control.write_text(yaml.safe_dump(yaml.safe_load(COMPOSE.read_text()), sort_keys=False))
    r = _compose(control, args=("config", "-q"))
    assert r.returncode == 0, r.stderr
    return control


@pytest.mark.parametrize("mutation, key", [
    (lambda d: d.__setitem__("name", "trading_platform"), "name"),
    (lambda d: d["services"]["postgres"]["healthcheck"].__setitem__("start_interval", "2s"), "start_interval"),
    (lambda d: d["services"]["user_code"]["depends_on"]["migrate"].__setitem__("restart", True), "restart"),
])
def test_the_validator_rejects_compose_v2_only_keys(compose_copy, mutation, key):
    """Proof that the check above can fail: the keys docker-compose 1.29.2 does not know are refused (the
    unchanged copy passes, see the fixture)."""
    data = yaml.safe_load(compose_copy.read_text())
    mutation(data)
    bad = compose_copy.with_name(f"compose-{key}.yaml")
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    r = _compose(bad, args=("config", "-q"))
    assert r.returncode != 0 and key in r.stderr, (
        f"docker-compose {_compose_version()} accepted `{key}` (is it Debian's 1.29.2?):\n{r.stderr}")


# ---- Dockerfiles --------------------------------------------------------------------------------------------

def _parse(path: Path):
    import dockerfile  # BuildKit's parser (Go), the `dockerfile` package of the dev extras

    return dockerfile.parse_file(str(path))


def _pairs(cmd) -> list[tuple[str, str | None]]:
    """(name, value) of an ENV or ARG instruction (value None: an ARG without a default)."""
    if cmd.cmd == "ARG":
        return [(v.partition("=")[0], v.partition("=")[2] if "=" in v else None) for v in cmd.value]
    return list(zip(cmd.value[::2], cmd.value[1::2]))


def _stages(cmds) -> dict[str, list]:
    """Instructions per stage (named by AS, else by index); '' holds the global ARGs."""
    stages, current = {"": []}, ""
    for c in cmds:
        if c.cmd == "FROM":
            current = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else str(len(stages))
            stages[current] = [c]
        else:
            stages[current].append(c)
    return stages


def _setup_requires() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = next(k for k in call.keywords if k.arg == "install_requires")
    return [ast.literal_eval(e) for e in kw.value.elts]


def _pip_installs(cmds) -> list[tuple[int, list[str]]]:
    """(position, requirement arguments) of every `pip install` in RUN instructions."""
    out = []
    for i, c in enumerate(cmds):
        if c.cmd != "RUN":
            continue
        lexer = shlex.shlex(c.value[0], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands, words = [], []
        for token in lexer:
            if token in ("&&", ";", "||", "|"):
                commands.append(words)
                words = []
            else:
                words.append(token)
        for words in commands + [words]:
            for j in range(len(words) - 1):
                if words[j].endswith("pip") and words[j + 1] == "install":
                    args, skip = [], False
                    for w in words[j + 2:]:
                        if skip:
                            skip = False
                        elif w in ("--index-url", "-i", "--extra-index-url", "-c", "-r", "--constraint"):
                            skip = True
                        elif not w.startswith("-"):
                            args.append(w)
                    out.append((i, args))
    return out


def test_dockerfiles_parse():
    for path in (DOCKERFILE, DOCKERFILE_DAGSTER):
        cmds = _parse(path)
        assert [c for c in cmds if c.cmd == "FROM"], path.name


def test_user_code_dockerfile_has_the_cpu_cuda_and_jetson_bases():
    stages = _stages(_parse(DOCKERFILE))
    args = dict(p for c in stages[""] for p in _pairs(c))
    assert args["BASE"] == "cpu"
    bases = {}
    for variant in ("cpu", "cuda", "jetson"):
        frm = stages[f"base-{variant}"][0].value[0]
        bases[variant] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], frm)
    assert bases["cpu"].startswith("python:3.11")
    assert bases["cuda"].startswith("nvidia/cuda:") and "runtime" in bases["cuda"]
    assert bases["jetson"].startswith("nvcr.io/nvidia/l4t-jetpack:r36")  # JetPack 6
    final = list(stages)[-1]
    assert stages[final][0].value[0] == "base-${BASE}"
    # each variant's torch and FAISS: the CPU build as `make install` pins it, PyTorch's CUDA index, NVIDIA's
    # Jetson index; faiss-gpu on CUDA only
    env = {v: dict(p for c in stages[f"base-{v}"] if c.cmd == "ENV" for p in _pairs(c)) for v in bases}
    make_spec = re.search(r"^TORCH_SPEC \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert env["cpu"]["TP_IMAGE_TORCH_SPEC"] == make_spec
    assert env["cpu"]["TP_IMAGE_TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert env["cuda"]["TP_IMAGE_TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert "jetson-ai-lab" in env["jetson"]["TP_IMAGE_TORCH_INDEX_URL"]
    assert {v: env[v]["TP_IMAGE_EXTRAS"] for v in env} == {"cpu": "cpu", "cuda": "gpu", "jetson": "cpu"}
    final_args = {n for c in stages[final] if c.cmd == "ARG" for n, _ in _pairs(c)}
    assert {"TORCH_SPEC", "TORCH_INDEX_URL", "EXTRAS", "DAGSTER_CURRENT_IMAGE"} <= final_args


def test_user_code_dockerfile_installs_torch_before_the_package():
    stages = _stages(_parse(DOCKERFILE))
    final = stages[list(stages)[-1]]
    installs = _pip_installs(final)
    torch_at = [i for i, reqs in installs if any("TORCH_SPEC" in r for r in reqs)]
    package_at = [i for i, reqs in installs if any(r.startswith(".") for r in reqs)]
    copy_pkg_at = [i for i, c in enumerate(final) if c.cmd == "COPY" and "setup.py" in c.value]
    assert torch_at and package_at and copy_pkg_at, installs
    assert max(torch_at) < min(package_at) and max(torch_at) < min(copy_pkg_at)
    run = " ".join(final[torch_at[0]].value)
    assert "--index-url" in run and "TORCH_INDEX_URL" in run
    # the dependencies come from setup.py with the variant's extras (faiss-cpu or faiss-gpu)
    deps = [c.value[0] for c in final if c.cmd == "RUN" and "requirements.txt" in c.value[0]]
    assert deps and "${EXTRAS:-$TP_IMAGE_EXTRAS}" in deps[0] and "pip install -r requirements.txt" in deps[0]


def test_user_code_dockerfile_runtime():
    cmds = _parse(DOCKERFILE)
    final = _stages(cmds)[list(_stages(cmds))[-1]]
    env = dict(p for c in final if c.cmd == "ENV" for p in _pairs(c))
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TP_HOME"] == "/var/lib/tp"
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert env["DAGSTER_CURRENT_IMAGE"] == "${DAGSTER_CURRENT_IMAGE}"  # from the build arg
    assert env["TP_EMBEDDED"] == "0"
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [c for c in final if c.cmd == "WORKDIR"]
    assert ("4000",) in [c.value for c in final if c.cmd == "EXPOSE"]
    (hc,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert hc.value[0] == "CMD" and "dagster api grpc-health-check -p 4000" in hc.value[1]
    copies = [c.value for c in final if c.cmd == "COPY"]
    assert any(v[0] == "docker/dagster.yaml" and v[-1].startswith("/opt/dagster/dagster_home") for v in copies)


def test_dockerfiles_bake_in_no_secret():
    for path in (DOCKERFILE, DOCKERFILE_DAGSTER):
        for c in _parse(path):
            if c.cmd in ("ENV", "ARG"):
                for name, value in _pairs(c):
                    if any(w in name.upper() for w in SECRET_WORDS):
                        assert not value, f"{path.name}:{c.start_line}: {name} has a value baked in"
            if c.cmd == "RUN":
                assert not re.search(r"://[^/\s:@]+:[^@\s]+@", c.value[0]), f"{path.name}:{c.start_line}"


def test_dagster_image_installs_exactly_the_pinned_dagster_packages():
    pins = {r for r in _setup_requires() if r.split("==")[0].startswith("dagster")}
    assert pins == {"dagster==1.13.27", "dagster-webserver==1.13.27", "dagster-postgres==0.29.27",
                    "dagster-docker==0.29.27"}, pins  # setup.py's pins (the images must run the same Dagster)
    cmds = _parse(DOCKERFILE_DAGSTER)
    installed = [r for _, reqs in _pip_installs(cmds) for r in reqs]
    assert sorted(installed) == sorted(pins)
    env = dict(p for c in cmds if c.cmd == "ENV" for p in _pairs(c))
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    copies = [c.value for c in cmds if c.cmd == "COPY"]
    assert any({"docker/dagster.yaml", "docker/workspace.yaml"} <= set(v[:-1])
               and v[-1].rstrip("/") == "/opt/dagster/dagster_home" for v in copies), copies
    # of the platform, the run launcher only (the platform's code runs in the user-code image)
    platform = sorted(src for v in copies for src in v[:-1] if "trading_platform" in src)
    assert platform == ["trading_platform/__init__.py", "trading_platform/live/__init__.py",
                        "trading_platform/live/prefork.py"], platform
    assert env["PYTHONPATH"] == "/opt/dagster/lib"


# ---- .dockerignore ------------------------------------------------------------------------------------------

def test_dockerignore_keeps_state_data_and_secrets_out(tmp_path):
    """Docker's ignore rules as docker-py (docker-compose's library) applies them, on a tree with the files the
    Dockerfiles COPY and the ones that must stay out."""
    exe = _docker_compose()
    interpreter = Path(exe).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    probe = subprocess.run([*interpreter, "-c", "import docker.utils.build"], capture_output=True, text=True)
    assert probe.returncode == 0, f"docker-compose's Python has no docker-py: {probe.stderr}"
    copied = set()
    for path in (DOCKERFILE, DOCKERFILE_DAGSTER):
        for c in _parse(path):
            if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
                copied |= set(c.value[:-1])
    assert {"setup.py", "trading_platform", "docker/dagster.yaml", "docker/workspace.yaml"} <= copied
    keep = {"setup.py", "trading_platform/__init__.py", "trading_platform/definitions.py", "docker/dagster.yaml",
            "docker/workspace.yaml", "docker/.env.example", "tests/fixtures/recorded/yahoo/AAPL_1d.csv"}
    drop = {".tp/pg/PG_VERSION", ".tp/mlflow.db", ".venv/bin/python", ".git/HEAD", "candles.parquet",
            "data/BTC_USDT.csv", "data/x/EURUSD.parquet", "mlruns/0/meta.yaml", "mlartifacts/1/model.pkl",
            ".env", "docker/.env", "docker/alerts.env", "trading_platform/__pycache__/cli.cpython-311.pyc",
            "trading_platform.egg-info/PKG-INFO", ".pytest_cache/README.md"}
    for rel in keep | drop:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    script = ("import sys, json; from docker.utils.build import exclude_paths\n"
              "pats = [l.strip() for l in open(sys.argv[1] + '/.dockerignore') if l.strip() and not l.startswith('#')]\n"
              "print(json.dumps(sorted(exclude_paths(sys.argv[1], pats))))")
    r = subprocess.run([*interpreter, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sent = set(json.loads(r.stdout))
    assert keep <= sent, f"left out of the build context: {sorted(keep - sent)}"
    assert not drop & sent, f"sent to the Docker daemon: {sorted(drop & sent)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_the_alert_delivery_worker_runs_as_its_own_service_with_the_destination_variables(config):
    """`tp alerts deliver` is a long-running service of its own (never a sensor), restarted when it dies, and the
    only one that reads docker/alerts.env (the variables alert destinations name: webhook URLs, bot tokens)."""
    alerts = config["services"]["alerts"]
    assert alerts["command"] == ["tp", "alerts", "deliver"] and alerts["restart"] == "unless-stopped"
    assert alerts["environment"]["TP_DATABASE_URL"].startswith("postgresql://")
    raw = yaml.safe_load(COMPOSE.read_text())  # `config` has merged env_file into environment: the file says it
    readers = [name for name, svc in raw["services"].items()
               if any("alerts.env" in str(f) for f in svc.get("env_file") or [])]
    assert readers == ["alerts", "watchdog"]  # the watchdog sends itself while the database is down
    assert all(line.startswith("#") or not line.strip() for line in (DOCKER / "alerts.env").read_text().splitlines())


def test_the_backup_profile_reaches_every_store_and_never_the_signing_key(tmp_path):
    """`--profile backup`: a one-shot `tp backup`/`tp restore` service with the deployment's environment, MLflow's
    database and artifact volume and the knowledge base's volume, writing to TP_BACKUP_DIR; it is not started by a
    plain `up` (a profile), has no Docker socket, and no password reaches its command line."""
    secret = "Pw" + os.urandom(8).hex()
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD={secret}"))
    r = subprocess.run([_docker_compose(), "--profile", "backup", "-f", str(COMPOSE), "--env-file", str(env_file),
                        "config"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")})
    assert r.returncode == 0, r.stderr
    b = yaml.safe_load(r.stdout)["services"]["backup"]
    env = b["environment"]
    assert env["TP_BACKUP_MLFLOW_DB"] == f"postgresql://tp:{secret}@postgres:5432/mlflow"
    assert env["TP_BACKUP_MLFLOW_ARTIFACTS"] == "/var/lib/mlflow/artifacts" and env["TP_EMBEDDED"] == "0"
    assert env["DAGSTER_PG_DB"] == "dagster" and env["TP_DATABASE_URL"].endswith("@postgres:5432/trading")
    mounts = _mounts(b)
    assert "/var/lib/mlflow/artifacts" in mounts and "/var/lib/tp/rag" in mounts and "/backups" in mounts
    assert "/var/run/docker.sock" not in mounts and "/var/lib/tp" not in mounts  # no TP_HOME: no key file
    assert secret not in " ".join(map(str, b.get("command") or []))
    assert b["profiles"] == ["backup"] and b["restart"] == "no"  # a one-shot, started only by hand


def test_the_ui_proxy_asks_for_credentials_and_passes_only_the_right_ones(tmp_path, config):
    """docker/caddy/Caddyfile run by a real Caddy (Debian's 2.6; the image is 2.8) in front of a stand-in webserver:
    401 without credentials or with wrong ones, the webserver's answer with the right ones; the `ui` service's start
    refuses the .env.example placeholder instead of a hash."""
    import base64
    import http.server
    import socket
    import threading
    import time
    import urllib.error
    import urllib.request

    caddy = shutil.which("caddy")
    assert caddy, "Debian's caddy is needed (.ci/run installs it)"

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"dagster_webserver_version": "stand-in"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "ui-" + os.urandom(6).hex()
    hashed = subprocess.run([caddy, "hash-password", "--plaintext", password], capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "TP_UI_USER": "admin",
           "TP_UI_PASSWORD_HASH": base64.b64encode(hashed.encode()).decode(),  # as .env.example says to store it
           "TP_UI_ADDRESS": f"http://127.0.0.1:{port}", "TP_UI_UPSTREAM": f"127.0.0.1:{upstream.server_address[1]}"}
    proc = subprocess.Popen([caddy, "run", "--config", str(DOCKER / "caddy" / "Caddyfile"), "--adapter", "caddyfile"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/server_info"

    def get(auth=None):
        req = urllib.request.Request(url)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                status = get()[0]
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("caddy did not start")
        assert status == 401
        assert get(("admin", "wrong-password"))[0] == 401
        assert get(("someone", password))[0] == 401
        assert get(("admin", password)) == (200, b'{"dagster_webserver_version": "stand-in"}')
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
        upstream.shutdown()
    assert password not in out
    # the ui service's own start: the placeholder of .env.example is refused, naming the variable
    # (`config` prints Compose's escaped `$$`; the container's shell gets `$`)
    script = config["services"]["ui"]["command"][2].replace("$$", "$").replace("exec caddy run", "exec true caddy run")
    placeholder = _env_example()["TP_UI_PASSWORD_HASH"]
    r = subprocess.run(["sh", "-c", script], env={"TP_UI_PASSWORD_HASH": placeholder, "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True)
    assert r.returncode == 1 and "set TP_UI_PASSWORD_HASH" in r.stderr
    ok = subprocess.run(["sh", "-c", script], env={"TP_UI_PASSWORD_HASH": env["TP_UI_PASSWORD_HASH"],
                                                   "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_the_mlflow_service_writes_the_basic_auth_configuration_its_test_runs(tmp_path, config):
    """The mlflow service's start script, run as its container would (Compose's `$$` unescaped, MLflow's exec
    replaced): a 0600 basic_auth.ini with READ by default, the backend database as the auth store and the
    administrator's name, the form tests/test_mlflow_auth.py runs a real basic-auth server with; no password in it
    but the backend URI's."""
    svc = config["services"]["mlflow"]
    script = svc["command"][2].replace("$$", "$").replace("/tmp/basic_auth.ini", str(tmp_path / "basic_auth.ini"))
    script = script.replace("exec mlflow server", "exec true mlflow server")
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_BACKEND_STORE_URI": svc["environment"]["MLFLOW_BACKEND_STORE_URI"],
           "MLFLOW_AUTH_ADMIN_USERNAME": svc["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"]}
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ini = tmp_path / "basic_auth.ini"
    assert oct(ini.stat().st_mode & 0o777) == "0o600"
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ini)
    assert dict(cfg["mlflow"]) == {
        "default_permission": "READ", "database_uri": svc["environment"]["MLFLOW_BACKEND_STORE_URI"],
        "admin_username": "admin", "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}
    assert svc["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] not in ini.read_text()


def test_the_ci_script_parses():
    """`.ci/run` is what CI runs: a shell syntax error there fails every landing before a test runs."""
    r = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
