"""Secrets of a resource group: write-only values, sealed at rest, used by steps.

A secret is a name and a set of key/value pairs. The use cases here validate them and
seal the values with the server's cipher (a SecretCipher port: Fernet with the key
file, server/store/cipher.py) before the store sees them; reads give names, key names
and times only. A group's secrets are its own: every store call is scoped by group.

Executables refer to secrets in two ways (:func:`references`):

* ``env[].valueFrom.secretKeyRef: {name, key}`` of a container or script template: the
  step's environment variable gets that key's value;
* ``envFrom[].secretRef: {name}`` of a container or script template: every key of the
  secret becomes an environment variable of the step (after ``envFrom[].prefix``); a
  variable of ``env`` with the same name wins, as in Kubernetes;
* ``volumes[].secret: {secretName, items}`` of the spec or a template: the keys (every
  key, or those of ``items``) as files of a read-only volume the step mounts;
* ``spec.imagePullSecrets: [{name}]``: the secret's ``.dockerconfigjson`` key (a
  container auth file, ``{"auths": {REGISTRY: {...}}}``, as Kubernetes keeps registry
  credentials) is what a container runner pulls the step images with.

Creating an execution checks that every secret and key its executable refers to
exists in the execution's group (:meth:`SecretService.require`: FAILED_PRECONDITION,
reason SECRET_NOT_FOUND or SECRET_KEY_NOT_FOUND, with the secret, the key and the
template field in the metadata); a ``secretKeyRef`` with ``optional: true`` may be
missing. The values are opened only when the execution starts
(:meth:`SecretService.resolve`), so a secret updated in between is used with its new
values. Whatever was resolved for an execution is masked (:class:`Mask`) in the lines
its steps print before they are stored.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server.domain.audit import SYSTEM_CALLER, AuditEvent, Caller
from server.domain.errors import FailedPrecondition, Reason
from server.domain.models import Page, Secret
from server.domain.paging import PageTokens, page_request
from server.domain.validation import Violations

if TYPE_CHECKING:
    from server.domain.ports import SecretCipher, SecretStore

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
# As Kubernetes takes them (a key may name a file of a secret volume): not "." or "..".
KEY_RE = re.compile(r"^(?!\.\.?$)[-._A-Za-z0-9]{1,253}$")
MAX_DATA_BYTES = 1024 * 1024
MAX_KEYS = 256
DOCKER_CONFIG_KEY = ".dockerconfigjson"
MASK = "***"
# The key of a reference that takes every key of its secret (``envFrom[].secretRef``).
WHOLE_SECRET = "*"
# Shorter pieces of a value are not masked: they cannot be told from ordinary text
# (a value "1" would turn every digit 1 of the log into ***).
MIN_MASKED_CHARS = 3


@dataclass(frozen=True, slots=True)
class SecretRef:
    """One place of a template that uses a secret's key."""

    field: str  # the template field holding the reference, without .name / .key
    name: str
    key: str
    optional: bool = False
    # The reference's sub-fields naming the secret and the key, for the error's field
    # ("" for the image pull secrets, whose key is implied).
    name_field: str = "name"
    key_field: str = "key"

    @property
    def whole(self) -> bool:
        """Whether the reference takes every key of the secret (``envFrom``, a secret
        volume without ``items``)."""
        return self.key == WHOLE_SECRET

    @property
    def name_path(self) -> str:
        return f"{self.field}.{self.name_field}"

    @property
    def key_path(self) -> str:
        return f"{self.field}.{self.key_field}" if self.key_field else self.field


@dataclass(slots=True)
class Resolved:
    """What an execution's start gets of its group's secrets."""

    values: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, key) -> value
    pull_auth: str | None = None  # a container auth file, from the imagePullSecrets
    masked: list[str] = field(default_factory=list)  # every value to mask in its logs


def references(spec: Mapping[str, Any]) -> list[SecretRef]:
    """Every secret reference of a parsed template's spec, in document order."""
    refs: list[SecretRef] = []
    templates = spec.get("templates") if isinstance(spec.get("templates"), list) else []
    for i, template in enumerate(templates):
        if not isinstance(template, dict):
            continue
        for kind in ("container", "script"):
            process = template.get(kind)
            if not isinstance(process, dict):
                continue
            env = process.get("env") if isinstance(process.get("env"), list) else []
            for j, entry in enumerate(process.get("envFrom") or []):
                ref = entry.get("secretRef") if isinstance(entry, dict) else None
                if isinstance(ref, dict):
                    refs.append(
                        SecretRef(
                            field=f"spec.templates[{i}].{kind}.envFrom[{j}].secretRef",
                            name=str(ref.get("name") or ""),
                            key=WHOLE_SECRET,
                            optional=ref.get("optional") is True,
                        )
                    )
            for j, entry in enumerate(env):
                value_from = entry.get("valueFrom") if isinstance(entry, dict) else None
                ref = value_from.get("secretKeyRef") if isinstance(value_from, dict) else None
                if not isinstance(ref, dict):
                    continue
                refs.append(
                    SecretRef(
                        field=f"spec.templates[{i}].{kind}.env[{j}].valueFrom.secretKeyRef",
                        name=str(ref.get("name") or ""),
                        key=str(ref.get("key") or ""),
                        optional=ref.get("optional") is True,
                    )
                )
    holders = [("spec", spec)] + [
        (f"spec.templates[{i}]", t) for i, t in enumerate(templates) if isinstance(t, dict)
    ]
    for where, holder in holders:
        volumes = holder.get("volumes")
        for k, volume in enumerate(volumes if isinstance(volumes, list) else []):
            secret = volume.get("secret") if isinstance(volume, dict) else None
            if isinstance(secret, dict):
                refs += _volume_refs(f"{where}.volumes[{k}].secret", secret)
    pull = spec.get("imagePullSecrets")
    for k, entry in enumerate(pull if isinstance(pull, list) else []):
        if isinstance(entry, dict):
            refs.append(
                SecretRef(
                    f"spec.imagePullSecrets[{k}]",
                    str(entry.get("name") or ""),
                    DOCKER_CONFIG_KEY,
                    key_field="",
                )
            )
    return refs


def _volume_refs(field: str, secret: Mapping[str, Any]) -> list[SecretRef]:
    """A secret volume: the keys of its ``items``, else the whole secret."""
    name = str(secret.get("secretName") or "")
    optional = secret.get("optional") is True
    items = secret.get("items")
    if not isinstance(items, list) or not items:
        return [SecretRef(field, name, WHOLE_SECRET, optional, name_field="secretName")]
    return [
        SecretRef(
            field,
            name,
            str(item.get("key") or "") if isinstance(item, dict) else "",
            optional,
            name_field="secretName",
            key_field=f"items[{m}].key",
        )
        for m, item in enumerate(items)
    ]


def check_references(refs: Sequence[SecretRef]) -> list[tuple[str, str]]:
    """(field, why) for every reference without a valid secret name or key."""
    problems = []
    for ref in refs:
        if not NAME_RE.match(ref.name):
            problems.append((ref.name_path, f"{ref.name!r} is not a secret name"))
        if not ref.whole and not KEY_RE.match(ref.key):
            problems.append((ref.key_path, f"{ref.key!r} is not a secret key name"))
    return problems


class Mask:
    """Replaces the values of an execution's secrets with ``***`` in its log lines.

    A value of several lines is masked line by line (a step prints it that way), so no
    piece holds a newline. The lines of one write are joined and searched with
    ``str.find`` per piece (no regular expression: a few literal pieces are found
    faster so); only the lines that hold one are copied. The common case, no secret in
    them, costs one join and one scan per piece (bench/log_mask.py measures it)."""

    __slots__ = ("pieces",)

    def __init__(self, values: Iterable[str]):
        pieces = {
            piece
            for value in values
            for piece in value.splitlines()
            if len(piece.strip()) >= MIN_MASKED_CHARS
        }
        self.pieces = sorted(pieces, key=len, reverse=True)  # the longest is masked first

    def __bool__(self) -> bool:
        return bool(self.pieces)

    def __call__(self, texts: list[str]) -> list[str]:
        if not self.pieces:
            return texts
        joined = "\n".join(texts)
        hits: set[int] = set()
        for piece in self.pieces:
            at = joined.find(piece)
            line = last = 0
            while at >= 0:
                line += joined.count("\n", last, at)
                last = at
                hits.add(line)
                at = joined.find(piece, at + len(piece))
        if not hits:
            return texts
        if joined.count("\n") != len(texts) - 1:  # a text held a newline of its own
            return [self.text(text) for text in texts]
        masked = list(texts)
        for line in hits:
            masked[line] = self.text(masked[line])
        return masked

    def text(self, text: str) -> str:
        """One text with every piece masked."""
        for piece in self.pieces:
            if piece in text:
                text = text.replace(piece, MASK)
        return text


class SecretService:
    """The secret use cases of the API, and what execution creates and starts need."""

    def __init__(
        self, store: SecretStore, cipher: SecretCipher, page_tokens: PageTokens | None = None
    ):
        self.store = store
        self.cipher = cipher
        self.page_tokens = page_tokens or PageTokens()

    # ------------------------------------------------------------------ the API

    async def create(
        self,
        resource_group: str,
        name: str,
        data: Mapping[str, str],
        caller: Caller = SYSTEM_CALLER,
    ) -> Secret:
        secret, audit = await self._sealed("secret.create", resource_group, name, data, caller)
        return await self.store.create_secret(secret, audit=audit)

    async def update(
        self,
        resource_group: str,
        name: str,
        data: Mapping[str, str],
        caller: Caller = SYSTEM_CALLER,
    ) -> Secret:
        secret, audit = await self._sealed("secret.update", resource_group, name, data, caller)
        return await self.store.update_secret(secret, audit=audit)

    async def _sealed(
        self,
        action: str,
        resource_group: str,
        name: str,
        data: Mapping[str, str],
        caller: Caller,
    ) -> tuple[Secret, AuditEvent]:
        """The checked, sealed secret to write, and the audit event written with it."""
        self._check(name, data)
        sealed = await asyncio.to_thread(self._seal, data)
        secret = Secret(name=name, resource_group=resource_group, keys=sorted(data), sealed=sealed)
        return secret, caller.event(action, "secret", name, resource_group, detail=_keys(data))

    async def list(self, resource_group: str, page_size: int, page_token: str) -> Page[Secret]:
        page = page_request(page_size, page_token, {"kind": "secrets"}, tokens=self.page_tokens)
        return await self.store.list_secrets(resource_group, page)

    async def delete(self, resource_group: str, name: str, caller: Caller = SYSTEM_CALLER) -> None:
        v = Violations()
        _check_name(v, name)
        v.raise_if_any()
        await self.store.delete_secret(
            resource_group,
            name,
            audit=caller.event("secret.delete", "secret", name, resource_group),
        )

    # -------------------------------------------------------- executions' needs

    async def require(self, resource_group: str, refs: Sequence[SecretRef]) -> None:
        """FailedPrecondition naming the first reference whose secret or key the group
        lacks (optional ``secretKeyRef`` entries may lack theirs)."""
        found = await self.store.get_secrets(resource_group, sorted({r.name for r in refs}))
        for ref in refs:
            secret = found.get(ref.name)
            if secret is None:
                if ref.optional:
                    continue
                raise FailedPrecondition(
                    message=(
                        f"secret {ref.name!r} does not exist in resource group "
                        f"{resource_group!r} ({ref.name_path} refers to it)"
                    ),
                    reason=Reason.SECRET_NOT_FOUND,
                    metadata={"secret": ref.name, "field": ref.name_path},
                )
            if not ref.whole and ref.key not in secret.keys and not ref.optional:
                raise FailedPrecondition(
                    message=(
                        f"secret {ref.name!r} has no key {ref.key!r} "
                        f"({ref.key_path} "
                        f"refers to it)"
                    ),
                    reason=Reason.SECRET_KEY_NOT_FOUND,
                    metadata={
                        "secret": ref.name,
                        "key": ref.key,
                        "field": ref.key_path,
                    },
                )

    async def resolve(self, resource_group: str, refs: Sequence[SecretRef]) -> Resolved:
        """The values the references name, opened, and the pull credentials. Raises
        ValueError saying which secret or key is missing or cannot be opened (the
        execution then cannot start)."""
        resolved = Resolved()
        if not refs:
            return resolved
        found = await self.store.get_secrets(resource_group, sorted({r.name for r in refs}))
        opened: dict[str, dict[str, str]] = {}
        for name, secret in found.items():
            try:
                opened[name] = await asyncio.to_thread(self._unseal, secret)
            except ValueError as exc:
                raise ValueError(f"secret {name!r}: {exc}") from None
        auths: dict[str, Any] = {}
        for ref in refs:
            values = opened.get(ref.name)
            if ref.whole and values is not None:
                for key, value in values.items():
                    resolved.values[(ref.name, key)] = value
                    resolved.masked.append(value)
                continue
            if values is None or ref.key not in values:
                if ref.optional:
                    continue
                what = (
                    f"secret {ref.name!r}"
                    if values is None
                    else (f"key {ref.key!r} of secret {ref.name!r}")
                )
                raise ValueError(f"{what} does not exist in resource group {resource_group!r}")
            value = values[ref.key]
            resolved.values[(ref.name, ref.key)] = value
            resolved.masked.append(value)
            if ref.field.startswith("spec.imagePullSecrets"):
                try:
                    config = json.loads(value)
                    auths.update(config["auths"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(
                        f"secret {ref.name!r}: {DOCKER_CONFIG_KEY} is not a container auth "
                        f'file ({{"auths": {{REGISTRY: {{"auth": ...}}}}}})'
                    ) from None
        if auths:
            resolved.pull_auth = json.dumps({"auths": auths})
        return resolved

    # ----------------------------------------------------------------- helpers

    def _seal(self, data: Mapping[str, str]) -> str:
        return self.cipher.seal(json.dumps(dict(data), sort_keys=True).encode("utf-8"))

    def _unseal(self, secret: Secret) -> dict[str, str]:
        plain = self.cipher.unseal(secret.sealed)
        values = json.loads(plain.decode("utf-8"))
        if not isinstance(values, dict):
            raise ValueError("its stored values are not readable")
        return values

    @staticmethod
    def _check(name: str, data: Mapping[str, str]) -> None:
        v = Violations()
        _check_name(v, name)
        if not data:
            v.add("data", "at least one key is required")
        elif len(data) > MAX_KEYS:
            v.add("data", f"at most {MAX_KEYS} keys")
        size = 0
        for key, value in data.items():
            if not KEY_RE.match(key):
                v.add(
                    f"data[{key!r}]",
                    "a key name is 1 to 253 letters, digits, '-', '_' or '.', not '.' or '..'",
                )
            size += len(key.encode()) + len(value.encode())
        if size > MAX_DATA_BYTES:
            v.add("data", "must be at most 1 MiB in all")
        v.raise_if_any()


def _keys(data: Mapping[str, str]) -> str:
    """The key names of a secret for its audit event (never a value)."""
    return "keys: " + ", ".join(sorted(data))


def _check_name(v: Violations, name: str) -> None:
    if not name:
        v.add("name", "is required")
    elif not NAME_RE.match(name):
        v.add(
            "name",
            "must be 1 to 63 lower-case letters, digits, '-' or '.', starting and ending "
            "with a letter or digit",
        )
