"""The pure part of nxc's Nix library, evaluated with the real nix against expected JSON.

Naming must agree with nxc/expand.py, and the manifest the library assembles must
validate against the schema the Python side reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nxc.contracts import Manifest
from nxc.expand import expand
from tests.nix.nixutil import eval_error, eval_json, needs_nix

pytestmark = [pytest.mark.nix, needs_nix]

COMPOSITION = """
  ({ parameters, ... }: {
    description = "two roles";
    parameters = { clients = 2; rate = "100mbit"; verbose = false; };
    roles = {
      server = { quantity = 1; resources = { memory_mb = 512; cpus = 2; }; module = { }; };
      client = { pkgs, ... }: { };
      worker = { quantity = parameters.clients; module = { }; };
    };
    testScript = "start_all()";
    topology = {
      groups.edge = [ "client" "worker2" ];
      constraints = [ { from = "server"; to = "edge"; delay = "50ms"; rate = parameters.rate; } ];
    };
  })
"""


def test_node_names() -> None:
    assert eval_json('lib.nodeNames "server" 3') == ["server1", "server2", "server3"]
    assert eval_json('lib.nodeNames "x" 0') == []


def test_role_names_with_underscores_give_host_names_with_hyphens() -> None:
    from nxc.expand import host_name

    assert eval_json('lib.nodeNames "my_server" 2') == ["my-server1", "my-server2"]
    assert eval_json('lib.hostName "my_server"') == host_name("my_server") == "my-server"
    assert eval_json('lib.isValidRoleName "my_server-2"') is True
    assert eval_json('lib.isValidRoleName "My_server"') is False
    assert eval_json('lib.isValidName "my_server"') is False  # compositions, flavours
    assert eval_json("lib.nameClashes { my_server = 1; my-server = 1; }") == ["my-server1"]
    assert eval_json('lib.splitNodeName [ "my_server" ] "my-server3"') == {
        "role": "my_server",
        "index": 3,
    }


def test_expand_nodes_matches_python_ordering() -> None:
    nodes = eval_json("lib.expandNodes { server = 1; client = 2; }")
    assert nodes == [
        {"name": "client1", "role": "client", "index": 1, "ordinal": 1},
        {"name": "client2", "role": "client", "index": 2, "ordinal": 2},
        {"name": "server1", "role": "server", "index": 1, "ordinal": 3},
    ]


def test_name_clashes() -> None:
    assert eval_json("lib.nameClashes { node = 11; node1 = 1; }") == ["node11"]
    assert eval_json("lib.nameClashes { a = 3; b = 3; }") == []


def test_split_node_name() -> None:
    assert eval_json('lib.splitNodeName [ "server" "client" ] "client12"') == {
        "role": "client",
        "index": 12,
    }
    assert eval_json('lib.splitNodeName [ "server" ] "server0"') is None
    assert eval_json('lib.splitNodeName [ "server" ] "other1"') is None


def test_quantities_resources_and_defaults() -> None:
    c = eval_json(
        f'let c = lib.normaliseComposition {{ name = "demo"; composition = {COMPOSITION}; }}; '
        "in { inherit (c) quantities parameters testScript roleNames; "
        "resources = builtins.mapAttrs (_: r: r.resources) c.roles; }"
    )
    assert c["quantities"] == {"client": 1, "server": 1, "worker": 2}
    assert c["roleNames"] == ["client", "server", "worker"]
    assert c["parameters"] == {"clients": 2, "rate": "100mbit", "verbose": False}
    assert c["resources"] == {"client": {}, "server": {"memory_mb": 512, "cpus": 2}, "worker": {}}
    assert c["testScript"] == "start_all()"


def test_parameter_overrides_flow_into_the_composition() -> None:
    c = eval_json(
        f'let c = lib.normaliseComposition {{ name = "demo"; composition = {COMPOSITION}; '
        'overrides = { clients = 5; rate = "1gbit"; }; }; '
        "in { inherit (c) quantities parameters topology; }"
    )
    assert c["quantities"]["worker"] == 5
    assert c["parameters"]["rate"] == "1gbit"
    assert c["topology"]["constraints"][0]["rate"] == "1gbit"


def test_parameter_merge_checks_names_and_types() -> None:
    merged = eval_json(
        'lib.mergeParameters { where = "c"; declared = { n = 3; x = 1.5; s = null; }; '
        'overrides = { n = 4; x = 2; s = "any"; }; }'
    )
    assert merged == {"n": 4, "x": 2, "s": "any"}
    err = eval_error(
        'lib.mergeParameters { where = "c"; declared = { n = 3; }; overrides = { m = 1; }; }'
    )
    assert "parameter 'm' is not declared" in err and "declared: n" in err
    err = eval_error(
        'lib.mergeParameters { where = "c"; declared = { n = 3; }; overrides = { n = "3"; }; }'
    )
    assert "parameter 'n' must be a int like its default, got a string" in err


def test_parameters_from_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "params.json"
    file.write_text(json.dumps({"clients": 7, "rate": "10mbit"}))
    env = {"NXC_PARAMETERS_FILE": str(file), "NXC_PARAMETERS": '{"rate": "20mbit"}'}
    assert eval_json("lib.parametersFromEnvironment", env) == {"clients": 7, "rate": "20mbit"}
    assert eval_json("lib.parametersFromEnvironment", {"NXC_PARAMETERS": ""}) == {}


def test_topology_normalisation() -> None:
    t = eval_json(
        'lib.normaliseTopology { where = "c"; roles = [ "client" "server" ]; topology = {'
        ' groups = { site = [ "server" "client2" ]; wan = { roles = [ "client" ]; }; };'
        ' defaults.delay = "1ms";'
        ' constraints = [ { from = "site"; to = [ "wan" "*" ]; delay = "50ms"; loss = "1%"; } ];'
        ' partitions = [ { from = "server1"; to = "client"; } ]; }; }'
    )
    assert t == {
        "nxc_topology": 1,
        "groups": {
            "site": {"roles": ["server"], "nodes": ["client2"]},
            "wan": {"roles": ["client"], "nodes": []},
        },
        "defaults": {"delay": "1ms"},
        "constraints": [{"from": "site", "to": ["wan", "*"], "delay": "50ms", "loss": "1%"}],
        "partitions": [{"from": "server1", "to": "client"}],
    }
    assert (
        eval_json('lib.normaliseTopology { where = "c"; roles = [ "a" ]; topology = null; }')
        is None
    )


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        ('{ groups.g = [ "nobody" ]; }', "'nobody' is neither a role"),
        ('{ constraints = [ { from = "a"; to = "ghost"; } ]; }', "`to`: 'ghost' is not a group"),
        ('{ constraints = [ { to = "a"; } ]; }', "`from` is missing"),
        ('{ groups.a = [ "a" ]; }', "cannot have the name of a role"),
        ("{ nxc_topology = 2; }", "nxc_topology 2 is not supported"),
    ],
)
def test_topology_errors(topology: str, message: str) -> None:
    err = eval_error(
        f'lib.normaliseTopology {{ where = "composition \'c\'"; roles = [ "a" ]; '
        f"topology = {topology}; }}"
    )
    assert message in err and "composition 'c': topology" in err


@pytest.mark.parametrize(
    ("composition", "message"),
    [
        ("{ }", "`roles` must be a non-empty attribute set"),
        ("{ roles.Bad = { }; }", "'Bad' is not a valid role name"),
        ('{ roles.a = { quantity = "2"; }; }', "quantity must be a whole number"),
        ("{ roles.a = { quantity = 5000; }; }", "quantity 5000 is out of range"),
        ("{ roles.a = { resources.memory_mb = 10; }; }", "resources.memory_mb must be"),
        ("{ roles.a = { resources.disk = 1; }; }", "unknown resource 'disk'"),
        ("{ roles.a = { }; extra = 1; }", "unknown attribute 'extra'"),
        (
            "{ roles = { node = { quantity = 11; }; node1 = { }; }; }",
            "both have a node named 'node11'",
        ),
    ],
)
def test_composition_errors(composition: str, message: str) -> None:
    err = eval_error(
        f'(lib.normaliseComposition {{ name = "bad"; composition = {composition}; }}).quantities'
    )
    assert message in err


def test_assembled_manifest_validates_and_expands(tmp_path: Path) -> None:
    document = eval_json(
        f'let c = lib.normaliseComposition {{ name = "demo"; composition = {COMPOSITION}; }}; in '
        'lib.assembleManifest { composition = c; flavour = "vm-ramdisk"; system = "x86_64-linux"; '
        'nxcVersion = "0.0.0"; defaultResources = { memory_mb = 1024; }; '
        "artifacts = builtins.mapAttrs "
        '(n: _: { kernel = "/nix/store/k-${n}/bzImage"; initrd = "/nix/store/i-${n}/initrd"; '
        'kernel_params = "init=/nix/store/s-${n}/init"; '
        'closure = "/nix/store/s-${n}"; }) c.roles; }'
    )
    assert document["nxc_manifest"] == 1
    assert document["image_kind"] == "nixos" and document["reproducible"] is True
    assert document["roles"]["server"]["resources"] == {"memory_mb": 512, "cpus": 2}
    assert document["roles"]["client"]["resources"] == {"memory_mb": 1024}
    assert document["roles"]["worker"]["quantity"] == 2
    assert document["topology"]["groups"]["edge"] == {"roles": ["client"], "nodes": ["worker2"]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    manifest = Manifest.load(path)
    deployment = expand(manifest, {}, "test-deployment", ["ssh-ed25519 AAAA test"])
    python_names = [n.name for n in deployment.nodes]
    nix_names = [
        n["name"] for n in eval_json("lib.expandNodes { client = 1; server = 1; worker = 2; }")
    ]
    assert python_names == nix_names


@pytest.mark.parametrize(
    ("flavour", "artifacts", "message"),
    [
        ("vm-ramdisk", '{ kernel = "/k"; }', "did not provide 'initrd'"),
        ("docker", '{ kernel = "/k"; }', "did not provide 'container'"),
        ("vm-ramdisk", '{ kernel = "/k"; initrd = "/i"; foo = 1; }', "unknown artifact 'foo'"),
        ("laptop", '{ kernel = "/k"; initrd = "/i"; }', "unknown flavour 'laptop'"),
    ],
)
def test_manifest_assembly_errors(flavour: str, artifacts: str, message: str) -> None:
    err = eval_error(
        'let c = lib.normaliseComposition { name = "m"; composition = { roles.a = { }; }; }; in '
        f'(lib.assembleManifest {{ composition = c; flavour = "{flavour}"; system = "x"; '
        f"artifacts = {{ a = {artifacts}; }}; }}).roles"
    )
    assert message in err


def test_compose_lists_outputs_without_nixpkgs() -> None:
    names = eval_json(
        'builtins.attrNames (lib.compose { composition = { roles.node = { }; }; name = "t"; '
        'imageKind = "selftest"; })'
    )
    # vm: NixOS Compose alias; g5k-image: the selftest roles' kernel + initrd in a tarball
    assert names == ["t::docker", "t::g5k-image", "t::g5k-ramdisk", "t::vm", "t::vm-ramdisk"]
    names = eval_json(
        "builtins.attrNames (lib.compose { compositions = { a = { roles.x = { }; }; "
        'b = { roles.y = { }; }; }; flavours = [ "docker" ]; })'
    )
    assert names == ["a::docker", "b::docker"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('imageKind = "arch";', "unknown imageKind 'arch'"),
        ('flavours = [ "cloud" ];', "unknown flavour 'cloud'"),
    ],
)
def test_compose_argument_errors(args: str, message: str) -> None:
    err = eval_error(
        f"builtins.attrNames (lib.compose {{ composition = {{ roles.a = {{ }}; }}; {args} }})"
    )
    assert message in err


def test_nixos_without_nixpkgs_is_a_clear_error() -> None:
    err = eval_error(
        '(lib.compose { composition = { roles.a = { }; }; })."composition::vm-ramdisk".drvPath'
    )
    assert "imageKind 'nixos' needs `nixpkgs`" in err


def test_unknown_parameter_override_is_an_error() -> None:
    err = eval_error(
        "(lib.compose { composition = { parameters.n = 1; roles.a = { }; }; "
        'imageKind = "selftest"; '
        'selftestBuilder = _: throw "unused"; parameters = { m = 2; }; })'
        '."composition::vm-ramdisk".drvPath'
    )
    assert "'m' is not declared by any composition" in err


def test_version_comes_from_the_python_package() -> None:
    from nxc import __version__

    assert eval_json("lib.version") == __version__


TEMPLATES = Path(__file__).resolve().parents[2] / "compositions"


@pytest.mark.parametrize(
    ("name", "quantities"),
    [
        ("basic", {"node": 1}),
        ("webserver", {"server": 1, "client": 2}),
        ("iperf-netem", {"server": 1, "client": 1}),
        ("ring", {"server": 4, "client": 1}),
        ("selftest", {"node": 3}),
    ],
)
def test_template_compositions_normalise(name: str, quantities: dict[str, int]) -> None:
    kind = "selftest" if name == "selftest" else "nixos"
    c = eval_json(
        f'let c = lib.normaliseComposition {{ name = "{name}"; imageKind = "{kind}"; '
        f"composition = {TEMPLATES / name / 'composition.nix'}; }}; "
        "in { inherit (c) quantities topology parameters; t = c.testScript != null; }"
    )
    assert c["quantities"] == quantities
    assert c["t"] is True
    if name == "iperf-netem":
        assert c["topology"]["constraints"][0] == {
            "from": "server",
            "to": "client",
            "delay": "20ms",
            "rate": "100mbit",
            "symmetric": True,
        }


def test_flavour_option_defaults_reach_the_manifest() -> None:
    """`flavours.<name>.<option>` in a composition: the runtime's option defaults."""
    document = eval_json(
        'let c = lib.normaliseComposition { name = "f"; composition = { roles.a = { }; '
        'flavours = { vm = { accel = "tcg"; memory = { a = 512; }; }; docker.x = 1; }; }; }; in '
        'lib.assembleManifest { composition = c; flavour = "vm-ramdisk"; system = "x"; '
        'artifacts.a = { kernel = "/k"; initrd = "/i"; }; }'
    )
    assert document["flavour_options"] == {
        "docker": {"x": 1},
        "vm-ramdisk": {"accel": "tcg", "memory": {"a": 512}},
    }
    plain = eval_json(
        'let c = lib.normaliseComposition { name = "f"; composition = { roles.a = { }; }; }; in '
        'lib.assembleManifest { composition = c; flavour = "vm-ramdisk"; system = "x"; '
        'artifacts.a = { kernel = "/k"; initrd = "/i"; }; }'
    )
    assert "flavour_options" not in plain
    err = eval_error(
        '(lib.normaliseComposition { name = "f"; composition = { roles.a = { }; '
        "flavours.vm = 3; }; }).flavourOptions"
    )
    assert "flavours: 'vm' must be an attribute set of options" in err


def test_ring_start_order_is_in_its_manifest(tmp_path: Path) -> None:
    """The ring template's clients start after every server signalled ring-connected:
    evaluated offline, carried by the manifest, resolved per deployment at start."""
    document = eval_json(
        'let c = lib.normaliseComposition { name = "ring"; '
        f"composition = {TEMPLATES / 'ring' / 'composition.nix'}; }}; in "
        'lib.assembleManifest { composition = c; flavour = "vm-ramdisk"; system = "x"; '
        'artifacts = { server = { kernel = "/k"; initrd = "/i"; }; '
        'client = { kernel = "/k"; initrd = "/i"; }; }; }'
    )
    assert document["roles"]["client"]["start_after"] == [
        {"state": "ring-connected", "count": "server", "timeout": 600}
    ]
    assert "start_after" not in document["roles"]["server"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    manifest = Manifest.load(path)
    from nxc.sync.deploy import resolve_start_after

    deployment = expand(manifest, {"server": 6, "client": 1}, "ring-abc123", ["ssh-ed25519 A"])
    assert resolve_start_after(manifest, deployment, "client") == ("ring-connected=6", 600.0)


@pytest.mark.parametrize(
    ("start_after", "message"),
    [
        ("{ count = 1; }", "needs `state`"),
        ('{ state = "a b"; count = 1; }', "state 'a b': letters, digits"),
        ('{ state = "up"; }', "state 'up' needs `count`"),
        ('{ state = "up"; count = "sever"; }', "count 'sever' is neither a number"),
        ('{ state = "up"; count = -1; }', "count must not be negative"),
        ('{ state = "up"; count = 1; timeout = 0; }', "timeout must be a positive"),
        ('{ state = "up"; count = 1; after = 2; }', "unknown key 'after'"),
        ('"up"', "must be { state"),
    ],
)
def test_start_after_errors(start_after: str, message: str) -> None:
    err = eval_error(
        '(lib.normaliseComposition { name = "s"; composition = { roles = { server = { }; '
        f"client = {{ start_after = {start_after}; }}; }}; }}; }}).roles.client.startAfter"
    )
    assert message in err, err
    assert "role 'client': start_after" in err
