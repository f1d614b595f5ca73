"""The schema: models bound per database."""

from __future__ import annotations

import sqlite3

import peewee as pw
import pytest

from server.domain import templates
from server.domain.errors import NotFound
from server.domain.models import Artifact, ArtifactKind
from server.store import tables
from server.store.repository import Store
from tests.conftest import SAMPLES


def _seed(store: Store, artifact_id: str) -> None:
    exe = templates.parse_template_text((SAMPLES / "iris-train.yaml").read_text(), "g")[0]
    store.put_executable(exe)
    store.create_artifact(
        Artifact(artifact_id, "g", "iris", ArtifactKind.DATASET, "file:///iris.csv", "iris")
    )


# ------------------------------------------------------------------------- binding


def test_two_stores_in_one_process_write_their_own_files(tmp_path):
    a = Store(f"sqlite:///{tmp_path / 'a.db'}")
    b = Store(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        _seed(a, "only-in-a")
        _seed(b, "only-in-b")
        a.create_artifact(
            Artifact("also-in-a", "g", "x", ArtifactKind.DATASET, "file:///x.csv", "iris")
        )
        assert a.get_artifact("g", "only-in-a").id == "only-in-a"
        with pytest.raises(NotFound):
            a.get_artifact("g", "only-in-b")
        with pytest.raises(NotFound):
            b.get_artifact("g", "also-in-a")
    finally:
        a.close()
        b.close()
    for name, expected in (("a.db", {"only-in-a", "also-in-a"}), ("b.db", {"only-in-b"})):
        con = sqlite3.connect(tmp_path / name)
        assert {r[0] for r in con.execute("SELECT artifact_id FROM artifact")} == expected
        assert con.execute("SELECT COUNT(*) FROM executable").fetchone()[0] == 1
        assert con.execute("SELECT COUNT(*) FROM scenario").fetchone()[0] == 1
        con.close()
    # The declared models stay unbound: nothing binds them process-wide.
    assert all(model._meta.database is None for model in tables.MODELS)


def test_bound_models_mirror_their_declarations():
    db = pw.SqliteDatabase(":memory:")
    bound = tables.bind(db)
    again = tables.bind(db)
    assert len(bound.models) == len(tables.MODELS)
    for declared, model in zip(tables.MODELS, bound.models, strict=True):
        assert getattr(bound, declared.__name__) is model
        assert issubclass(model, declared) and model is not getattr(again, declared.__name__)
        assert model._meta.database is db
        for option in ("table_name", "without_rowid", "indexes", "composite_key"):
            assert getattr(model._meta, option) == getattr(declared._meta, option), option
        assert [(f.name, f.column_name, type(f), f.null) for f in model._meta.sorted_fields] == [
            (f.name, f.column_name, type(f), f.null) for f in declared._meta.sorted_fields
        ]
        assert model._meta.get_primary_keys()[0].name == declared._meta.get_primary_keys()[0].name


