"""Test support: a small IPLD Schema reader and validator for the block shapes in ``schemas/*.ipldsch``.

Lives with the tests, not in the package: ``schemas/`` is the contract, ``ipld_scheduler.model``
enforces it, and nothing at run time needs to parse the DSL; ``tests/test_schemas.py`` uses this
module to keep the two in agreement (field tables, kinds, statuses) and to check that what the model
writes validates and what it refuses the schema refuses too.

Owns: parsing the subset of the IPLD Schema DSL (https://ipld.io/docs/schemas/) those files use into
a type table, and checking IPLD data model values (as :func:`ipld_scheduler.codec.decode` returns
them) against a named type, raising :class:`SchemaError` with the path of the first offending value.

The subset: ``##``/``#`` comments; the prelude (``Bool Int Float String Bytes Any Map List Link
Null``); ``type X bool|int|float|string|bytes|any``; ``type X &Y``, ``[T]``, ``{String:T}``
(``nullable`` values allowed); ``struct`` with ``optional``/``nullable`` fields and the ``map``
representation; ``enum`` with the ``string`` representation and ``("wire")`` renames; ``union`` with
the ``keyed``, ``kinded`` and ``inline {discriminantKey "k"}`` representations. Anything else is a
:class:`SchemaError` rather than silently ignored, so the files cannot say more than is checked.

Must not: do I/O (only :func:`load_schemas` reads the schema files), know the model classes (the
schema is the description of the wire; ``model`` is what enforces it, and ``tests/test_schemas.py``
checks they agree), or claim more than the DSL can: typed links (``&Workflow``) are checked to be
links, not what they point at, and limits such as string lengths live in ``model``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, TypeAlias

from ipld_scheduler.codec import CID
from ipld_scheduler.errors import InvalidInput

__all__ = [
    "ROOT_TYPES",
    "Enum",
    "Field",
    "LinkOf",
    "ListOf",
    "MapOf",
    "Named",
    "Scalar",
    "Schema",
    "SchemaError",
    "Struct",
    "Union",
    "data_kind",
    "default_schema",
    "load_schemas",
    "parse",
    "validate",
]

ROOT_TYPES: Final = ("Event", "Workflow", "Result", "Log")
"""The types a block of this project can be, in the order :meth:`Schema.identify` tries them."""

MAX_DEPTH: Final = 96
"""Deeper values are refused (the codec stops at 65 nested containers, so this is never reached
by decoded blocks; it keeps hand-built values from exhausting the stack)."""


class SchemaError(InvalidInput, ValueError):
    """A value that does not match its schema type, or schema text that is not valid.

    ``path`` names where: ``Event(schedule).body.workflow`` or ``Result.steps[2].name`` for values,
    ``event.ipldsch:12`` for schema text.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# --- type terms and definitions -------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A reference to a type by name."""

    name: str


@dataclass(frozen=True)
class LinkOf:
    """``&Target``: a link expected to point at a ``Target`` (not checked: the block is elsewhere)."""

    target: str


@dataclass(frozen=True)
class ListOf:
    """``[T]`` or ``[nullable T]``."""

    item: TypeTerm
    nullable: bool = False


@dataclass(frozen=True)
class MapOf:
    """``{K:V}`` or ``{K:nullable V}``; ``K`` must be a type represented as a string."""

    key: str
    value: TypeTerm
    nullable: bool = False


TypeTerm: TypeAlias = Named | LinkOf | ListOf | MapOf


@dataclass(frozen=True)
class Scalar:
    """A data model kind: ``bool int float string bytes null``, or ``any`` (every kind)."""

    kind: str


@dataclass(frozen=True)
class Alias:
    """``type X &Y``, ``type X [T]`` or ``type X {K:V}``: a name for a recursive or link term."""

    term: TypeTerm


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeTerm
    optional: bool = False
    nullable: bool = False


@dataclass(frozen=True)
class Struct:
    """A struct with the ``map`` representation: exactly its fields, none unknown."""

    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        for field in self.fields:
            if field.name == name:
                return field
        return None

    @property
    def required(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if not f.optional)

    @property
    def optional(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.optional)


@dataclass(frozen=True)
class Enum:
    """An enum with the ``string`` representation: ``members`` are (member name, wire string)."""

    members: tuple[tuple[str, str], ...]

    @property
    def values(self) -> frozenset[str]:
        return frozenset(wire for _, wire in self.members)


@dataclass(frozen=True)
class Union:
    """``keyed``/``inline``: members are (discriminant string, member type name); ``kinded``:
    (data model kind, member term)."""

    representation: str
    members: tuple[tuple[str, TypeTerm], ...]
    discriminant_key: str | None = None

    def member(self, discriminant: str) -> TypeTerm | None:
        for key, term in self.members:
            if key == discriminant:
                return term
        return None


TypeDef: TypeAlias = Scalar | Alias | Struct | Enum | Union

_KINDS: Final = frozenset({"bool", "int", "float", "string", "bytes", "any"})
_REPRESENTATION_KINDS: Final = frozenset({"bool", "int", "float", "string", "bytes", "map", "list", "link"})
_PRELUDE: Final[dict[str, TypeDef]] = {
    "Bool": Scalar("bool"),
    "Int": Scalar("int"),
    "Float": Scalar("float"),
    "String": Scalar("string"),
    "Bytes": Scalar("bytes"),
    "Any": Scalar("any"),
    "Null": Scalar("null"),
    "Map": Alias(MapOf("String", Named("Any"))),
    "List": Alias(ListOf(Named("Any"))),
    "Link": Alias(LinkOf("Any")),
}


def data_kind(value: Any) -> str:
    """The IPLD data model kind of a Python value (``"map"``, ``"link"``...), or its type name."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    if kind is str:
        return "string"
    if kind is bytes:
        return "bytes"
    if kind is list or kind is tuple:
        return "list"
    if kind is dict:
        return "map"
    if kind is CID:
        return "link"
    return kind.__name__


# --- parsing ----------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
    (?P<space>[ \t\r]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*")
  | (?P<punct>[{}\[\]():|&])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    where: str


def _tokens(text: str, source: str) -> Iterator[_Token]:
    line = 1
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SchemaError(f"{source}:{line}", f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind == "newline":
            line += 1
        elif kind in ("string", "punct", "word"):
            value = match.group()
            yield _Token(kind, value[1:-1] if kind == "string" else value, f"{source}:{line}")
        pos = match.end()


class _Parser:
    """Recursive descent over the token list; one instance per schema text."""

    def __init__(self, text: str, source: str) -> None:
        self.tokens = list(_tokens(text, source))
        self.pos = 0
        self.source = source

    def _where(self) -> str:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos].where
        return f"{self.source}:end"

    def peek(self) -> str | None:
        return self.tokens[self.pos].text if self.pos < len(self.tokens) else None

    def next(self, expected: str | None = None, kind: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise SchemaError(self._where(), f"unexpected end of schema, expected {expected or kind}")
        token = self.tokens[self.pos]
        if (expected is not None and token.text != expected) or (kind is not None and token.kind != kind):
            raise SchemaError(token.where, f"expected {expected or kind}, got {token.text!r}")
        self.pos += 1
        return token.text

    def accept(self, word: str) -> bool:
        if self.peek() == word and self.tokens[self.pos].kind != "string":
            self.pos += 1
            return True
        return False

    def type_name(self) -> str:
        where = self._where()
        name = self.next(kind="word")
        if not name[0].isupper():
            raise SchemaError(where, f"type names start with a capital letter: {name!r}")
        return name

    def parse(self) -> list[tuple[str, TypeDef, str]]:
        out: list[tuple[str, TypeDef, str]] = []
        while self.peek() is not None:
            where = self._where()
            word = self.next(kind="word")
            if word != "type":
                raise SchemaError(where, f"expected 'type', got {word!r} (only type declarations)")
            name = self.type_name()
            out.append((name, self.definition(), where))
        return out

    def term(self) -> TypeTerm:
        if self.accept("&"):
            return LinkOf(self.type_name())
        if self.accept("["):
            nullable = self.accept("nullable")
            item = self.term()
            self.next("]")
            return ListOf(item, nullable)
        if self.accept("{"):
            key = self.type_name()
            self.next(":")
            nullable = self.accept("nullable")
            value = self.term()
            self.next("}")
            return MapOf(key, value, nullable)
        return Named(self.type_name())

    def definition(self) -> TypeDef:
        word = self.peek()
        if word in _KINDS:
            self.pos += 1
            return Scalar(word or "")
        if word == "struct":
            self.pos += 1
            return self.struct()
        if word == "enum":
            self.pos += 1
            return self.enum()
        if word == "union":
            self.pos += 1
            return self.union()
        if word in ("&", "[", "{"):
            return Alias(self.term())
        raise SchemaError(self._where(), f"unsupported type definition starting with {word!r}")

    def representation(self, allowed: tuple[str, ...]) -> str:
        if not self.accept("representation"):
            return allowed[0]
        where = self._where()
        word = self.next(kind="word")
        if word not in allowed:
            raise SchemaError(where, f"representation {word!r} is not supported (only {', '.join(allowed)})")
        return word

    def struct(self) -> Struct:
        self.next("{")
        fields: list[Field] = []
        while not self.accept("}"):
            where = self._where()
            name = self.next(kind="word")
            optional = self.accept("optional")
            nullable = self.accept("nullable")
            if any(f.name == name for f in fields):
                raise SchemaError(where, f"field {name!r} declared twice")
            fields.append(Field(name, self.term(), optional, nullable))
            if self.peek() == "(":
                raise SchemaError(self._where(), "field options (rename, implicit) are not supported")
        self.representation(("map",))
        return Struct(tuple(fields))

    def enum(self) -> Enum:
        self.next("{")
        members: list[tuple[str, str]] = []
        while not self.accept("}"):
            self.next("|")
            where = self._where()
            name = self.next(kind="word")
            wire = name
            if self.accept("("):
                wire = self.next(kind="string")
                self.next(")")
            if any(n == name or w == wire for n, w in members):
                raise SchemaError(where, f"enum member {name!r} ({wire!r}) declared twice")
            members.append((name, wire))
        self.representation(("string",))
        return Enum(tuple(members))

    def union(self) -> Union:
        self.next("{")
        raw: list[tuple[TypeTerm, _Token]] = []
        while not self.accept("}"):
            self.next("|")
            member: TypeTerm = LinkOf(self.type_name()) if self.accept("&") else Named(self.type_name())
            if self.pos >= len(self.tokens):
                raise SchemaError(self._where(), "unexpected end of schema in a union")
            raw.append((member, self.tokens[self.pos]))
            self.pos += 1
        where = self._where()
        if not self.accept("representation"):
            raise SchemaError(where, "a union must state its representation")
        representation = self.next(kind="word")
        key = None
        if representation == "inline":
            self.next("{")
            self.next("discriminantKey")
            key = self.next(kind="string")
            self.next("}")
        elif representation not in ("keyed", "kinded"):
            raise SchemaError(where, f"union representation {representation!r} is not supported")
        members: list[tuple[str, TypeTerm]] = []
        for member, token in raw:
            wanted = "word" if representation == "kinded" else "string"
            if token.kind != wanted:
                raise SchemaError(token.where, f"a {representation} union member needs a {wanted} after it")
            if representation == "kinded" and token.text not in _REPRESENTATION_KINDS:
                raise SchemaError(token.where, f"{token.text!r} is not a representation kind")
            if representation != "kinded" and isinstance(member, LinkOf):
                raise SchemaError(token.where, "only kinded unions may have link members")
            if any(k == token.text for k, _ in members):
                raise SchemaError(token.where, f"union discriminant {token.text!r} used twice")
            members.append((token.text, member))
        return Union(representation, tuple(members), key)


def parse(*texts: str, sources: Sequence[str] | None = None) -> Schema:
    """Parse one or more schema texts into a single checked type table (they may refer to each other)."""
    names = list(sources) if sources is not None else [f"<schema {i}>" for i in range(len(texts))]
    if len(names) != len(texts):
        raise ValueError("parse: one source name per text")
    types: dict[str, TypeDef] = dict(_PRELUDE)
    declared: dict[str, str] = {}
    for text, source in zip(texts, names, strict=True):
        for name, definition, where in _Parser(text, source).parse():
            if name in declared or name in _PRELUDE:
                raise SchemaError(where, f"type {name!r} already declared ({declared.get(name, 'prelude')})")
            declared[name] = where
            types[name] = definition
    schema = Schema(types)
    schema._check(declared)
    return schema


# --- the type table and validation ----------------------------------------------------------


class Schema:
    """A checked type table: every referenced name exists and every representation is coherent."""

    def __init__(self, types: dict[str, TypeDef]) -> None:
        self.types = types

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __getitem__(self, name: str) -> TypeDef:
        try:
            return self.types[name]
        except KeyError:
            raise SchemaError(name, "no such type in the schema") from None

    def struct(self, name: str) -> Struct:
        definition = self[name]
        if not isinstance(definition, Struct):
            raise SchemaError(name, "not a struct")
        return definition

    def _terms(self, definition: TypeDef) -> Iterator[TypeTerm]:
        if isinstance(definition, Alias):
            yield definition.term
        elif isinstance(definition, Struct):
            yield from (f.type for f in definition.fields)
        elif isinstance(definition, Union):
            yield from (term for _, term in definition.members)

    def _names(self, term: TypeTerm) -> Iterator[str]:
        if isinstance(term, Named):
            yield term.name
        elif isinstance(term, LinkOf):
            yield term.target
        elif isinstance(term, ListOf):
            yield from self._names(term.item)
        else:
            yield term.key
            yield from self._names(term.value)

    def representation_kinds(self, term: TypeTerm) -> frozenset[str]:
        """The data model kinds a value of ``term`` can have (a kinded union has several)."""
        if isinstance(term, LinkOf):
            return frozenset({"link"})
        if isinstance(term, ListOf):
            return frozenset({"list"})
        if isinstance(term, MapOf):
            return frozenset({"map"})
        definition = self[term.name]
        if isinstance(definition, Scalar):
            if definition.kind == "any":
                return _REPRESENTATION_KINDS | {"null"}
            return frozenset({definition.kind})
        if isinstance(definition, Alias):
            return self.representation_kinds(definition.term)
        if isinstance(definition, Enum):
            return frozenset({"string"})
        if isinstance(definition, Union) and definition.representation == "kinded":
            return frozenset(kind for kind, _ in definition.members)
        return frozenset({"map"})

    def _check(self, declared: dict[str, str]) -> None:
        for name, where in declared.items():
            definition = self.types[name]
            for term in self._terms(definition):
                for ref in self._names(term):
                    if ref not in self.types:
                        raise SchemaError(where, f"{name} refers to undeclared type {ref!r}")
                self._check_term(term, where)
            if isinstance(definition, Union):
                for key, member in definition.members:
                    kinds = self.representation_kinds(member)
                    if definition.representation == "kinded" and kinds != {key}:
                        raise SchemaError(
                            where, f"{name}: member for {key!r} is represented as {sorted(kinds)}"
                        )
                    if definition.representation == "inline":
                        member_def = self.types[member.name] if isinstance(member, Named) else None
                        if not isinstance(member_def, Struct):
                            raise SchemaError(where, f"{name}: inline union members must be structs")
                        if member_def.field(definition.discriminant_key or "") is not None:
                            raise SchemaError(
                                where, f"{name}: {member} has a field named like the discriminant"
                            )

    def _check_term(self, term: TypeTerm, where: str) -> None:
        if isinstance(term, MapOf):
            if self.representation_kinds(Named(term.key)) != {"string"}:
                raise SchemaError(where, f"map keys must be represented as strings, {term.key} is not")
            self._check_term(term.value, where)
        elif isinstance(term, ListOf):
            self._check_term(term.item, where)

    # --- validation ---------------------------------------------------------------------------

    def validate(self, type_name: str, value: Any) -> None:
        """Raise :class:`SchemaError` (naming the path) unless ``value`` is a valid ``type_name``."""
        self._named(type_name, value, type_name, 0)

    def is_valid(self, type_name: str, value: Any) -> bool:
        try:
            self.validate(type_name, value)
        except SchemaError:
            return False
        return True

    def identify(self, value: Any, candidates: Sequence[str] = ROOT_TYPES) -> str | None:
        """The first of ``candidates`` that ``value`` is valid as (what ``inspect`` shows a block as)."""
        for name in candidates:
            if name in self.types and self.is_valid(name, value):
                return name
        return None

    def _term(self, term: TypeTerm, value: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise SchemaError(path, f"nested deeper than {MAX_DEPTH}")
        if isinstance(term, Named):
            self._named(term.name, value, path, depth)
        elif isinstance(term, LinkOf):
            if type(value) is not CID:
                raise SchemaError(path, f"expected a link (&{term.target}), got {data_kind(value)}")
        elif isinstance(term, ListOf):
            if type(value) is not list and type(value) is not tuple:
                raise SchemaError(path, f"expected a list, got {data_kind(value)}")
            for index, item in enumerate(value):
                if item is None and term.nullable:
                    continue
                self._term(term.item, item, f"{path}[{index}]", depth + 1)
        else:
            if type(value) is not dict:
                raise SchemaError(path, f"expected a map, got {data_kind(value)}")
            key_type = Named(term.key)
            for key, item in value.items():
                if type(key) is not str:
                    raise SchemaError(path, f"map keys must be strings, got {data_kind(key)}")
                self._term(key_type, key, f"{path}{{key {key!r}}}", depth + 1)
                if item is None and term.nullable:
                    continue
                self._term(term.value, item, f"{path}.{key}", depth + 1)

    def _named(self, name: str, value: Any, path: str, depth: int) -> None:
        definition = self[name]
        if isinstance(definition, Scalar):
            if definition.kind == "any":
                self._any(value, path, depth)
            elif data_kind(value) != definition.kind:
                raise SchemaError(path, f"expected {definition.kind} ({name}), got {data_kind(value)}")
        elif isinstance(definition, Alias):
            self._term(definition.term, value, path, depth)
        elif isinstance(definition, Struct):
            if type(value) is not dict:
                raise SchemaError(path, f"expected a map ({name}), got {data_kind(value)}")
            self._struct(definition, value, path, depth, skip=None)
        elif isinstance(definition, Enum):
            if type(value) is not str:
                raise SchemaError(path, f"expected a string ({name}), got {data_kind(value)}")
            if value not in definition.values:
                known = ", ".join(sorted(definition.values))
                raise SchemaError(path, f"{value!r} is not a {name} (one of {known})")
        else:
            self._union(name, definition, value, path, depth)

    def _struct(self, struct: Struct, value: dict[str, Any], path: str, depth: int, skip: str | None) -> None:
        names = {f.name for f in struct.fields}
        for key in value:
            if key != skip and key not in names:
                raise SchemaError(f"{path}.{key}", "unknown field")
        for field in struct.fields:
            where = f"{path}.{field.name}"
            if field.name not in value:
                if not field.optional:
                    raise SchemaError(where, "missing required field")
                continue
            item = value[field.name]
            if item is None and field.nullable:
                continue
            self._term(field.type, item, where, depth + 1)

    def _union(self, name: str, union: Union, value: Any, path: str, depth: int) -> None:
        if union.representation == "kinded":
            kind = data_kind(value)
            member = union.member(kind)
            if member is None:
                allowed = ", ".join(k for k, _ in union.members)
                raise SchemaError(path, f"{name} is one of {allowed}; got {kind}")
            self._term(member, value, path, depth)
            return
        if type(value) is not dict:
            raise SchemaError(path, f"expected a map ({name}), got {data_kind(value)}")
        if union.representation == "keyed":
            if len(value) != 1:
                raise SchemaError(path, f"a keyed union ({name}) is a map of exactly one entry")
            ((key, inner),) = value.items()
            member = union.member(key) if type(key) is str else None
            if member is None:
                raise SchemaError(path, f"{key!r} is not a member of {name}")
            self._term(member, inner, f"{path}.{key}", depth + 1)
            return
        key = union.discriminant_key or ""
        if key not in value:
            raise SchemaError(f"{path}.{key}", f"missing discriminant of {name}")
        discriminant = value[key]
        member = union.member(discriminant) if type(discriminant) is str else None
        if member is None:
            known = ", ".join(k for k, _ in union.members)
            raise SchemaError(f"{path}.{key}", f"{discriminant!r} is not one of {name}'s kinds ({known})")
        assert isinstance(member, Named)  # checked at parse time
        struct = self.types[member.name]
        assert isinstance(struct, Struct)
        self._struct(struct, value, f"{path}({discriminant})", depth, skip=key)

    def _any(self, value: Any, path: str, depth: int) -> None:
        """``Any``: any data model value, checked all the way down (no foreign Python objects)."""
        if depth > MAX_DEPTH:
            raise SchemaError(path, f"nested deeper than {MAX_DEPTH}")
        kind = data_kind(value)
        if kind == "list":
            for index, item in enumerate(value):
                self._any(item, f"{path}[{index}]", depth + 1)
        elif kind == "map":
            for key, item in value.items():
                if type(key) is not str:
                    raise SchemaError(path, f"map keys must be strings, got {data_kind(key)}")
                self._any(item, f"{path}.{key}", depth + 1)
        elif kind not in _REPRESENTATION_KINDS and kind != "null":
            raise SchemaError(path, f"{kind} is not an IPLD data model kind")


# --- loading --------------------------------------------------------------------------------


def _schema_dir(directory: str | Path | None) -> Path:
    return Path(directory) if directory is not None else Path(__file__).resolve().parent.parent / "schemas"


def load_schemas(dir: str | Path | None = None) -> Schema:
    """Parse every ``*.ipldsch`` in ``dir``; by default the repository's ``schemas/``."""
    directory = _schema_dir(dir)
    files = sorted(directory.glob("*.ipldsch"))
    if not files:
        raise SchemaError(str(directory), "no *.ipldsch schema files found")
    return parse(*(f.read_text(encoding="utf-8") for f in files), sources=[f.name for f in files])


@lru_cache(maxsize=1)
def default_schema() -> Schema:
    """The project's schema, loaded once per process."""
    return load_schemas()


def validate(type_name: str, value: Any, schema: Schema | None = None) -> None:
    """Raise :class:`SchemaError` naming the path unless ``value`` is a valid ``type_name``
    (against the project's schema unless another is given)."""
    (schema or default_schema()).validate(type_name, value)
