# testScript of the selftest composition: every node resolves every other node
# by name and fetches its page over the experiment network, and the agent gave
# each node the right NXC_ROLE / NXC_INDEX.
start_all()

for machine in machines:
    machine.wait_for_open_port(80)

for machine in machines:
    with subtest(f"{machine.name}: identity"):
        role, index, replicas = machine.succeed(
            ". /etc/nxc/env && echo $NXC_ROLE $NXC_INDEX $NXC_REPLICAS"
        ).split()
        assert role == "node", f"{machine.name}: NXC_ROLE is {role!r}"
        assert machine.name == f"{role}{index}", f"{machine.name}: NXC_INDEX is {index!r}"
        assert int(replicas) == len(machines), f"{machine.name}: NXC_REPLICAS is {replicas!r}"

for machine in machines:
    with subtest(f"{machine.name} reaches every node by name"):
        for other in machines:
            machine.succeed(f"grep -qw {other.name} /etc/hosts")
            page = machine.succeed(f"wget -q -T 5 -O - http://{other.name}/index.html")
            assert f"hello from {other.name} " in page, f"{machine.name} got {page!r} from {other.name}"
