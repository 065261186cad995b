# Measure what the topology asks for: RTT about 2 x 20 ms, throughput about
# 100 Mbit/s. `nxc start` applies the composition's topology (and
# `nxc netem validate` checks it with tolerances); this scenario measures the
# application's view with fping and iperf3.
import json

start_all()
server1.wait_for_unit("iperf3.service")
server1.wait_for_open_port(5201)

with subtest("RTT"):
    out = client1.succeed("fping -q -c 20 -p 100 server1 2>&1 || true")
    # "server1 : xmt/rcv/%loss = 20/20/0%, min/avg/max = 40.1/40.3/40.9"
    avg = float(out.rsplit("=", 1)[1].split("/")[1])
    print(f"RTT avg {avg:.1f} ms")
    assert 38 <= avg <= 60, f"RTT {avg} ms is not about 40 ms"

with subtest("throughput"):
    report = json.loads(client1.succeed("iperf3 -c server1 -t 5 -J -R"))
    mbits = report["end"]["sum_received"]["bits_per_second"] / 1e6
    print(f"throughput {mbits:.1f} Mbit/s")
    assert 60 <= mbits <= 110, f"throughput {mbits} Mbit/s is not about 100 Mbit/s"
