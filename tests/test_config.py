"""load_config: one message naming the file, the key and the problem; environment
overrides; paths relative to the config's folder; and the command line's exit codes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")

CATEGORY = """
[[categories]]
code = "garbage"
name = "垃圾堆放"
name_en = "Garbage"
class = "request"
"""


def write(tmp_path: Path, text: str, name: str = "whistle.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return str(caught.value)


def test_the_example_config_is_valid():
    config = load_config(ROOT / "config.example.toml", env={})
    assert config.timezone == "Asia/Shanghai" and len(config.categories) == 8
    assert config.telegram.admins == [5001]


@pytest.mark.parametrize("text, key, problem", [
    ("colour = 'red'\n" + CATEGORY, "colour", "unknown key"),
    ("[telegram]\ntokne = 'x'\n" + CATEGORY, "telegram.tokne", "unknown key"),
    ("[telegram]\npoll_timeout = 'x'\n" + CATEGORY, "telegram.poll_timeout", "integer"),
    ("[telegram]\npoll_timeout = 99\n" + CATEGORY, "telegram.poll_timeout", "50"),
    ("timezone = 'Mars/Olympus_Mons'\n" + CATEGORY, "timezone", "Mars/Olympus_Mons"),
    ("default_locale = 'fr'\n" + CATEGORY, "default_locale", "zh_Hans"),
    ("[intake]\nmax_photos = -1\n" + CATEGORY, "intake.max_photos", "0"),
    ("timezone = 'Asia/Shanghai'\n", "categories", "required"),
    ("categories = []\n", "categories", "at least 1"),
    (CATEGORY.replace('class = "request"', 'class = "complaint"'), "categories.0.class", "enforcement"),
    (CATEGORY.replace('code = "garbage"', 'code = "Garbage!"'), "categories.0.code", "pattern"),
    ("[web]\ntrusted_proxies = ['nginx.local']\n" + CATEGORY, "web.trusted_proxies",
     "not an address or network"),
])
def test_a_bad_value_is_named_with_file_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    message = error_of(path)
    assert str(path) in message
    assert f"  {key}: " in message, message
    assert problem.lower() in message.lower(), message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_duplicate_category_codes(tmp_path):
    path = write(tmp_path, CATEGORY + CATEGORY)
    message = error_of(path)
    assert str(path) in message and "duplicate" in message and "garbage" in message, message
    assert "categor" in message  # names what is duplicated


def test_invalid_toml_names_the_file_and_the_place(tmp_path):
    path = write(tmp_path, "[telegram]\npoll_timeout = = 3\n" + CATEGORY)
    message = error_of(path)
    assert str(path) in message and "not valid TOML" in message and "line 2" in message, message


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in message and "not found" in message


def test_a_section_given_as_a_value_is_a_config_error_even_with_the_env_override(tmp_path):
    """`database = "sqlite:///x.db"` instead of a [database] table: reported as a config
    error naming `database` — also when WHISTLE_DATABASE_URL is set, as in production."""
    path = write(tmp_path, "database = 'sqlite+aiosqlite:///x.db'\n" + CATEGORY)
    assert "  database: " in error_of(path)
    message = error_of(path, env={"WHISTLE_DATABASE_URL": "sqlite+aiosqlite:////tmp/y.db"})
    assert str(path) in message and "database" in message


def test_environment_overrides_token_and_database_url(tmp_path):
    path = write(tmp_path, "[telegram]\ntoken = 'from-file'\n[database]\nurl = 'sqlite+aiosqlite:///a.db'\n"
                 + CATEGORY)
    config = load_config(path, env={})
    assert config.telegram.token == "from-file"
    config = load_config(path, env={"WHISTLE_TELEGRAM_TOKEN": "123:from-env",
                                    "WHISTLE_DATABASE_URL": "postgresql+asyncpg://w@db:5432/whistle"})
    assert config.telegram.token == "123:from-env"
    assert config.database.url == "postgresql+asyncpg://w@db:5432/whistle"
    # an empty variable does not wipe the file's value
    config = load_config(path, env={"WHISTLE_TELEGRAM_TOKEN": ""})
    assert config.telegram.token == "from-file"
    # and the override also fills a section the file does not have
    bare = write(tmp_path, CATEGORY, name="bare.toml")
    assert load_config(bare, env={"WHISTLE_TELEGRAM_TOKEN": "9:t"}).telegram.token == "9:t"


def test_relative_paths_are_taken_from_the_configs_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc" / "whistle"
    folder.mkdir(parents=True)
    write(folder, "org_file = 'org/district.toml'\nmedia_dir = 'media'\n"
          "[database]\nurl = 'sqlite+aiosqlite:///var/whistle.db'\n" + CATEGORY)
    monkeypatch.chdir(tmp_path)  # relative to the file, not to the working directory
    config = load_config(Path("etc/whistle/whistle.toml"), env={})
    assert config.org_file == folder / "org" / "district.toml"
    assert config.media_dir == folder / "media"
    assert config.database.url == f"sqlite+aiosqlite:///{folder / 'var' / 'whistle.db'}"
    absolute = write(folder, "org_file = '/srv/org.toml'\n[database]\n"
                     "url = 'sqlite+aiosqlite:////srv/w.db'\n" + CATEGORY, name="abs.toml")
    config = load_config(absolute, env={})
    assert config.org_file == Path("/srv/org.toml")
    assert config.database.url == "sqlite+aiosqlite:////srv/w.db"
    memory = write(folder, "[database]\nurl = 'sqlite+aiosqlite:///:memory:'\n" + CATEGORY, name="m.toml")
    assert load_config(memory, env={}).database.url == "sqlite+aiosqlite:///:memory:"


# ---- the command line ----------------------------------------------------------------------

PYTHON = ROOT / ".venv" / "bin" / "python"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")}
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, "-m", "bot", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_check_config_with_a_bad_file_exits_2_with_one_message(tmp_path):
    bad = write(tmp_path, "[telegram]\npoll_timeout = 'x'\n" + CATEGORY)
    done = run_cli("--config", str(bad), "check-config")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert str(bad) in done.stderr and "telegram.poll_timeout" in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("config file ") and len(lines) == 2, done.stderr


def test_check_config_with_a_missing_file_exits_2(tmp_path):
    done = run_cli("--config", str(tmp_path / "missing.toml"), "check-config")
    assert done.returncode == 2 and "not found" in done.stderr and "Traceback" not in done.stderr


def test_check_config_with_a_good_file_exits_0():
    done = run_cli("--config", "config.example.toml", "check-config")
    assert done.returncode == 0 and "is valid" in done.stdout, done


def test_the_config_option_may_follow_the_command(tmp_path):
    """`python -m bot run --config FILE` as well as `python -m bot --config FILE run`, at any
    depth; the file named is the one read (a bad one is reported by name)."""
    bad = write(tmp_path, "[telegram]\npoll_timeout = 'x'\n" + CATEGORY)
    for args in (["run", "--config", str(bad), "--port", "0"], ["check-config", "--config", str(bad)],
                 ["db", "upgrade", f"--config={bad}"], ["-v", "report", "--config", str(bad)]):
        done = run_cli(*args)
        assert done.returncode == 2, (args, done)
        assert "unrecognized" not in done.stderr and str(bad) in done.stderr, (args, done.stderr)
    done = run_cli("check-config", "--config", "config.example.toml")
    assert done.returncode == 0 and "config.example.toml is valid" in done.stdout, done
    done = run_cli("run", "--no-such-option")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr


def test_run_without_a_token_explains_botfather_then_serves_the_sandbox(tmp_path):
    """No token: the BotFather steps are printed, then (since the sandbox arrived) `run` serves
    the local sandbox instead of exiting 3; SIGTERM stops it cleanly."""
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE.replace('org_file = "samples/district/district.toml"',
                                      f'org_file = "{ROOT / "samples" / "district" / "district.toml"}"'),
                      encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")}
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    process = subprocess.Popen([python, "-m", "bot", "--config", str(config), "run", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        serving = False
        while not serving and process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as client:
                client.settimeout(0.5)
                serving = client.connect_ex(("127.0.0.1", port)) == 0
            if not serving:
                time.sleep(0.1)  # polling a child process's port, not the bot
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=60)  # a loaded machine starts slowly
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert "BotFather" in err and "WHISTLE_TELEGRAM_TOKEN" in err, err
    assert "Traceback" not in err, err
    assert serving, f"exit {process.returncode}; stdout: {out!r}"
    assert process.returncode == 0 and str(port) in out
    assert (tmp_path / "var").exists()  # its data go next to the config, not into the repo
