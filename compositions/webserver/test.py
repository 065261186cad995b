# Every client fetches the server's page by name.
start_all()
server1.wait_for_unit("nginx.service")
server1.wait_for_open_port(80)

clients = [m for m in machines if m.name.startswith("client")]
for client in clients:
    with subtest(f"{client.name} fetches the page"):
        client.wait_for_unit("nxc-agent.service")
        page = client.succeed("curl -sf --max-time 10 http://server1/")
        assert "hello from nxc" in page, page
