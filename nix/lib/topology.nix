# Topology normalisation. The network model (nxc_topology: 1) is validated by the
# Python side (nxc.netem); here it is a passthrough object with light structural
# checks, so that a composition error shows at build time with the composition's
# name:
#   - `nxc_topology` is set to 1 when missing;
#   - `groups` values become { roles = [ … ]; nodes = [ … ]; }: a plain list is
#     split into role names and node names (<role><index>);
#   - every role and node a group names, and every `from`/`to` of a constraint
#     or partition, must exist (roles are groups too; "*" is every node);
#   - units stay strings ("50ms", "100mbit", "1%"): parsing them is the model's job.
let
  util = import ./util.nix;
  naming = import ./naming.nix;
in
rec {
  normaliseGroup = where: roles: name: value:
    let
      here = "${where}: group '${name}'";
      classify = item:
        if !(builtins.isString item) then util.fail here "members must be role or node names (strings)"
        else if builtins.elem item roles then { roles = [ item ]; nodes = [ ]; }
        else if naming.splitNodeName roles item != null then { roles = [ ]; nodes = [ item ]; }
        else util.fail here "'${item}' is neither a role (${util.joinNames roles}) nor a node name like ${builtins.head (roles ++ [ "role" ])}1";
      fromList = items:
        let parts = map classify items;
        in { roles = builtins.concatMap (p: p.roles) parts; nodes = builtins.concatMap (p: p.nodes) parts; };
      checkRoles = rs: map (r: if builtins.elem r roles then r else util.fail here "unknown role '${toString r}' (roles: ${util.joinNames roles})") rs;
      checkNodes = ns: map (n: if builtins.isString n && naming.splitNodeName roles n != null then n else util.fail here "'${toString n}' is not a node name of this composition") ns;
    in
    if builtins.elem name roles then util.fail here "a group cannot have the name of a role (roles are groups already)"
    else if builtins.isList value then fromList value
    else if builtins.isString value then fromList [ value ]
    else if builtins.isAttrs value then
      let extra = builtins.removeAttrs value [ "roles" "nodes" ];
      in if extra != { } then util.fail here "unknown key '${builtins.head (builtins.attrNames extra)}' (a group has `roles` and `nodes`)"
      else { roles = checkRoles (value.roles or [ ]); nodes = checkNodes (value.nodes or [ ]); }
    else util.fail here "must be a list of role/node names or { roles = [ … ]; nodes = [ … ]; }";

  endpointNames = v: if builtins.isList v then v else [ v ];

  # `from`/`to` name groups, roles or nodes (one name or a list), or "*" (all nodes).
  checkEnds = { where, roles, groups }: what: i: c:
    let
      here = "${where}: ${what}[${toString i}]";
      ok = n: builtins.isString n && (n == "*" || builtins.elem n roles || builtins.elem n groups || naming.splitNodeName roles n != null);
      checkEnd = key:
        if !(c ? ${key}) then util.fail here "`${key}` is missing (a group, role or node name)"
        else map (n:
          if ok n then n
          else util.fail here "`${key}`: '${toString n}' is not a group, role or node (groups: ${util.joinNames groups}; roles: ${util.joinNames roles})")
          (endpointNames c.${key});
    in
    if !(builtins.isAttrs c) then util.fail here "must be an attribute set"
    else builtins.deepSeq [ (checkEnd "from") (checkEnd "to") ] c;

  checkList = ctx: what: topology:
    let items = topology.${what} or [ ];
    in if !(builtins.isList items) then util.fail "${ctx.where}" "`${what}` must be a list"
       else builtins.genList (i: checkEnds ctx what i (builtins.elemAt items i)) (builtins.length items);

  # normalise { where = "composition 'x'"; roles = [ "client" "server" ]; topology = { … }; }
  normalise = { where, roles, topology }:
    let
      here = "${where}: topology";
      groups = builtins.mapAttrs (normaliseGroup here roles) (topology.groups or { });
      ctx = { where = here; inherit roles; groups = builtins.attrNames groups; };
      version = topology.nxc_topology or 1;
    in
    if topology == null then null
    else if !(builtins.isAttrs topology) then util.fail here "must be an attribute set (or null)"
    else if version != 1 then util.fail here "nxc_topology ${toString version} is not supported (this nxc writes 1)"
    else if !(builtins.isAttrs (topology.groups or { })) then util.fail here "`groups` must be an attribute set of groups"
    else if !(util.isJSONValue topology) then util.fail here "must be plain data (strings, numbers, booleans, lists, attribute sets)"
    else topology // { nxc_topology = 1; }
      // util.optionalAttrs (topology ? groups) { inherit groups; }
      // util.optionalAttrs (topology ? constraints) { constraints = checkList ctx "constraints" topology; }
      // util.optionalAttrs (topology ? partitions) { partitions = checkList ctx "partitions" topology; };
}
