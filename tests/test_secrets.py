"""Secrets per resource group: write-only values, sealed at rest, resolved into the
steps of the group's executions at their start, masked in their stored logs, invisible
from other groups, and a missing one refused when the execution is created."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import grpc
import pytest
from workflow_helpers import Runner, python, workflow

from client.cli import main
from client.client import TrainyardClient, TrainyardError
from server.domain.secrets import MASK, Mask, references
from server.domain.templates import parse_template_text
from server.runtime.plan import build_plan
from server.store.cipher import FernetCipher, KeyFileError, open_key_file
from trainyard.v1 import secret_service_pb2 as sec_pb

pytestmark = pytest.mark.backends("sqlite", "postgresql")

TOKEN = "s3cr3t-token-9f1c2b"
PRINT_TOKEN = (
    "import os, hashlib; v = os.environ['TOKEN']; print('token is', v); "
    "print('digest', hashlib.sha256(v.encode()).hexdigest())"
)


def with_env(template: dict, *entries: dict) -> dict:
    return {**template, "container": {**template["container"], "env": list(entries)}}


def secret_env(env: str, name: str, key: str, **extra) -> dict:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key, **extra}}}


def token_workflow(name: str = "uses-token", secret: str = "api", key: str = "token") -> str:
    return workflow(name, [with_env(python("main", PRINT_TOKEN), secret_env("TOKEN", secret, key))])


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def runner(server):
    r = Runner(server.address, resource_group="team-a")
    yield r
    r.close()


def refused(fn, *args) -> TrainyardError:
    with pytest.raises(TrainyardError) as caught:
        fn(*args)
    return caught.value


# ------------------------------------------------------------- resolved and masked


def test_secret_is_resolved_into_the_step_and_masked_in_its_logs(runner):
    runner.client.create_secret("api", {"token": TOKEN, "other": "unused-value"})
    configuration = runner.configure(runner.register(token_workflow()))
    execution = runner.wait(runner.start(configuration))
    assert execution.status == 3, execution.status_message  # COMPLETED
    output = runner.output(execution.id)
    # The step got the value (its digest says so); its stored lines never show it.
    assert f"digest {digest(TOKEN)}" in output
    assert f"token is {MASK}" in output
    assert not any(TOKEN in text for _, _, text in runner.logs(execution.id))

    # An update is what executions started afterwards get.
    runner.client.update_secret("api", {"token": "rotated-token-77"})
    later = runner.wait(runner.start(configuration))
    assert f"digest {digest('rotated-token-77')}" in runner.output(later.id)
    assert f"token is {MASK}" in runner.output(later.id)


def test_optional_reference_to_a_missing_secret_leaves_the_variable_unset(runner):
    code = "import os; print('set' if 'TOKEN' in os.environ else 'unset')"
    env = secret_env("TOKEN", "absent", "x", optional=True)
    text = workflow("optional", [with_env(python("main", code), env)])
    execution = runner.wait(runner.start(runner.configure(runner.register(text))))
    assert runner.output(execution.id) == ["unset"]


def test_env_from_gives_every_key_of_a_secret_and_env_wins(runner):
    """``envFrom[].secretRef``: each key a variable (after the prefix), masked in the
    logs; an ``env`` entry of the same name wins, as in Kubernetes."""
    runner.client.create_secret("db", {"USER": "svc-trainer", "PASSWORD": "pw-8f3a1c77"})
    code = (
        "import os, hashlib; "
        "print('user', os.environ['DB_USER']); "
        "print('password', os.environ['DB_PASSWORD']); "
        "print('digest', hashlib.sha256(os.environ['DB_PASSWORD'].encode()).hexdigest()); "
        "print('mode', os.environ['DB_MODE'])"
    )
    template = python("main", code)
    template["container"]["envFrom"] = [{"secretRef": {"name": "db"}, "prefix": "DB_"}]
    template["container"]["env"] = [{"name": "DB_MODE", "value": "ro"}]
    runner.client.create_secret("more", {"DB_MODE": "rw-from-secret"})
    template["container"]["envFrom"].append({"secretRef": {"name": "more"}})
    execution = runner.wait(runner.start(runner.configure(runner.register(
        workflow("env-from", [template])
    ))))
    assert execution.status == 3, execution.status_message  # COMPLETED
    output = runner.output(execution.id)
    assert output == [
        f"user {MASK}", f"password {MASK}", f"digest {digest('pw-8f3a1c77')}", "mode ro"
    ]
    assert not any("pw-8f3a1c77" in text for _, _, text in runner.logs(execution.id))


def test_env_from_a_missing_secret_is_refused_at_create_unless_optional(runner):
    template = python("main", "import os; print(sorted(k for k in os.environ if k[:2] == 'X_'))")
    template["container"]["envFrom"] = [{"secretRef": {"name": "absent"}, "prefix": "X_"}]
    configuration = runner.configure(runner.register(workflow("env-from-missing", [template])))
    error = refused(runner.start, configuration)
    assert error.reason == "SECRET_NOT_FOUND"
    assert error.metadata["field"] == "spec.templates[0].container.envFrom[0].secretRef.name"

    template["container"]["envFrom"][0]["secretRef"]["optional"] = True
    configuration = runner.configure(runner.register(workflow("env-from-optional", [template])))
    execution = runner.wait(runner.start(configuration))
    assert runner.output(execution.id) == ["[]"]


# -------------------------------------------------------------- never returned


def test_values_are_never_returned_and_are_sealed_at_rest(server, stubs):
    metadata = (("ai-resource-group", "team-a"),)
    created = stubs_call(stubs, "CreateSecret", sec_pb.CreateSecretRequest(
        name="db", data={"password": TOKEN, "user": "ada"}), metadata)
    updated = stubs_call(stubs, "UpdateSecret", sec_pb.UpdateSecretRequest(
        name="db", data={"password": TOKEN + "-2", "user": "ada"}), metadata)
    listed = stubs_call(stubs, "ListSecrets", sec_pb.ListSecretsRequest(), metadata)
    for response in (created, updated, listed):
        assert TOKEN.encode() not in response.SerializeToString()
        assert b"ada" not in response.SerializeToString()
    assert list(created.secret.keys) == ["password", "user"]
    assert [(s.name, list(s.keys)) for s in listed.secrets] == [("db", ["password", "user"])]
    assert updated.secret.update_time.ToNanoseconds() >= created.secret.create_time.ToNanoseconds()

    # At rest: the row holds a Fernet token, opened only by the server's key.
    rows = server.call(
        server.plane.store.run_read(
            lambda s: s.execute("SELECT name, keys, sealed FROM secret").fetchall()
        )
    )
    [(name, keys, sealed)] = rows
    assert name == "db" and json.loads(keys) == ["password", "user"]
    assert TOKEN not in sealed and "ada" not in sealed
    cipher = open_key_file(server.settings.secrets_key_file)
    assert json.loads(cipher.unseal(sealed)) == {"password": TOKEN + "-2", "user": "ada"}


def stubs_call(stubs, method: str, request, metadata):
    from trainyard.v1 import secret_service_pb2_grpc

    stub = secret_service_pb2_grpc.SecretServiceStub(stubs.channel)
    return getattr(stub, method)(request, metadata=metadata)


def test_secrets_are_listed_by_name_page_by_page(server, stubs):
    metadata = (("ai-resource-group", "team-pages"),)
    for name in ("c-three", "a-one", "b-two"):
        stubs_call(stubs, "CreateSecret", sec_pb.CreateSecretRequest(
            name=name, data={"k": f"value-of-{name}"}), metadata)
    first = stubs_call(stubs, "ListSecrets", sec_pb.ListSecretsRequest(page_size=2), metadata)
    assert [s.name for s in first.secrets] == ["a-one", "b-two"] and first.total_size == 3
    second = stubs_call(stubs, "ListSecrets", sec_pb.ListSecretsRequest(
        page_size=2, page_token=first.next_page_token), metadata)
    assert [s.name for s in second.secrets] == ["c-three"] and not second.next_page_token


# ------------------------------------------------------------ invisible across groups


def test_secrets_are_invisible_from_another_group(server, runner):
    runner.client.create_secret("api", {"token": TOKEN})
    with TrainyardClient(server.address, resource_group="team-b") as other:
        assert list(other.list_secrets()) == []
        for call in (lambda: other.update_secret("api", {"token": "x-y-z"}),
                     lambda: other.delete_secret("api")):
            error = refused(call)
            assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "SECRET_NOT_FOUND"
        # The same name in another group is another secret.
        other.create_secret("api", {"token": "team-b-token"})
    b = Runner(server.address, resource_group="team-b")
    try:
        execution = b.wait(b.start(b.configure(b.register(token_workflow()))))
        assert f"digest {digest('team-b-token')}" in b.output(execution.id)
    finally:
        b.close()
    assert [s.name for s in runner.client.list_secrets()] == ["api"]


# ----------------------------------------------------------- missing: refused, named


def test_missing_secret_is_refused_at_create_naming_it(runner):
    configuration = runner.configure(runner.register(token_workflow(secret="nowhere")))
    error = refused(runner.start, configuration)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "SECRET_NOT_FOUND"
    assert error.metadata["secret"] == "nowhere"
    field = "spec.templates[0].container.env[0].valueFrom.secretKeyRef.name"
    assert error.metadata["field"] == field
    assert "nowhere" in error.message
    assert list(runner.client.list_executions()) == []  # nothing half-written


def test_missing_key_is_refused_at_create_naming_it(runner):
    runner.client.create_secret("api", {"other": "value-1"})
    configuration = runner.configure(runner.register(token_workflow()))
    error = refused(runner.start, configuration)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "SECRET_KEY_NOT_FOUND"
    assert (error.metadata["secret"], error.metadata["key"]) == ("api", "token")
    assert error.metadata["field"].endswith("env[0].valueFrom.secretKeyRef.key")


def test_deleted_secret_refuses_later_executions(runner):
    runner.client.create_secret("api", {"token": TOKEN})
    configuration = runner.configure(runner.register(token_workflow()))
    runner.client.delete_secret("api")
    assert refused(runner.start, configuration).reason == "SECRET_NOT_FOUND"
    assert refused(runner.client.delete_secret, "api").code == grpc.StatusCode.NOT_FOUND


def test_reference_without_a_key_is_refused_at_registration(runner):
    text = workflow("no-key", [with_env(python("main", "pass"), secret_env("T", "api", ""))])
    error = refused(runner.register, text)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in error.violations}
    assert "spec.templates[0].container.env[0].valueFrom.secretKeyRef.key" in fields


@pytest.mark.parametrize(
    ("name", "data", "field"),
    [
        ("Bad_Name", {"k": "v"}, "name"),
        ("ok", {}, "data"),
        ("ok", {"bad key": "v"}, "data['bad key']"),
        ("ok", {"..": "v"}, "data['..']"),  # a secret volume's file would be its parent
    ],
)
def test_bad_secrets_are_refused_naming_the_field(runner, name, data, field):
    error = refused(runner.client.create_secret, name, data)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in {v.field for v in error.violations}


def test_second_create_of_a_name_is_already_exists(runner):
    runner.client.create_secret("api", {"token": TOKEN})
    assert refused(runner.client.create_secret, "api", {"t": "v"}).code == (
        grpc.StatusCode.ALREADY_EXISTS
    )


# ------------------------------------------------------------ image pull secrets


def test_image_pull_secrets_resolve_into_the_plans_registry_credentials(server, runner):
    auth = {"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNzd29yZA=="}}}
    other = {"auths": {"ghcr.example": {"auth": "b3RoZXI6cHc="}}}
    doc = json.loads(workflow("pulls", [python("main", "pass")]))
    doc["spec"]["imagePullSecrets"] = [{"name": "registry"}, {"name": "ghcr"}]
    text = json.dumps(doc)
    runner.client.create_secret("registry", {".dockerconfigjson": json.dumps(auth)})
    runner.client.create_secret("ghcr", {"token": "x-y-z"})  # no .dockerconfigjson
    configuration = runner.configure(runner.register(text))
    error = refused(runner.start, configuration)
    assert error.reason == "SECRET_KEY_NOT_FOUND"
    assert error.metadata == {**error.metadata, "secret": "ghcr", "key": ".dockerconfigjson",
                              "field": "spec.imagePullSecrets[1]"}

    runner.client.update_secret("ghcr", {".dockerconfigjson": json.dumps(other)})
    [exe] = parse_template_text(text, "team-a")
    resolved = server.call(server.plane.secrets.resolve("team-a", references(exe.spec)))
    plan = build_plan(
        exe, {}, {}, execution_id="e", resource_group="team-a", work_dir=Path("/w"),
        secrets=resolved.values, pull_auth=resolved.pull_auth,
    )
    assert json.loads(plan.pull_auth) == {"auths": {**auth["auths"], **other["auths"]}}
    execution = runner.wait(runner.start(configuration))  # the local runner pulls nothing
    assert execution.status == 3, execution.status_message


# ------------------------------------------------------------------- the key file


def test_key_file_is_made_private_on_first_start_and_kept(server_factory, stubs_for, tmp_path):
    key_file = tmp_path / "keys" / "secrets.key"
    first = server_factory(secrets_key_file=key_file, data_dir=tmp_path / "one")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = key_file.read_bytes()
    with TrainyardClient(first.address, resource_group="team-a") as ty:
        ty.create_secret("api", {"token": TOKEN})
    first.stop()
    # The next start uses the same key: the values open.
    second = server_factory(secrets_key_file=key_file, data_dir=tmp_path / "one")
    assert key_file.read_bytes() == key
    r = Runner(second.address, resource_group="team-a")
    try:
        execution = r.wait(r.start(r.configure(r.register(token_workflow()))))
        assert f"digest {digest(TOKEN)}" in r.output(execution.id)
    finally:
        r.close()


def test_values_sealed_with_another_key_make_the_start_dead_saying_so(server_factory, tmp_path):
    data = tmp_path / "shared"  # one database (file, or the test's PostgreSQL one), two keys
    first = server_factory(secrets_key_file=tmp_path / "a.key", data_dir=data)
    with TrainyardClient(first.address, resource_group="team-a") as ty:
        ty.create_secret("api", {"token": TOKEN})
    first.stop()
    second = server_factory(secrets_key_file=tmp_path / "b.key", data_dir=data)
    r = Runner(second.address, resource_group="team-a")
    try:
        execution = r.wait(r.start(r.configure(r.register(token_workflow()))))
        assert execution.status == 4  # DEAD
        assert "secret 'api'" in execution.status_message
        assert "cannot be opened" in execution.status_message
    finally:
        r.close()


def test_a_broken_key_file_is_refused(tmp_path):
    path = tmp_path / "secrets.key"
    path.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="not a Fernet key"):
        open_key_file(path)


def test_the_cipher_refuses_what_another_key_sealed(tmp_path):
    one = open_key_file(tmp_path / "one.key")
    two = open_key_file(tmp_path / "two.key")
    assert isinstance(one, FernetCipher)
    sealed = one.seal(b"plain")
    assert one.unseal(sealed) == b"plain"
    with pytest.raises(ValueError, match="cannot be opened"):
        two.unseal(sealed)


# ------------------------------------------------------------------------ masking


def test_mask_replaces_every_piece_of_every_value():
    mask = Mask(["abcdef", "line-one\nline-two", "ab", "abcdefgh"])
    assert mask(["x abcdefgh y", "abcdef", "line-two!", "ab stays", "clean"]) == [
        f"x {MASK} y", MASK, f"{MASK}!", "ab stays", "clean"
    ]
    texts = ["nothing here"]
    assert mask(texts) is texts  # no secret: no copy
    assert mask(["two\nlines abcdef"]) == [f"two\nlines {MASK}"]
    assert not Mask(["ab", ""])


# ---------------------------------------------------------------------------- CLI


def test_cli_creates_lists_updates_and_deletes_secrets(server, capsys, tmp_path, monkeypatch):
    def run(*args: str) -> str:
        code = main(["--address", server.address, "-g", "team-cli", *args])
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out

    value_file = tmp_path / "value"
    value_file.write_text(TOKEN)
    created = run("secrets", "create", "api", f"token=@{value_file}", "user=ada")
    assert created == "api: token, user\n"
    listed = run("secrets", "list")
    assert "api" in listed and "token,user" in listed and TOKEN not in listed
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("from-stdin\n"))
    assert run("secrets", "update", "api", "token=-") == "api: token\n"
    assert TOKEN not in run("secrets", "list", "--json")
    assert run("secrets", "delete", "api") == "deleted api\n"
    assert "api" not in run("secrets", "list")
