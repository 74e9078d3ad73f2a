from pathlib import Path

import pytest

from onboard.config import ConfigError, load_config
from tools.config_faults import BAD_CONFIGS, refusal_problem, run_bad_config

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


@pytest.mark.parametrize("rate", ["-15", "0", "4.9"])
def test_rate_below_the_minimum_names_key_reason_and_fix(tmp_path, rate):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"control:\n  rate_hz: {rate}\n"))
    msg = str(err.value)
    assert "line 2: control.rate_hz: at least 5 Hz" in msg and f"(got {rate})" in msg
    assert "react to a fault" in msg and "raise control.rate_hz" in msg


def test_rate_at_the_minimum_loads(tmp_path):
    assert load_config(write(tmp_path, "control:\n  rate_hz: 5\n")).control.rate_hz == 5


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


def test_validation_errors_name_the_line(tmp_path):
    text = "# robot\nrobot:\n  cameras:\n    - name: a\n    - {name: b, fps: fast}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert ": line 5: robot.cameras[1].fps" in str(err.value)


SAFETY = "safety:\n  joints:\n    gripper: {min: -0.2, max: 1.7}\n"


def test_a_second_section_block_is_refused_not_merged_silently(tmp_path):
    # PyYAML keeps the last `safety:` block: the first one's limits would be dropped without a word.
    text = SAFETY + "control:\n  rate_hz: 15\nsafety:\n  nonfinite_chunks: 3\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'c.yaml'}: line 6: key 'safety' is given twice (first on line 1)")
    assert "merge the two into one" in msg and "\n" not in msg


def test_a_nested_duplicate_names_its_path(tmp_path):
    text = "safety:\n  stop:\n    park_speed: 0.2\n    park_speed: 1.5\n"
    with pytest.raises(ConfigError, match="line 4: key 'safety.stop.park_speed' is given twice"):
        load_config(write(tmp_path, text))


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    text = (
        "x-cam: &cam {width: 64, height: 64}\n"
        "robot:\n  cameras:\n    - <<: *cam\n      name: a\n      width: 32\n"
    )
    with pytest.raises(ConfigError, match="x-cam: unknown key"):  # the anchor's own key, not a duplicate
        load_config(write(tmp_path, text))
    text = "robot:\n  cameras:\n    - &cam {name: a, width: 64}\n    - <<: *cam\n      name: b\n      width: 32\n"
    cams = load_config(write(tmp_path, text)).robot.cameras
    assert [(c.name, c.width) for c in cams] == [("a", 64), ("b", 32)]


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "safety:\n  joints:\n    elbow_flex: {min: -.inf, max: 1.6}\n",
            "line 3: safety.joints.elbow_flex.min: must be a finite number (got -inf)",
        ),
        (
            "safety:\n  joints:\n    elbow_flex:\n      min: -1.6\n      max: .inf\n",
            "line 5: safety.joints.elbow_flex.max: must be a finite number (got inf)",
        ),
        (
            "safety:\n  stop:\n    rest_pose: {shoulder_pan: 0.0, elbow_flex: .nan}\n",
            "line 3: safety.stop.rest_pose.elbow_flex: must be a finite number (got nan)",
        ),
        (
            "safety:\n  joints:\n    gripper: {min: -0.2, max: 1.7, max_relative_target: .inf}\n",
            "safety.joints.gripper.max_relative_target: must be a finite number",
        ),
        ("policy:\n  standin:\n    period_s: .inf\n", "policy.standin.period_s: must be a finite number"),
        ("telemetry:\n  report_every_s: .nan\n", "telemetry.report_every_s: must be a finite number"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert fragment in str(err.value) and ".inf and .nan are refused" in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "{}\n"])
def test_a_file_without_sections_is_refused(tmp_path, text):
    # It used to load every default, the stand-in devices included.
    with pytest.raises(ConfigError, match="the file has no sections .* start from configs/standin.yaml"):
        load_config(write(tmp_path, text))


def test_non_utf8_names_the_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"control:\n  rate_hz: 15\npolicy:\n  instruction: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"{p}: line 4: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_a_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes("\ufeffpolicy:\n  instruction: café\n".encode())
    assert load_config(p).policy.instruction == "café"


@pytest.mark.parametrize("command", [("run",), ("service", "run")], ids=["run", "service-run"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_cli_one_line_exit_2(command, case):
    """Each bad file `bench faults` runs (tools/config_faults.py), through both commands that load a config."""
    content, fragment = BAD_CONFIGS[case]
    path, done = run_bad_config(content, command)
    assert refusal_problem(path, fragment, done) is None, done.stderr
