"""The IPLD schemas in ``schemas/`` and the block types in ``ipld_scheduler.model`` describe the same wire.

Owns: (a) structural agreement, field by field, between the parsed schema and the field tables the
model validates with (``_WF_REQUIRED``, ``_EV_REQUIRED``, ``_BODY_FIELDS``, ``_RESULT_*``, the kind and
status sets), so neither can change without the other; (b) properties: everything the model writes
validates, and schema-violating mutations of it (missing field, wrong kind, unknown field, unknown
kind or enum value, a link inside free-form data) are refused by BOTH the schema and ``from_ipld``;
(c) the parser's own behaviour on the DSL subset. Must not: depend on a repo, network or clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ipld_schema import (
    ROOT_TYPES,
    Enum,
    LinkOf,
    ListOf,
    MapOf,
    Named,
    Schema,
    SchemaError,
    Struct,
    Union,
    data_kind,
    load_schemas,
    parse,
    validate,
)

from ipld_scheduler import events as typed_events
from ipld_scheduler import model
from ipld_scheduler.codec import CID, cid_for, decode, encode
from ipld_scheduler.genesis import Policy, RoleRights
from ipld_scheduler.identity import Signer
from ipld_scheduler.model import (
    EVENT_KINDS,
    RESULT_STATUSES,
    Event,
    ModelError,
    Result,
    WorkflowDefinition,
    WorkflowTag,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA = load_schemas(SCHEMA_DIR)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One value of every data model kind. ``True``/``1``/``1.0`` are chosen because Python treats them as
# equal: a validator comparing with ``==`` instead of checking the kind would let them through, and
# they encode to different bytes (one logical block, several CIDs).
KIND_SAMPLES: dict[str, Any] = {
    "null": None,
    "bool": True,
    "int": 1,
    "float": 1.0,
    "string": "workflow",
    "bytes": bytes(32),
    "list": [],
    "map": {},
    "link": cid_for(b"sample"),
}

FIELD_SAMPLES: dict[str, dict[str, Any]] = {
    "policy": {"map": Policy().to_ipld()},
    "workflows": {"list": [cid_for(b"sample")]},
}
"""Per body field, a sample of a kind whose checker also checks the value (a policy map is a whole
``genesis.Policy``): used instead of the bare ``KIND_SAMPLES`` entry of that kind."""

Block = tuple[str, type[Any], dict[str, Any]]
"""(schema type name, model class with from_ipld, the block's IPLD data)."""


def _event_member(kind: str) -> tuple[Struct, Struct]:
    """(envelope struct, body struct) the Event union declares for ``kind``."""
    union = SCHEMA["Event"]
    assert isinstance(union, Union)
    member = union.member(kind)
    assert isinstance(member, Named), kind
    envelope = SCHEMA.struct(member.name)
    body = envelope.field("body")
    assert body is not None and isinstance(body.type, Named)
    return envelope, SCHEMA.struct(body.type.name)


# --- (a) the schema and the model's field tables agree ---------------------------------------------


def test_schema_files_parse_and_declare_the_root_types() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.ipldsch")) == [
        "event.ipldsch",
        "result.ipldsch",
        "workflow.ipldsch",
    ]
    for name in ROOT_TYPES:
        assert name in SCHEMA


def test_default_loader_finds_the_repo_schemas() -> None:
    assert sorted(load_schemas().types) == sorted(SCHEMA.types)


def test_workflow_fields_match_model() -> None:
    struct = SCHEMA.struct("Workflow")
    assert struct.required == model._WF_REQUIRED
    assert struct.optional == model._WF_OPTIONAL
    assert not any(f.nullable for f in struct.fields), "the model never writes null fields"
    wf_type = SCHEMA["WorkflowType"]
    assert isinstance(wf_type, Enum) and wf_type.values == {"workflow"}


def test_event_kinds_match_model() -> None:
    union = SCHEMA["Event"]
    assert isinstance(union, Union)
    assert union.representation == "inline" and union.discriminant_key == "kind"
    discriminants = {key for key, _ in union.members}
    assert discriminants == EVENT_KINDS == set(model._BODY_FIELDS)
    kind_enum = SCHEMA["EventKind"]
    assert isinstance(kind_enum, Enum) and kind_enum.values == EVENT_KINDS
    assert "kind" in model._EV_REQUIRED


UNFOLLOWED = {"CheckpointRoot"}
"""Link targets an event names but a merge does not fetch with it (``Payload.links`` leaves them out)."""


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
def test_event_payload_classes_match_the_schema_bodies(kind: str) -> None:
    """``events``: one class per kind whose fields are the body's, optional exactly when the schema
    says so, and whose links point where the schema's typed links (``&Workflow``...) point."""
    [cls] = [c for c in get_args(typed_events.Payload) if c.kind == kind]
    _envelope, body = _event_member(kind)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == body.required | body.optional
    for name, field in fields.items():
        has_default = field.default is not dataclasses.MISSING
        assert has_default == (name in body.optional), name
        assert not has_default or field.default is None, name
    linked = {  # a checkpoint's state root is not fetched by a merge (only a joiner reads it)
        f.name: f.type.target
        for f in body.fields
        if isinstance(f.type, LinkOf) and f.type.target not in UNFOLLOWED
    }
    listed = {  # a list of links (schedule-batch's workflows): each item is one link
        f.name: f.type.item.target
        for f in body.fields
        if isinstance(f.type, ListOf) and isinstance(f.type.item, LinkOf)
    }
    sample: dict[str, Any] = {name: cid_for(name.encode()) if name in linked else "x" for name in fields}
    sample.update({name: (cid_for(name.encode() + b"0"), cid_for(name.encode() + b"1")) for name in listed})
    links = cls(**sample).links()
    expected = {"Workflow": "workflow", "Result": "result", "Event": "event", "Any": "blob"}
    assert {cid: kind.value for cid, kind in links} == {
        **{sample[name]: expected.get(target, "blob") for name, target in linked.items()},
        **{cid: expected.get(target, "blob") for name, target in listed.items() for cid in sample[name]},
    }


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
def test_event_envelope_and_body_match_model(kind: str) -> None:
    envelope, body = _event_member(kind)
    assert envelope.required == model._EV_REQUIRED - {"kind"}
    assert envelope.optional == frozenset()
    required, optional = model._BODY_FIELDS[kind]
    assert body.required == required
    assert body.optional == optional
    for field in body.fields:
        assert field.name in model._BODY_CHECKS, f"the model has no check for body field {field.name!r}"
    parents = envelope.field("parents")
    assert parents is not None and parents.type == ListOf(LinkOf("Event"))


def test_result_fields_match_model() -> None:
    struct = SCHEMA.struct("Result")
    assert struct.required == model._RESULT_REQUIRED
    assert struct.optional == model._RESULT_OPTIONAL
    assert not any(f.nullable for f in struct.fields), "absent optional fields are left out, never null"
    statuses = SCHEMA["ResultStatus"]
    assert isinstance(statuses, Enum) and statuses.values == RESULT_STATUSES
    for log in ("stdout", "stderr"):
        field = struct.field(log)
        assert field is not None and field.type == LinkOf("Log")
    assert SCHEMA.representation_kinds(Named("Log")) == {"bytes"}


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
def test_body_field_kinds_match_model_checks(kind: str) -> None:
    """For every body field, the model's checker accepts exactly the data model kinds the schema names."""
    _, body = _event_member(kind)
    for field in body.fields:
        allowed = SCHEMA.representation_kinds(field.type)
        check = model._BODY_CHECKS[field.name]
        for sample_kind, bare in KIND_SAMPLES.items():
            sample = FIELD_SAMPLES.get(field.name, {}).get(sample_kind, bare)
            try:
                check(sample)
            except ModelError:
                accepted = False
            else:
                accepted = True
            assert accepted == (sample_kind in allowed), (kind, field.name, sample_kind)


def _all_structs() -> list[tuple[str, Struct]]:
    out = [("Workflow", SCHEMA.struct("Workflow")), ("Result", SCHEMA.struct("Result"))]
    for kind in sorted(EVENT_KINDS):
        envelope, body = _event_member(kind)
        out += [(f"Event({kind})", envelope), (f"Event({kind}).body", body)]
    return out


@pytest.mark.parametrize(("where", "struct"), _all_structs(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_field_type_is_one_the_model_checks(where: str, struct: Struct) -> None:
    """Each field's schema kinds are data model kinds, never ``Any``: the model checks every field."""
    for field in struct.fields:
        kinds = SCHEMA.representation_kinds(field.type)
        assert kinds, f"{where}.{field.name}"
        assert "null" not in kinds, f"{where}.{field.name}: the model has no field of type Any"


# --- strategies: model objects --------------------------------------------------------------------

cids = st.binary(max_size=48).map(cid_for)
ids = st.text(min_size=1, max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False)
plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    finite,
    st.text(max_size=12),
    st.binary(max_size=12),
)
plain = st.recursive(
    plain_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
plain_maps = st.dictionaries(st.text(max_size=10), plain, max_size=4)
tag_words = st.sampled_from([t.value for t in WorkflowTag] + ["P2P-Eligible", "custom label", "gpu"])

workflows = st.builds(
    WorkflowDefinition,
    workflow_id=ids,
    name=st.text(max_size=24),
    tags=st.lists(tag_words, max_size=5),
    priority=finite | st.integers(min_value=-100, max_value=100),
    metadata=st.none() | plain_maps,
    run=st.none() | plain_maps,
    workspace=st.none() | cids,
    actions=st.none()
    | st.dictionaries(
        st.sampled_from(["actions/setup-node@v4", "o/r@main", "a.b/c-d@v1.2/x"]),
        st.fixed_dictionaries({"commit": st.sampled_from(["a" * 40, "0" * 64]), "tree": cids}),
        min_size=1,
        max_size=3,
    ),
    context=st.none()
    | st.fixed_dictionaries(
        {
            "repository": st.just("o/r"),
            "sha": st.just("b" * 40),
            "ref": st.just("refs/heads/main"),
            "ref_name": st.just("main"),
            "event_name": st.sampled_from(["push", "pull_request"]),
            "event": plain_maps,
        }
    ),
    after=st.none() | st.lists(st.sampled_from(["build", "test:1", "test:2", "x" * 256]), max_size=3),
)

# What the test (not the model) believes each body field holds; the schema agreement tests above
# tie the field names to the model, these properties tie the values.
_ROLE_TAGS = st.sets(st.sampled_from(["gpu", "linux"])).map(sorted).map(tuple)
BODY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "workflow": cids,
    "schedule": cids,
    "result": cids,
    "state": cids,
    "id": ids,
    "peer": ids,
    "to": ids,
    "reason": st.text(max_size=40),
    "priority": finite,
    "key": st.binary(min_size=32, max_size=32),
    "claim": cids,
    "roles": st.lists(st.sampled_from(["admin", "submitter", "worker"]), unique=True).map(sorted),
    "rotate": st.just(True),
    "invite": st.just(True),
    "labels": st.lists(st.sampled_from(["gpu", "linux", "self-hosted", "x64"]), unique=True).map(sorted),
    "attempt": st.integers(min_value=1, max_value=model.MAX_ATTEMPT),
    "retries": st.integers(min_value=1, max_value=model.MAX_RETRIES),
    "workflows": st.lists(cids, min_size=1, max_size=8, unique_by=lambda c: c.raw),
    "policy": st.builds(
        Policy.with_roles,
        st.dictionaries(
            st.sampled_from(["admin", "ci", "submitter", "worker"]),
            st.builds(RoleRights, st.booleans(), st.booleans(), st.none() | _ROLE_TAGS),
            max_size=3,
        ),
        rate_window=st.integers(min_value=0, max_value=2**53),
        max_workflow_bytes=st.integers(min_value=1, max_value=2**20),
    ).map(lambda p: p.to_ipld()),
}
SIGNERS = [Signer.generate(f"peer-{i}") for i in range(3)]


@st.composite
def bodies(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    required, optional = model._BODY_FIELDS[kind]
    names = sorted(required) + [n for n in sorted(optional) if draw(st.booleans())]
    return {name: draw(BODY_VALUES[name]) for name in names}


ANY_KIND = st.sampled_from(sorted(EVENT_KINDS))


@st.composite
def events(draw: st.DrawFn, kinds: st.SearchStrategy[str] = ANY_KIND) -> Event:
    kind = draw(kinds)
    parents = sorted(set(draw(st.lists(cids, max_size=4))))
    height = draw(st.integers(min_value=2, max_value=2**62)) if parents else 1
    signer = draw(st.sampled_from(SIGNERS))
    body = draw(bodies(kind))
    return signer.sign(Event(kind=kind, author="", height=height, parents=tuple(parents), body=body, key=b""))


results = st.builds(
    Result,
    workflow_id=ids,
    peer=ids,
    status=st.sampled_from(sorted(RESULT_STATUSES)),
    duration_ms=st.integers(min_value=0, max_value=2**40),
    exit_code=st.none() | st.integers(min_value=-(2**31), max_value=2**31),
    reason=st.none() | st.text(max_size=40),
    stdout=st.none() | cids,
    stderr=st.none() | cids,
    steps=st.lists(plain_maps, max_size=3).map(tuple),
    outputs=st.none()
    | st.dictionaries(st.sampled_from(["v", "out_1", "a-b"]), st.text(max_size=20), min_size=1),
    skipped=st.booleans(),
)


def _block(kind: str, obj: Any) -> Block:
    return kind, type(obj), obj.to_ipld()


blocks = st.one_of(
    workflows.map(lambda w: _block("Workflow", w)),
    events().map(lambda e: _block("Event", e)),
    results.map(lambda r: _block("Result", r)),
)


# --- (b) properties ---------------------------------------------------------------------------------


@FAST
@given(workflows)
def test_workflows_validate(workflow: WorkflowDefinition) -> None:
    data = workflow.to_ipld()
    validate("Workflow", data, SCHEMA)
    decoded = decode(encode(data))
    validate("Workflow", decoded, SCHEMA)
    assert WorkflowDefinition.from_ipld(decoded) == workflow
    assert SCHEMA.identify(decoded) == "Workflow"


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_events_of_every_kind_validate(kind: str, data: st.DataObject) -> None:
    event = data.draw(events(st.just(kind)))
    ipld = event.to_ipld()
    validate("Event", ipld, SCHEMA)
    decoded = decode(encode(ipld))
    validate("Event", decoded, SCHEMA)
    assert Event.from_ipld(decoded) == event
    assert SCHEMA.identify(decoded) == "Event"


@FAST
@given(results)
def test_results_validate(result: Result) -> None:
    data = result.to_ipld()
    validate("Result", data, SCHEMA)
    decoded = decode(encode(data))
    validate("Result", decoded, SCHEMA)
    assert Result.from_ipld(decoded) == result
    assert SCHEMA.identify(decoded) == "Result"


def test_checkpoint_roots_and_chunks_validate() -> None:
    """What ``checkpoint.checkpoint_blocks`` writes is what the schema's ``CheckpointRoot`` describes."""
    from ipld_scheduler.checkpoint import CHUNK, checkpoint_blocks

    root, blocks = checkpoint_blocks(
        bytes(range(256)) * (CHUNK // 128), network=cid_for(b"genesis"), heads=[cid_for(b"h")], events=3
    )
    *chunks, (last, data) = blocks
    assert last == root and len(chunks) == 2
    validate("CheckpointRoot", decode(data), SCHEMA)
    for _cid, chunk in chunks:
        assert isinstance(decode(chunk), bytes)
    with pytest.raises(SchemaError):
        validate("CheckpointRoot", {**decode(data), "chunks": "not links"}, SCHEMA)


def test_log_blob_is_plain_bytes() -> None:
    validate("Log", decode(encode(b"line one\nline two\n")), SCHEMA)
    with pytest.raises(SchemaError):
        validate("Log", "text is not a log blob", SCHEMA)
    assert SCHEMA.identify(b"\x00\x01") == "Log"
    assert SCHEMA.identify({"nothing": "known"}) is None


def _both_reject(type_name: str, cls: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        validate(type_name, data, SCHEMA)
    with pytest.raises(ModelError):
        cls.from_ipld(data)


def _structs_of(type_name: str, data: dict[str, Any]) -> list[tuple[Struct, dict[str, Any]]]:
    """The (struct, map) pairs a mutation may target: the block itself, and an event's body."""
    if type_name != "Event":
        return [(SCHEMA.struct(type_name), data)]
    envelope, body = _event_member(data["kind"])
    return [(envelope, data), (body, data["body"])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks, st.data())
def test_mutations_are_rejected_by_schema_and_model(block: Block, data: st.DataObject) -> None:
    type_name, cls, ipld = block
    struct, target = data.draw(st.sampled_from(_structs_of(type_name, ipld)))
    mutation = data.draw(st.sampled_from(["drop", "wrong-kind", "unknown-field"]))
    if mutation == "drop":
        name = data.draw(st.sampled_from(sorted(struct.required)))
        del target[name]
    elif mutation == "wrong-kind":
        field = data.draw(st.sampled_from([f for f in struct.fields if f.name in target]))
        allowed = SCHEMA.representation_kinds(field.type)
        wrong = [kind for kind in KIND_SAMPLES if kind not in allowed]
        target[field.name] = KIND_SAMPLES[data.draw(st.sampled_from(wrong))]
    else:
        unknown = st.text(min_size=1, max_size=8).filter(lambda n: struct.field(n) is None and n != "kind")
        name = data.draw(unknown)
        target[name] = data.draw(plain_scalars)
    _both_reject(type_name, cls, ipld)


@FAST
@given(events(), st.one_of(st.text(max_size=12), *(st.just(v) for v in KIND_SAMPLES.values())))
def test_unknown_or_mistyped_event_kind_is_rejected(event: Event, kind: Any) -> None:
    if type(kind) is str and kind in EVENT_KINDS:
        return
    data = event.to_ipld()
    data["kind"] = kind
    _both_reject("Event", Event, data)


@FAST
@given(events())
def test_body_of_another_kind_is_rejected(event: Event) -> None:
    """A valid body under the wrong kind: the inline union must check the body against its own kind."""
    data = event.to_ipld()
    for other in sorted(EVENT_KINDS - {event.kind}):
        required, optional = model._BODY_FIELDS[other]
        if set(data["body"]) <= required | optional and required <= set(data["body"]):
            continue  # the body happens to fit the other kind too (e.g. evict vs peer-remove)
        data["kind"] = other
        _both_reject("Event", Event, data)


@FAST
@given(st.one_of(workflows.map(lambda w: _block("Workflow", w)), results.map(lambda r: _block("Result", r))))
def test_wrong_type_or_status_enum_is_rejected(block: Block) -> None:
    type_name, cls, data = block
    data["type"] = "event" if type_name == "Workflow" else "workflow"
    _both_reject(type_name, cls, data)
    if type_name == "Result":
        data["type"] = "result"
        data["status"] = "succeeded"
        _both_reject(type_name, cls, data)


@FAST
@given(workflows, st.sampled_from(["metadata", "run"]), cids)
def test_links_in_free_form_data_are_rejected(workflow: WorkflowDefinition, section: str, link: CID) -> None:
    data = workflow.to_ipld()
    data[section] = {"nested": [1, {"deeper": link}]}
    _both_reject("Workflow", WorkflowDefinition, data)


@pytest.mark.parametrize(
    ("type_name", "field", "value"),
    [
        ("Workflow", "v", 1.0),
        ("Workflow", "v", True),
        ("Event", "v", 1.0),
        ("Event", "v", True),
        ("Result", "v", True),
        ("Workflow", "run", None),
        ("Workflow", "run", [["cmd", "true"]]),
        ("Result", "exit_code", None),
        ("Result", "status", ["success"]),
        ("Event", "kind", ["schedule"]),
    ],
)
def test_values_python_confuses_are_rejected(type_name: str, field: str, value: Any) -> None:
    """Equal-in-Python or coercible values must not pass: they would re-encode to other bytes."""
    samples: dict[str, Callable[[], Any]] = {
        "Workflow": lambda: WorkflowDefinition("wf", "n", ["p2p_eligible"]),
        "Result": lambda: Result("wf", "peer", "success", 5, exit_code=0),
        "Event": lambda: SIGNERS[0].sign(Event("schedule", "", 1, (), {"workflow": cid_for(b"w")}, b"")),
    }
    obj = samples[type_name]()
    data = obj.to_ipld()
    data[field] = value
    _both_reject(type_name, type(obj), data)


# --- (c) the parser ------------------------------------------------------------------------------


def test_parser_reads_the_supported_subset() -> None:
    schema = parse(
        """
        # a comment
        type Name string
        type Pair struct {
          left &Pair
          right optional nullable Name
          items [nullable Int]
          index {String:&Any}
        } representation map
        type Colour enum { | Red ("r") | Green } representation string
        type Shape union { | Pair "pair" | Name "name" } representation keyed
        type Either union { | Name string | Int int | &Pair link } representation kinded
        type Tagged union { | Pair "p" } representation inline { discriminantKey "t" }
        """
    )
    pair = schema.struct("Pair")
    assert [f.name for f in pair.fields] == ["left", "right", "items", "index"]
    assert pair.required == {"left", "items", "index"} and pair.optional == {"right"}
    assert pair.field("items") is not None
    assert pair.fields[2].type == ListOf(Named("Int"), nullable=True)
    assert pair.fields[3].type == MapOf("String", LinkOf("Any"))
    colour = schema["Colour"]
    assert isinstance(colour, Enum) and colour.values == {"r", "Green"}
    link = cid_for(b"x")
    good_pair = {"left": link, "right": None, "items": [1, None], "index": {"a": link}}
    schema.validate("Pair", good_pair)
    schema.validate("Shape", {"name": "n"})
    schema.validate("Shape", {"pair": good_pair})
    schema.validate("Either", 3)
    schema.validate("Either", link)
    schema.validate("Tagged", {"t": "p", **good_pair})
    schema.validate("Colour", "r")
    bad: list[tuple[str, Any, str]] = [
        ("Pair", {**good_pair, "items": [1.5]}, "Pair.items[0]"),
        ("Pair", {**good_pair, "index": {"a": "not a link"}}, "Pair.index.a"),
        ("Pair", {"left": link, "items": [], "index": {}, "extra": 1}, "Pair.extra"),
        ("Pair", {"items": [], "index": {}}, "Pair.left"),
        ("Shape", {"name": "n", "pair": good_pair}, "Shape"),
        ("Shape", {"circle": 1}, "Shape"),
        ("Either", 1.5, "Either"),
        ("Tagged", {"t": "q", **good_pair}, "Tagged.t"),
        ("Tagged", good_pair, "Tagged.t"),
        ("Colour", "Red", "Colour"),
        ("Colour", 1, "Colour"),
    ]
    for type_name, value, path in bad:
        with pytest.raises(SchemaError) as info:
            schema.validate(type_name, value)
        assert info.value.path == path, (type_name, value, info.value)


def test_any_accepts_every_data_model_value_and_nothing_else() -> None:
    schema = parse("type Box struct { content Any }")
    for value in [*KIND_SAMPLES.values(), {"a": [None, {"b": cid_for(b"")}]}]:
        schema.validate("Box", {"content": value})
    for value in [object(), {1: "int key"}, [{"a": {1, 2}}], bytearray(b"x")]:
        with pytest.raises(SchemaError):
            schema.validate("Box", {"content": value})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type X struct { a Missing }", "undeclared type 'Missing'"),
        ("type X struct { a Int a String }", "declared twice"),
        ("type X struct { a Int }\ntype X string", "already declared"),
        ("type String string", "already declared"),
        ("type x string", "capital letter"),
        ('type X union { | Int "i" } representation envelope', "not supported"),
        ('type X union { | Int "i" }', "must state its representation"),
        ('type X union { | Int int } representation inline { discriminantKey "k" }', "needs a string"),
        ('type X union { | Int "i" } representation inline { discriminantKey "k" }', "must be structs"),
        ("type X union { | Int string } representation kinded", "represented as"),
        ("type X {Int:String}", "keys must be represented as strings"),
        ('type X struct { a Int (rename "b") }', "not supported"),
        ("type X struct { a Int } representation tuple", "not supported"),
        ("type X enum { | A | A }", "declared twice"),
        ("type X struct { a Int", "unexpected end"),
        ("type X struct { a Int } $", "unexpected character"),
        ("advanced X", "expected 'type'"),
    ],
)
def test_parser_rejects_what_it_does_not_support(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse(text, sources=["bad.ipldsch"])
    assert message in str(info.value)
    assert info.value.path.startswith("bad.ipldsch:")


def test_parse_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.ipldsch").write_text("type A struct {\n  b B\n}\n")
    (tmp_path / "b.ipldsch").write_text("type B string\n\n\ntype C struct { d Nope }\n")
    with pytest.raises(SchemaError) as info:
        load_schemas(tmp_path)
    assert info.value.path == "b.ipldsch:4"
    (tmp_path / "b.ipldsch").write_text("type B string\n")
    schema = load_schemas(tmp_path)
    schema.validate("A", {"b": "ok"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SchemaError):
        load_schemas(empty)


def test_data_kind_names() -> None:
    assert {data_kind(v) for v in KIND_SAMPLES.values()} == set(KIND_SAMPLES)
    assert data_kind(()) == "list"
    assert data_kind(object()) == "object"


def test_schema_is_a_schema() -> None:
    assert isinstance(SCHEMA, Schema)
    with pytest.raises(SchemaError):
        SCHEMA["NoSuchType"]
    with pytest.raises(SchemaError):
        SCHEMA.struct("Event")


CONTEXT = {
    "repository": "o/r",
    "sha": "d" * 40,
    "ref": "refs/heads/main",
    "ref_name": "main",
    "event_name": "push",
    "event": {"after": "d" * 40},
}


def test_job_inputs_are_written_only_when_present() -> None:
    """A workflow without a workspace, actions or context encodes as before (same CID)."""
    plain = WorkflowDefinition("w", "w", ["p2p_eligible"], 1.0, {"k": "v"}, {"steps": []})
    assert set(plain.to_ipld()) == model._WF_REQUIRED | {"run"}
    tree = cid_for(b"tree")
    full = WorkflowDefinition(
        "w",
        "w",
        ["p2p_eligible"],
        1.0,
        {"k": "v"},
        {"steps": []},
        workspace=tree,
        actions={"o/r@v1": {"commit": "c" * 40, "tree": tree}},
        context=CONTEXT,
    )
    data = full.to_ipld()
    assert list(data) == [
        "v",
        "id",
        "run",
        "name",
        "tags",
        "type",
        "actions",
        "context",
        "metadata",
        "priority",
        "workspace",
    ]
    validate("Workflow", data, SCHEMA)
    assert WorkflowDefinition.from_ipld(data) == full
    assert full.job_inputs() == {"workspace": tree, "actions": data["actions"], "context": data["context"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workspace", "bafy-not-a-link"),
        ("actions", {"o/r@v1": {"commit": "c" * 40}}),
        ("actions", {"o/r@v1": {"commit": "c" * 40, "tree": "not-a-link"}}),
        ("actions", {"o/r@v1": {"commit": "c" * 40, "tree": cid_for(b"t"), "extra": 1}}),
        ("context", {**CONTEXT, "sha": cid_for(b"a link")}),
        ("context", {**CONTEXT, "event": {"deep": [cid_for(b"a link")]}}),
        ("context", {**CONTEXT, "unknown": "x"}),
        ("context", {"sha": "d" * 40}),
    ],
)
def test_malformed_job_inputs_are_rejected(field: str, value: Any) -> None:
    data = WorkflowDefinition("w", "w", ["p2p_eligible"]).to_ipld()
    data[field] = value
    with pytest.raises(ModelError):
        WorkflowDefinition.from_ipld(data)
    with pytest.raises(SchemaError):
        validate("Workflow", data, SCHEMA)


@pytest.mark.parametrize(
    "actions",
    [
        {},
        {"not a key": {"commit": "c" * 40, "tree": cid_for(b"t")}},
        {"o/r@v1": {"commit": "short", "tree": cid_for(b"t")}},
        {f"o/r@v{i}": {"commit": "c" * 40, "tree": cid_for(b"t")} for i in range(65)},
    ],
)
def test_job_input_rules_beyond_the_schema(actions: dict[str, Any]) -> None:
    """Key syntax, commit hashes and 1..64 entries: rules only ``from_ipld`` states."""
    data = WorkflowDefinition("w", "w", ["p2p_eligible"]).to_ipld()
    data["actions"] = actions
    with pytest.raises(ModelError):
        WorkflowDefinition.from_ipld(data)


def test_after_is_written_only_when_given_sorted_and_bounded() -> None:
    """``after`` absent keeps the CID; given, it is sorted, unique, bounded, never the own id."""
    plain = WorkflowDefinition("w", "w", ["p2p_eligible"], 1.0, None, {"steps": []})
    same = WorkflowDefinition("w", "w", ["p2p_eligible"], 1.0, None, {"steps": []}, after=[])
    assert same.to_ipld() == plain.to_ipld() and "after" not in plain.to_ipld()
    waiting = WorkflowDefinition("w", "w", ["p2p_eligible"], 1.0, None, {"steps": []}, after=["b", "a", "b"])
    data = waiting.to_ipld()
    assert waiting.after == ("a", "b") and data["after"] == ["a", "b"]
    assert list(data) == ["v", "id", "run", "name", "tags", "type", "after", "metadata", "priority"]
    validate("Workflow", data, SCHEMA)
    assert WorkflowDefinition.from_ipld(data) == waiting
    for bad in (["b", "a"], ["a", "a"], [], ["w"], [1], "a", ["x" * 257], [f"d{i:04}" for i in range(513)]):
        with pytest.raises(ModelError):
            WorkflowDefinition.from_ipld({**data, "after": bad})
    with pytest.raises(ModelError):
        WorkflowDefinition("w", "w", after=["w"])
    with pytest.raises(ModelError):
        WorkflowDefinition("w", "w", after="a")


def test_result_outputs_and_skipped_rules() -> None:
    result = Result("w", "p", "success", 1, outputs={"v": "1", "other": "${{ x }}"}, skipped=True)
    data = result.to_ipld()
    assert list(data) == ["v", "id", "peer", "type", "steps", "status", "outputs", "skipped", "duration_ms"]
    validate("Result", data, SCHEMA)
    assert Result.from_ipld(data) == result
    assert "outputs" not in Result("w", "p", "success", 1).to_ipld()
    assert "skipped" not in Result("w", "p", "success", 1).to_ipld()
    for field, bad in (
        ("outputs", {}),
        ("outputs", {"1bad": "v"}),
        ("outputs", {"v": 1}),
        ("outputs", {"v": "x" * (64 * 1024 + 1)}),
        ("outputs", {f"o{i}": "v" for i in range(65)}),
        ("skipped", False),
    ):
        with pytest.raises(ModelError):
            Result.from_ipld({**data, field: bad})
