"""Tests for job.spec and common.schema: loading, validating and overriding the YAML job spec.

Every problem must come out as one SpecError whose message reads
'<file>: <key.path>: <problem>. <fix>', so the tests match on that user-facing text.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import pytest
import yaml

from common.schema import SpecError
from csgm.config import DataConfig, RecoveryConfig, TrainConfig
from job.spec import (
    JobSpec,
    load_spec,
    spec_digest,
    spec_to_yaml,
)

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, overrides: Sequence[str] = ()) -> JobSpec:
    return load_spec(_write(tmp_path, text), overrides)


def _error(tmp_path: Path, text: str, overrides: Sequence[str] = ()) -> SpecError:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, text, overrides)
    return info.value


# --------------------------------------------------------------------------------------------
# Bad files: (yaml text, regex the message must match after the '<file>: ' prefix)
# --------------------------------------------------------------------------------------------

BAD_FILES = [
    pytest.param("name: a\ntrain:\n  epochs: 3\n   batch_size: 4\n",
                 r"line 4, column \d+: YAML syntax error: mapping values are not allowed here\. "
                 r"Fix the YAML syntax", id="yaml-syntax-bad-indent"),
    pytest.param("train:\n  epochs: 2\n  epochs: 3\n", r"line 3, column 3: YAML syntax error: key 'epochs' appears "
                 r"twice in one mapping", id="duplicate-key"),
    pytest.param("name: [a, b\n", r"line \d+, column \d+: YAML syntax error: .*Fix the YAML syntax",
                 id="yaml-syntax-unclosed-list"),
    pytest.param("- a\n- b\n", r"\(top level\): expected a mapping of keys\. Start the file with keys",
                 id="top-level-list"),
    pytest.param("just a string\n", r"\(top level\): expected a mapping of keys", id="top-level-string"),
    pytest.param("42\n", r"\(top level\): expected a mapping of keys", id="top-level-int"),
    # unknown keys, top level and nested, with a suggestion
    pytest.param("nmae: x\n", r"nmae: unknown key\. Did you mean 'name'\? Known keys here: name, ",
                 id="unknown-top"),
    pytest.param("trian:\n  epochs: 2\n", r"trian: unknown key\. Did you mean 'train'\?", id="unknown-section"),
    pytest.param("train:\n  epoch: 2\n",
                 r"train\.epoch: unknown key\. Did you mean 'epochs'\? Known keys here: epochs, batch_size",
                 id="unknown-nested"),
    pytest.param("recovery:\n  restart: 2\n", r"recovery\.restart: unknown key\. Did you mean 'restarts'\?",
                 id="unknown-nested-recovery"),
    pytest.param("train:\n  zzzz: 2\n", r"train\.zzzz: unknown key\. Known keys here: epochs",
                 id="unknown-no-suggestion"),
    # wrong types
    pytest.param("train:\n  epochs: ten\n",
                 r"train\.epochs: expected an integer, got 'ten'\. Write train\.epochs as an integer",
                 id="string-for-int"),
    pytest.param("train:\n  epochs: '10'\n", r"train\.epochs: expected an integer, got '10'",
                 id="quoted-number-for-int"),
    pytest.param("train:\n  epochs: true\n", r"train\.epochs: expected an integer, got True",
                 id="bool-for-int"),
    pytest.param("train:\n  epochs: 2.5\n", r"train\.epochs: expected an integer, got 2\.5",
                 id="float-for-int"),
    pytest.param("train:\n  epochs: [1, 2]\n", r"train\.epochs: expected an integer, got \[1, 2\]",
                 id="list-for-int"),
    pytest.param("train:\n  epochs: {a: 1}\n", r"train\.epochs: expected an integer, got \{'a': 1\}",
                 id="mapping-for-int"),
    pytest.param("train:\n  learning_rate: fast\n", r"train\.learning_rate: expected a number, got 'fast'",
                 id="string-for-float"),
    pytest.param("train:\n  learning_rate: false\n", r"train\.learning_rate: expected a number, got False",
                 id="bool-for-float"),
    pytest.param("name: 5\n", r"name: expected a string, got 5\. Write name as a string", id="int-for-string"),
    pytest.param("name: [a]\n", r"name: expected a string, got \['a'\]", id="list-for-string"),
    pytest.param("train: 5\n", r"train: expected a mapping of keys, got 5\. Write it as 'key: value' lines",
                 id="scalar-for-section"),
    pytest.param("train: [1, 2]\n", r"train: expected a mapping of keys", id="list-for-section"),
    pytest.param("recovery:\n  m: [25, ten]\n", r"recovery\.m\[1\]: expected an integer, got 'ten'",
                 id="bad-list-item"),
    pytest.param("recovery:\n  m: {a: 1}\n", r"recovery\.m\[0\]: expected an integer", id="mapping-for-list"),
    pytest.param("data:\n  path: 3\n", r"data\.path: expected a string, got 3", id="int-for-optional-string"),
    # out of range
    pytest.param("train:\n  epochs: -1\n",
                 r"train\.epochs: must be >= 0, got -1\. Set train\.epochs to a value >= 0",
                 id="negative-epochs"),
    pytest.param("train:\n  batch_size: 0\n", r"train\.batch_size: must be >= 1, got 0", id="zero-batch"),
    pytest.param("recovery:\n  restarts: 0\n", r"recovery\.restarts: must be >= 1, got 0", id="zero-restarts"),
    pytest.param("devices:\n  count: 17\n", r"devices\.count: must be <= 16, got 17\. Set devices\.count",
                 id="too-many-devices"),
    pytest.param("train:\n  learning_rate: 0\n",
                 r"train\.learning_rate: must be > 0\.0, got 0\.0\. Set train\.learning_rate to a value > 0\.0",
                 id="lr-zero-exclusive"),
    pytest.param("recovery:\n  learning_rate: -0.1\n", r"recovery\.learning_rate: must be > 0\.0, got -0\.1",
                 id="recovery-lr-negative"),
    pytest.param("recovery:\n  noise_std: -0.1\n", r"recovery\.noise_std: must be >= 0\.0, got -0\.1",
                 id="negative-noise"),
    pytest.param("recovery:\n  m: [25, 785]\n",
                 r"recovery\.m: must be <= 784, got 785\. Set recovery\.m to a value <= 784", id="m-too-large"),
    pytest.param("recovery:\n  m: [0]\n", r"recovery\.m: must be >= 1, got 0", id="m-zero"),
    pytest.param("recovery:\n  inpaint_size: 28\n", r"recovery\.inpaint_size: must be <= 27", id="inpaint-too-big"),
    pytest.param("data:\n  heldout: 0\n", r"data\.heldout: must be >= 1, got 0", id="heldout-zero"),
    pytest.param("hccl:\n  connect_timeout_s: 60\n", r"hccl\.connect_timeout_s: must be >= 120, got 60",
                 id="hccl-timeout-low"),
    # bad choices
    pytest.param("recovery:\n  measurement: [gausian]\n",
                 r"recovery\.measurement: 'gausian' is not one of gaussian, superres, inpaint, project\. "
                 r"Did you mean 'gaussian'\? Choose one of: gaussian, superres, inpaint, project",
                 id="measurement-typo"),
    pytest.param("recovery:\n  measurement: gausian\n", r"recovery\.measurement: 'gausian' is not one of",
                 id="measurement-typo-scalar"),
    pytest.param("train:\n  precision: fp16\n", r"train\.precision: 'fp16' is not one of fp32, mixed",
                 id="precision"),
    pytest.param("recovery:\n  superres_factor: 3\n",
                 r"recovery\.superres_factor: 3 is not one of 2, 4, 7\. .*Choose one of: 2, 4, 7",
                 id="superres-factor"),
    pytest.param("devices:\n  type: tpu\n", r"devices\.type: 'tpu' is not one of cpu, gpu, npu", id="device-type"),
    pytest.param("stages: [train, recovr]\n", r"stages: 'recovr' is not one of train, recover\. "
                 r"Did you mean 'recover'\?", id="stage-typo"),
    # cross-field rules
    pytest.param("recovery:\n  m: [25, 100, 25]\n",
                 r"recovery\.m: repeats a value: \[25, 100, 25\]\. List each m once", id="repeated-m"),
    pytest.param("name: My_Job\n", r"name: 'My_Job' is not a DNS-1123 label\. Use at most 63 lower-case",
                 id="name-not-dns"),
    pytest.param("name: " + "a" * 64 + "\n", r"name: 'a{64}' is not a DNS-1123 label", id="name-64-chars"),
    pytest.param("name: ../escape\n", r"name: '\.\./escape' is not a DNS-1123 label", id="name-path-escape"),
    pytest.param("name: -lead\n", r"name: '-lead' is not a DNS-1123 label", id="name-leading-dash"),
    pytest.param("name: ''\n", r"name: '' is not a DNS-1123 label", id="name-empty"),
    pytest.param('name: "abc\\n"\n', r"name: 'abc\\n' contains a control or non-printable character",
                 id="name-trailing-newline"),
    pytest.param("data:\n  source: idx\n",
                 r"data\.path: data\.source is 'idx' but no folder is given\. Set data\.path", id="idx-without-path"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError, match="^" + re.escape(str(path)) + ": " + message):
        load_spec(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="^" + re.escape(str(path)) + r": file not found\. Check the path"):
        load_spec(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=re.escape(str(tmp_path)) + r": cannot read the file"):
        load_spec(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match=re.escape(str(path)) + r": not UTF-8 text \(byte 6\)\. Write the job spec"):
        load_spec(path)


NON_FINITE_AND_EMPTY = [
    pytest.param("train:\n  learning_rate: .nan\n", r"train\.learning_rate: must be", id="nan-lr"),
    pytest.param("recovery:\n  m: []\n", r"recovery\.m: ", id="empty-m"),
    pytest.param("stages: []\n", r"stages: ", id="empty-stages"),
]


@pytest.mark.parametrize("text, message", NON_FINITE_AND_EMPTY)
def test_rejects_nan_and_empty_lists(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, text)


def test_error_fields(tmp_path: Path) -> None:
    """The structured parts of the error agree with its message."""
    err = _error(tmp_path, "train:\n  epochs: -1\n")
    assert err.source == str(tmp_path / "job.yaml")
    assert err.path == "train.epochs"
    assert err.problem == "must be >= 0, got -1"
    assert err.fix == "Set train.epochs to a value >= 0"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("name", ["a", "csgm", "run-1", "0abc", "a" * 63, "a-b-c9"])
def test_good_names(tmp_path: Path, name: str) -> None:
    assert _load(tmp_path, f"name: '{name}'\n").name == name


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------

GOOD_OVERRIDES = [
    pytest.param("", ["recovery.m=[25,100]"], lambda s: s.recovery.m == (25, 100), id="list"),
    pytest.param("", ["train.epochs=2"], lambda s: s.train.epochs == 2 and isinstance(s.train.epochs, int),
                 id="int"),
    pytest.param("", ["train.learning_rate=0.5"], lambda s: s.train.learning_rate == 0.5, id="float"),
    pytest.param("", ["train.learning_rate=1"],
                 lambda s: s.train.learning_rate == 1.0 and isinstance(s.train.learning_rate, float),
                 id="int-as-float"),
    pytest.param("", ["recovery.measurement=superres"], lambda s: s.recovery.measurement == ("superres",),
                 id="scalar-to-list"),
    pytest.param("", ["name=my-job"], lambda s: s.name == "my-job", id="string"),
    pytest.param("", ["data.path=null"], lambda s: s.data.path is None, id="null"),
    pytest.param("", ["data.path="], lambda s: s.data.path is None, id="empty-is-null"),
    pytest.param("", ["launch.stall_timeout_s=30"], lambda s: s.launch.stall_timeout_s == 30.0, id="optional-float"),
    pytest.param("name: a\n", ["train.epochs=3"], lambda s: s.train.epochs == 3 and s.name == "a",
                 id="creates-section"),
    pytest.param("train:\n  epochs: 5\n  batch_size: 7\n", ["train.epochs=3"],
                 lambda s: s.train.epochs == 3 and s.train.batch_size == 7, id="keeps-siblings"),
    pytest.param("", ["train.epochs=3", "train.epochs=4"], lambda s: s.train.epochs == 4, id="last-wins"),
    pytest.param("train:\n  epochs: -1\n", ["train.epochs=2"], lambda s: s.train.epochs == 2,
                 id="fixes-bad-file-value"),
    pytest.param("", ["data.source=idx", "data.path=/data"],
                 lambda s: s.data.source == "idx" and s.data.path == "/data", id="two-keys"),
    pytest.param("", [" train.epochs = 2"], lambda s: s.train.epochs == 2, id="spaces"),
]


@pytest.mark.parametrize("text, overrides, ok", GOOD_OVERRIDES)
def test_good_override(tmp_path: Path, text: str, overrides: Sequence[str], ok) -> None:
    assert ok(_load(tmp_path, text, overrides))


BAD_OVERRIDES = [
    pytest.param(["trian.epochs=2"],
                 r"^--set: trian\.epochs: unknown key\. Did you mean 'train\.epochs'\?", id="unknown-key"),
    pytest.param(["train=3"], r"^--set: train: is a section, not a value; its keys are train.augment, "
                 r".*train.seed\. Set one of them, e.g. --set train.batch_size=3$", id="section-not-leaf"),
    pytest.param(["devices=3"], r"^--set: devices: is a section, not a value; its keys are devices.count, "
                 r"devices.threads, devices.type\. Set one of them, e.g. --set devices.count=3$", id="devices-section"),
    pytest.param(["train.epochs"], r"^--set: train\.epochs: expected key\.path=value\. Write e\.g\.",
                 id="no-equals"),
    pytest.param(["=3"], r"^--set: =3: expected key\.path=value", id="no-key"),
    pytest.param(["recovery.m=[25,"],
                 r"^--set: recovery\.m: cannot read the value '\[25,' \(YAML syntax error: .*\)\. Quote strings",
                 id="bad-yaml-value"),
    pytest.param(["train.epochs=two"], r"^--set: train\.epochs: expected an integer, got 'two'",
                 id="bad-type"),
    pytest.param(["train.epochs=-3"], r"^--set: train\.epochs: must be >= 0, got -3", id="out-of-range"),
    pytest.param(["recovery.m=[25,2000]"], r"^--set: recovery\.m: must be <= 784, got 2000", id="list-range"),
    pytest.param(["recovery.m=[25,x]"], r"^--set: recovery\.m\[1\]: expected an integer, got 'x'",
                 id="list-item-type"),
    pytest.param(["recovery.m=[25,25]"], r"^--set: recovery\.m: repeats a value", id="repeated-m"),
    pytest.param(["recovery.measurement=gausian"],
                 r"^--set: recovery\.measurement: 'gausian' is not one of .*Did you mean 'gaussian'\?",
                 id="bad-choice"),
    pytest.param(["name=My_Job"], r"^--set: name: 'My_Job' is not a DNS-1123 label", id="bad-name"),
]


@pytest.mark.parametrize("overrides, message", BAD_OVERRIDES)
def test_bad_override(tmp_path: Path, overrides: Sequence[str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, "name: fine\n", overrides)


def test_file_error_not_blamed_on_set(tmp_path: Path) -> None:
    """A bad value in the file stays the file's error even when --set touches another key."""
    path = _write(tmp_path, "train:\n  batch_size: 0\n")
    with pytest.raises(SpecError, match="^" + re.escape(str(path)) + r": train\.batch_size: must be >= 1"):
        load_spec(path, ["train.epochs=2"])


def test_cross_key_error_caused_by_set_names_both(tmp_path: Path) -> None:
    """data.path is the key at fault, but the file alone was valid: the override is named too."""
    path = _write(tmp_path, "name: fine\n")
    with pytest.raises(SpecError, match="^" + re.escape(str(path)) + r" with --set data\.source: data\.path: "
                                        r"data\.source is 'idx' but no folder is given"):
        load_spec(path, ["data.source=idx"])


# --------------------------------------------------------------------------------------------
# Defaults, round trip, digest
# --------------------------------------------------------------------------------------------

DEFAULTS = [
    ("name", "csgm"),
    ("output_dir", None),
    ("stages", ("train", "recover")),
    ("backend", "local"),
    ("data.source", "sample"),
    ("data.path", None),
    ("data.heldout", 1000),
    ("data.train_limit", None),
    ("devices.type", "cpu"),
    ("devices.count", 1),
    ("train.epochs", 100),             # upstream mnist-vae
    ("train.batch_size", 100),
    ("train.learning_rate", 1e-3),
    ("train.seed", 0),
    ("train.precision", "fp32"),
    ("train.latent_dim", 20),
    ("train.hidden", 500),
    ("recovery.images", 300),          # quant_scripts/mnist_reconstruction.sh
    ("recovery.batch_size", 50),
    ("recovery.measurement", ("gaussian",)),
    ("recovery.m", (10, 25, 50, 100, 200, 300, 400, 500, 750)),
    ("recovery.noise_std", 0.1),
    ("recovery.methods", ("vae", "vae_reg", "lasso")),
    ("recovery.restarts", 10),
    ("recovery.iters", 1000),
    ("recovery.learning_rate", 0.01),
    ("recovery.zprior_weight", 0.1),
    ("recovery.lasso_alpha", 0.1),
    ("recovery.gaussian_scale", "unscaled"),
    ("recovery.superres_factor", 4),
    ("recovery.inpaint_size", 14),
    ("launch.rank_table", None),
    ("launch.max_restarts", 0),
]


def _get(spec: JobSpec, key: str):
    obj = spec
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "{}\n"], ids=["empty", "comment", "doc", "braces"])
def test_empty_file_is_default(tmp_path: Path, text: str) -> None:
    assert _load(tmp_path, text) == JobSpec()


@pytest.mark.parametrize("key, value", DEFAULTS, ids=[k for k, _ in DEFAULTS])
def test_documented_defaults(tmp_path: Path, key: str, value) -> None:
    got = _get(_load(tmp_path, ""), key)
    assert got == value
    assert type(got) is type(value)


def test_spec_is_frozen_and_hashable(tmp_path: Path) -> None:
    spec = _load(tmp_path, "recovery:\n  m: [25]\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    hash(spec)


ROUND_TRIP = [
    "",
    "name: rt\nrecovery:\n  m: [25, 100]\n  measurement: [gaussian, superres, inpaint, project]\n",
    "data:\n  source: idx\n  path: /data/mnist\n  heldout: 300\n  train_limit: 1000\n"
    "train:\n  learning_rate: 0.0005\n  precision: mixed\nlaunch:\n  stall_timeout_s: 60\n",
]


@pytest.mark.parametrize("text", ROUND_TRIP, ids=["defaults", "recovery", "idx"])
def test_round_trip(tmp_path: Path, text: str) -> None:
    spec = _load(tmp_path, text)
    again = load_spec(_write(tmp_path, spec_to_yaml(spec), "resolved.yaml"))
    assert again == spec
    assert spec_digest(again) == spec_digest(spec)


def test_resolved_yaml_is_plain_data(tmp_path: Path) -> None:
    data = yaml.safe_load(spec_to_yaml(_load(tmp_path, "")))
    assert data["recovery"]["m"] == [10, 25, 50, 100, 200, 300, 400, 500, 750]
    assert list(data)[:3] == ["name", "output_dir", "stages"]  # declaration order, not sorted


def test_digest_stable() -> None:
    digest = spec_digest(JobSpec())
    assert digest == spec_digest(JobSpec())
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert spec_digest(TrainConfig()) == spec_digest(TrainConfig())


@pytest.mark.parametrize("override", [
    "train.epochs=101", "train.learning_rate=0.002", "recovery.m=[10,25]", "name=other",
    "recovery.measurement=[gaussian,superres]", "data.path=/x",
])
def test_digest_changes(tmp_path: Path, override: str) -> None:
    base = _load(tmp_path, "")
    changed = _load(tmp_path, "", [override])
    assert spec_digest(changed) != spec_digest(base)


def test_section_digest_ignores_other_sections(tmp_path: Path) -> None:
    base = _load(tmp_path, "")
    changed = _load(tmp_path, "", ["recovery.iters=5"])
    assert spec_digest(changed.train) == spec_digest(base.train)
    assert spec_digest(changed.recovery) != spec_digest(base.recovery)


def test_digest_sees_order_of_list(tmp_path: Path) -> None:
    a = _load(tmp_path, "recovery:\n  m: [25, 100]\n")
    b = _load(tmp_path, "recovery:\n  m: [100, 25]\n")
    assert spec_digest(a.recovery) != spec_digest(b.recovery)


SINGLE_ITEMS = [
    ("recovery:\n  measurement: superres\n", "recovery.measurement", ("superres",)),
    ("recovery:\n  m: 25\n", "recovery.m", (25,)),
    ("recovery:\n  methods: lasso\n", "recovery.methods", ("lasso",)),
    ("stages: train\n", "stages", ("train",)),
]


@pytest.mark.parametrize("text, key, value", SINGLE_ITEMS, ids=[k for _, k, _ in SINGLE_ITEMS])
def test_single_item_becomes_tuple(tmp_path: Path, text: str, key: str, value) -> None:
    assert _get(_load(tmp_path, text), key) == value


def test_int_accepted_for_float(tmp_path: Path) -> None:
    spec = _load(tmp_path, "recovery:\n  noise_std: 0\n  learning_rate: 1\n")
    assert spec.recovery.noise_std == 0.0 and isinstance(spec.recovery.noise_std, float)
    assert spec.recovery.learning_rate == 1.0 and isinstance(spec.recovery.learning_rate, float)


def test_sections_are_their_classes(tmp_path: Path) -> None:
    spec = _load(tmp_path, "")
    assert isinstance(spec.data, DataConfig) and isinstance(spec.recovery, RecoveryConfig)
    assert spec.run_dir == Path("runs") / "csgm"
    assert _load(tmp_path, "output_dir: /tmp/out\n").run_dir == Path("/tmp/out")


# --------------------------------------------------------------------------------------------
# Shipped configs
# --------------------------------------------------------------------------------------------

def _shipped_specs():
    found = []
    for path in sorted((REPO / "configs").glob("*")):
        if path.suffix not in (".yaml", ".yml"):
            continue  # JSON rank tables live here too
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "server_list" in data:
            continue  # a rank table written as YAML
        found.append(pytest.param(path, id=path.name))
    return found


SHIPPED = _shipped_specs()


def test_some_config_is_shipped() -> None:
    assert SHIPPED, "configs/ holds no job spec"


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_config_loads(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, JobSpec)


def test_spec_reference_doc_is_current() -> None:
    """docs/spec.md is generated from the schema; regenerate with `python -m job.docs`."""
    from job.docs import DOC, render

    assert DOC.read_text() == render(), "docs/spec.md is stale: run python -m job.docs"


@pytest.mark.parametrize("overrides, expected", [
    ([], None),                                                   # training: TensorFlow's choice
    (["stages=[recover]"], (1, 2)),                               # recovery only: one core per op, 2 streams
    (["stages=[recover]", "recovery.streams=1"], None),           # one stream: ops over both cores
    (["stages=[recover]", "devices.threads=1"], (1, 1)),
    (["devices.threads=3"], (3, 3)),
    (["stages=[recover]", "devices.type=npu", "backend=hccl"], None),
])
def test_thread_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list, expected) -> None:
    """A CPU rank that only recovers runs one op per core and a recovery stream per core."""
    from csgm import recovery
    from job.backend import thread_layout

    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert thread_layout(_load(tmp_path, "name: t\n", overrides)) == expected
