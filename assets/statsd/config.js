/* statsd 0.9.0 for the kit's native stack (`./kit up`). Ports as in nirvana/endpoints.py
   (tests/test_compose.py checks that they agree). */
{
  port: 8125,
  address: "127.0.0.1",
  mgmt_address: "127.0.0.1",
  mgmt_port: 8126,
  graphiteHost: "127.0.0.1",
  graphitePort: 2003,
  backends: ["./backends/graphite"],
  /* one flush a second, matching carbon's 1 s retention for stats.* (assets/carbon) */
  flushInterval: 1000
}
