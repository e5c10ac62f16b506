"""What PostgreSQL's catalog says a set of roles may do in the current database and its schema public.

The check half of :mod:`tracker.store.roles`: it reads *effective* privileges (``has_*_privilege``,
which count role memberships, PUBLIC and column grants), role attributes and owners, and compares
nothing itself. PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

# Every privilege PostgreSQL has on each kind of object, and the role attributes no tracker role may hold.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
ROLE_ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")


@dataclass(frozen=True)
class Catalog:
    """Effective privileges of some roles on the current database, schema public and what it holds."""

    attributes: dict[str, dict[str, bool]]  # role -> rolsuper, ... (a role that does not exist is absent)
    members_of_owner: dict[str, bool]  # role -> is a member (directly or not) of the owner
    database: dict[str, frozenset[str]]  # role -> CONNECT, TEMPORARY, CREATE on the current database
    schema: dict[str, frozenset[str]]  # role -> USAGE, CREATE on schema public
    may_set_replication_role: dict[str, bool]  # role -> may SET session_replication_role
    relations: dict[str, tuple[str, str]]  # name in public -> (relkind, owner)
    privileges: dict[tuple[str, str], frozenset[str]]  # (role, relation) -> privileges
    functions: dict[str, str]  # signature in public -> owner


_ROLES_SQL = """
    SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
    FROM pg_roles WHERE rolname = ANY(:roles)"""
_IN_PUBLIC = "c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
_RELATIONS_SQL = f"SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c WHERE {_IN_PUBLIC}"
# A column grant counts: UPDATE granted on one column of run_events is an UPDATE on run_events.
_PRIVILEGES_SQL = f"""
    SELECT c.relname, ARRAY(
        SELECT p FROM unnest(CASE WHEN c.relkind = 'S' THEN CAST(:sequence AS text[])
                                  ELSE CAST(:table AS text[]) END) AS p
        WHERE CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(:role, c.oid, p)
                   WHEN p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                        THEN has_any_column_privilege(:role, c.oid, p)
                   ELSE has_table_privilege(:role, c.oid, p) END)
    FROM pg_class c WHERE {_IN_PUBLIC}"""
_PLACES_SQL = """
    SELECT ARRAY(SELECT p FROM unnest(ARRAY['CONNECT', 'TEMPORARY', 'CREATE']) AS p
                 WHERE has_database_privilege(:role, current_database(), p)),
           ARRAY(SELECT p FROM unnest(ARRAY['USAGE', 'CREATE']) AS p WHERE has_schema_privilege(:role, 'public', p)),
           pg_has_role(:role, :owner, 'MEMBER')"""
_FUNCTIONS_SQL = """
    SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace"""


def read_catalog(connection: Connection, roles: Sequence[str], owner: str) -> Catalog:
    """The catalog's view of ``roles`` (memberships are asked of ``owner``, which must exist)."""
    attributes = {
        row[0]: dict(zip(ROLE_ATTRIBUTES, row[1:], strict=True))
        for row in connection.execute(text(_ROLES_SQL), {"roles": list(roles)})
    }
    catalog = Catalog(
        attributes=attributes,
        members_of_owner={},
        database={},
        schema={},
        may_set_replication_role={},
        relations={name: (kind, owner) for name, kind, owner in connection.execute(text(_RELATIONS_SQL))},
        privileges={},
        functions={signature: owner for signature, owner in connection.execute(text(_FUNCTIONS_SQL))},
    )
    # SET on a superuser-only parameter can be granted since PostgreSQL 15; before, only superusers had it.
    parameter_acl = (connection.dialect.server_version_info or (0,)) >= (15,)
    for role in (role for role in roles if role in attributes):
        on_database, on_schema, member = connection.execute(text(_PLACES_SQL), {"role": role, "owner": owner}).one()
        catalog.database[role], catalog.schema[role] = frozenset(on_database), frozenset(on_schema)
        catalog.members_of_owner[role] = role != owner and bool(member)
        catalog.may_set_replication_role[role] = parameter_acl and bool(
            connection.execute(
                text("SELECT has_parameter_privilege(:role, 'session_replication_role', 'SET')"), {"role": role}
            ).scalar_one()
        )
        parameters = {"role": role, "table": list(TABLE_PRIVILEGES), "sequence": list(SEQUENCE_PRIVILEGES)}
        for relation, granted in connection.execute(text(_PRIVILEGES_SQL), parameters):
            catalog.privileges[(role, relation)] = frozenset(granted)
    return catalog
