# Barrier: every server reports its ring link up; then the clients start and
# their token must visit every server in order, twice.
start_all()
servers = sorted((m for m in machines if m.name.startswith("server")), key=lambda m: int(m.name[6:]))
clients = [m for m in machines if m.name.startswith("client")]

with subtest("all servers connected"):
    for server in servers:
        server.wait_for_file("/run/ring/connected")

for client in clients:
    with subtest(f"{client.name}: token around the ring"):
        client.succeed("systemctl start ring-client.service")
        path = client.succeed("cat /run/ring/result").split()
        expected = [s.name for s in servers] * 2
        assert path == expected, f"token went {path}, expected {expected}"
