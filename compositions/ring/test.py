# The clients started on their own once every server signalled ring-connected
# (start_after in the composition); their token must have visited every server
# in order, twice.
start_all()
servers = sorted((m for m in machines if m.name.startswith("server")), key=lambda m: int(m.name[6:]))
clients = [m for m in machines if m.name.startswith("client")]

with subtest("every server connected before any client started"):
    connected = sync.arrivals("ring-connected")
    assert sorted(who for who, _ in connected) == sorted(s.name for s in servers), connected

for client in clients:
    with subtest(f"{client.name}: token around the ring"):
        client.wait_for_file("/run/ring/result", timeout=300)
        path = client.succeed("cat /run/ring/result").split()
        expected = [s.name for s in servers] * 2
        assert path == expected, f"token went {path}, expected {expected}"
