from pathlib import Path

import pytest

from onboard.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_sim_config_loads():
    cfg = load_config(REPO / "configs" / "sim.yaml")
    assert cfg.control.rate_hz == 15
    assert cfg.policy.execute_horizon == 5


def test_typo_key_names_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "control:\n  rate_hx: 15\n"))
    msg = str(err.value)
    assert "control.rate_hx: unknown key" in msg
    assert "did you mean 'rate_hz'" in msg
    assert "\n" not in msg


def test_negative_rate_names_key_and_range(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "control:\n  rate_hz: -15\n"))
    msg = str(err.value)
    assert "control.rate_hz" in msg and "greater than 0" in msg and "-15" in msg


def test_wrong_type_in_list_item(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "robot:\n  cameras:\n    - {name: a, fps: fast}\n"))
    assert "robot.cameras[0].fps" in str(err.value)


def test_unknown_choice_lists_accepted(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "policy:\n  blending: {mode: cubic}\n"))
    assert "policy.blending.mode" in str(err.value) and "'linear'" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "control: [\n"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("control:\n  rate_hx: 15\n", "control.rate_hx: unknown key"),
        ("control:\n  rate_hz: -1\n", "control.rate_hz"),
    ],
)
def test_cli_one_line_exit_2(tmp_path, cli, text, fragment):
    result = cli("run", "--config", str(write(tmp_path, text)), "--duration", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


def test_cli_missing_file_exit_2(tmp_path, cli):
    result = cli("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"anchorvla: error: config file not found: {tmp_path / 'missing.yaml'} (pass --config with a YAML file, e.g. configs/sim.yaml)"
    ]
